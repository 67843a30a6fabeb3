package validate

import (
	"path/filepath"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
)

// TestConvctlJob: the example Job for operator commands decodes strictly, runs convctl, sets only
// variables convctl reads, and references what the production overlay renders or expects.
func TestConvctlJob(t *testing.T) {
	sch := scheme(t)
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, sch, sch, json.SerializerOptions{Yaml: true, Strict: true})
	obj, _, err := dec.Decode(readFile(t, filepath.Join("..", "k8s", "tools", "convctl-job.yaml")), nil, nil)
	if err != nil {
		t.Fatalf("convctl-job.yaml: %v", err)
	}
	job, ok := obj.(*batchv1.Job)
	if !ok {
		t.Fatalf("convctl-job.yaml holds a %T, want a Job", obj)
	}
	prod := render(t, "production")
	prod.jobs = []*batchv1.Job{job} // resolve its references against production's ConfigMaps and Secrets
	checkEnvRefs(t, prod)
	c := job.Spec.Template.Spec.Containers[0]
	if binaryOf(c) != "convctl" {
		t.Fatalf("the Job runs %v, want /app/convctl", c.Command)
	}
	env, _ := localize(t, envOf(t, prod, c))
	env["KAFKA_BROKERS"] = "127.0.0.1:1"
	out, err := runToEnd(t, "convctl", env, "lag")
	if err == nil || strings.Contains(out, "config:") {
		t.Fatalf("convctl lag with the Job's environment: %v, want a connection failure, not a config error:\n%s", err, out)
	}
}
