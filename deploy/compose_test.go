// Package deploy_test checks the deployment files that no machine of ours can run (there is no Docker
// engine here): docker-compose.yml and deploy/Dockerfile must at least say what the binaries expect.
package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Environment map[string]string `yaml:"environment"`
		Profiles    []string          `yaml:"profiles"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
}

// envVars returns the environment variables a command reads, from the env tags of its config.
func envVars(t *testing.T, cmd string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "cmd", cmd, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no sources for cmd/%s: %v", cmd, err)
	}
	// Settings every binary embeds from a shared package (Kafka connection, topic replication).
	for _, pkg := range []string{"kafkaconn", "topicadmin"} {
		shared, err := filepath.Glob(filepath.Join("..", "internal", pkg, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, shared...)
	}
	var vars []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`env:"([A-Z0-9_]+)"`).FindAllSubmatch(src, -1) {
			vars = append(vars, string(m[1]))
		}
	}
	return vars
}

// readCompose parses the repository's docker-compose.yml.
func readCompose(t *testing.T) compose {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	return c
}

func TestCompose(t *testing.T) {
	c := readCompose(t)
	for name, image := range map[string]string{"mysql": "mysql:8.4", "kafka": "apache/kafka:"} {
		s, ok := c.Services[name]
		if !ok || !strings.HasPrefix(s.Image, image) || s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
			t.Errorf("service %s: image %q, healthcheck %v; want %s* with a healthcheck", name, s.Image, s.Healthcheck, image)
		}
	}
	if m := c.Services["migrate"]; m.DependsOn["mysql"].Condition != "service_healthy" || m.DependsOn["kafka"].Condition != "service_healthy" {
		t.Errorf("migrate must wait for healthy mysql and kafka: %+v", m.DependsOn)
	}
	for _, name := range []string{"migrate", "projector", "api", "trafficgen"} {
		s, ok := c.Services[name]
		if !ok {
			t.Errorf("service %s is missing", name)
			continue
		}
		if want := "/app/" + name; len(s.Entrypoint) != 1 || s.Entrypoint[0] != want {
			t.Errorf("service %s: entrypoint %v, want [%s]", name, s.Entrypoint, want)
		}
		if name != "migrate" && s.DependsOn["migrate"].Condition != "service_completed_successfully" {
			t.Errorf("service %s must start after migrate completed: %+v", name, s.DependsOn)
		}
		if name == "trafficgen" {
			if !slices.Contains(s.Profiles, "demo") {
				t.Errorf("trafficgen must be in the demo profile, has %v", s.Profiles)
			}
			continue
		}
		known := envVars(t, name)
		for v := range s.Environment {
			if !slices.Contains(known, v) {
				t.Errorf("service %s sets %s, which cmd/%s does not read (it reads %v)", name, v, name, known)
			}
		}
	}
	if env := c.Services["api"].Environment; env["API_HTTP_ADDR"] != ":8080" {
		t.Errorf("api must listen on all interfaces inside its container: API_HTTP_ADDR=%q", env["API_HTTP_ADDR"])
	}
}

func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	for _, cmd := range []string{"migrate", "projector", "api", "trafficgen"} {
		if !strings.Contains(df, "./cmd/"+cmd) {
			t.Errorf("Dockerfile does not build cmd/%s", cmd)
		}
	}
	user := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindStringSubmatch(df)
	if user == nil || strings.HasPrefix(user[1], "0") || strings.HasPrefix(user[1], "root") {
		t.Errorf("the image must run as a non-root user, USER is %v", user)
	}
	if strings.Count(df, "\nFROM ") < 2 {
		t.Error("the Dockerfile must be multi-stage")
	}
}

// The "cluster" profile: three brokers in one quorum, and the service on them with the topics'
// replication the contract asks (§6), every variable one its binary reads.
func TestComposeClusterProfile(t *testing.T) {
	c := readCompose(t)
	for _, b := range []string{"kafka-1", "kafka-2", "kafka-3"} {
		s, ok := c.Services[b]
		if !ok || !slices.Contains(s.Profiles, "cluster") || s.Healthcheck == nil {
			t.Errorf("broker %s: missing, outside the cluster profile or without a healthcheck: %+v", b, s)
			continue
		}
		if v := s.Environment["KAFKA_CONTROLLER_QUORUM_VOTERS"]; strings.Count(v, "@") != 3 {
			t.Errorf("broker %s: quorum voters %q, want three", b, v)
		}
		if s.Environment["KAFKA_MIN_INSYNC_REPLICAS"] != "2" || s.Environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] != "3" {
			t.Errorf("broker %s: internal topics not replicated 3 ways, 2 in sync: %v", b, s.Environment)
		}
	}
	for _, name := range []string{"migrate", "projector", "api"} {
		s, ok := c.Services[name+"-cluster"]
		if !ok || !slices.Contains(s.Profiles, "cluster") {
			t.Errorf("service %s-cluster missing or outside the cluster profile", name)
			continue
		}
		if s.Environment["KAFKA_REPLICATION_FACTOR"] != "3" || s.Environment["KAFKA_ALLOW_UNREPLICATED"] != "false" ||
			strings.Count(s.Environment["KAFKA_BROKERS"], ",") != 2 {
			t.Errorf("service %s-cluster: %v", name, s.Environment)
		}
		known := envVars(t, name)
		for v := range s.Environment {
			if !slices.Contains(known, v) {
				t.Errorf("service %s-cluster sets %s, which cmd/%s does not read", name, v, name)
			}
		}
	}
}
