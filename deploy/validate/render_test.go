package validate

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// overlays are the kustomizations a cluster is deployed from.
var overlays = []string{"dev", "production"}

// externalSecrets are the Secrets an overlay may reference without rendering them, because the
// operator creates them (deploy/k8s/README.md lists them and their keys).
var externalSecrets = map[string][]string{
	"production": {"conversations-secrets", "conversations-kafka-ca", "conversations-mysql-ca"},
}

// runtimeEnv are variables the Go runtime reads, not the binaries' configuration.
var runtimeEnv = []string{"GOMEMLIMIT", "GOMAXPROCS"}

// rendered is one overlay, decoded.
type rendered struct {
	name        string
	deployments []*appsv1.Deployment
	jobs        []*batchv1.Job
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	secrets     []*corev1.Secret
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	pdbs        []*policyv1.PodDisruptionBudget
	monitors    []*monitoringv1.ServiceMonitor
	rules       []*monitoringv1.PrometheusRule
}

func scheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, batchv1.AddToScheme, corev1.AddToScheme,
		autoscalingv2.AddToScheme, policyv1.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// render builds an overlay with kustomize's Go API (what `kubectl apply -k` runs) and decodes every
// document strictly: an unknown field or kind is a failure.
func render(t *testing.T, overlay string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join("..", "k8s", "overlays", overlay))
	if err != nil {
		t.Fatalf("kustomize build overlays/%s: %v", overlay, err)
	}
	sch := scheme(t)
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, sch, sch, json.SerializerOptions{Yaml: true, Strict: true})
	out := rendered{name: overlay}
	for _, res := range rm.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := dec.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("overlays/%s: %s %s does not decode strictly: %v", overlay, res.GetKind(), res.GetName(), err)
			continue
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			out.deployments = append(out.deployments, o)
		case *batchv1.Job:
			out.jobs = append(out.jobs, o)
		case *corev1.Service:
			out.services = append(out.services, o)
		case *corev1.ConfigMap:
			out.configMaps = append(out.configMaps, o)
		case *corev1.Secret:
			out.secrets = append(out.secrets, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			out.hpas = append(out.hpas, o)
		case *policyv1.PodDisruptionBudget:
			out.pdbs = append(out.pdbs, o)
		case *monitoringv1.ServiceMonitor:
			out.monitors = append(out.monitors, o)
		case *monitoringv1.PrometheusRule:
			out.rules = append(out.rules, o)
		default:
			t.Errorf("overlays/%s: unexpected kind %s", overlay, gvk)
		}
	}
	return out
}

// workload is a pod template with the name of what owns it.
type workload struct {
	kind, name string
	replicas   int32
	tmpl       corev1.PodTemplateSpec
}

func (r rendered) workloads() []workload {
	var ws []workload
	for _, d := range r.deployments {
		ws = append(ws, workload{"Deployment", d.Name, ptrOr(d.Spec.Replicas, 1), d.Spec.Template})
	}
	for _, j := range r.jobs {
		ws = append(ws, workload{"Job", j.Name, 1, j.Spec.Template})
	}
	return ws
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// binaryOf is the binary a container runs: /app/<name> in the image.
func binaryOf(c corev1.Container) string {
	if len(c.Command) == 0 {
		return ""
	}
	return strings.TrimPrefix(c.Command[0], "/app/")
}

func (r rendered) deployment(component string) *appsv1.Deployment {
	for _, d := range r.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == component {
			return d
		}
	}
	return nil
}

func selects(t *testing.T, sel *metav1.LabelSelector, lbls map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(lbls))
}

// containerPort resolves a probe's or Service's port (a name or a number) against the container's ports.
func containerPort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func TestManifests(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			r := render(t, overlay)
			for _, kind := range []struct {
				name string
				n    int
			}{{"Deployment", len(r.deployments)}, {"Job", len(r.jobs)}, {"Service", len(r.services)},
				{"HorizontalPodAutoscaler", len(r.hpas)}, {"PodDisruptionBudget", len(r.pdbs)},
				{"ServiceMonitor", len(r.monitors)}, {"PrometheusRule", len(r.rules)}} {
				if kind.n == 0 {
					t.Errorf("no %s rendered", kind.name)
				}
			}
			api, proj := r.deployment("api"), r.deployment("projector")
			if api == nil || proj == nil {
				t.Fatalf("want an api and a projector Deployment, got %d Deployments", len(r.deployments))
			}
			checkSelectors(t, r)
			checkPods(t, r)
			checkEnvRefs(t, r)
			checkShutdown(t, r)
			checkProjectorScale(t, r, proj)
			checkMigration(t, r)
		})
	}
}

// checkSelectors: each Deployment selects its own pods; Services, PDBs and ServiceMonitors select
// something that exists; HPAs scale an existing Deployment.
func checkSelectors(t *testing.T, r rendered) {
	var pods []map[string]string
	for _, d := range r.deployments {
		if !selects(t, d.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("Deployment %s: selector %v does not match its pod labels %v", d.Name, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
		}
		pods = append(pods, d.Spec.Template.Labels)
	}
	for _, s := range r.services {
		var matched []*appsv1.Deployment
		for _, d := range r.deployments {
			if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
				matched = append(matched, d)
			}
		}
		if len(matched) != 1 {
			t.Errorf("Service %s selects %d Deployments' pods, want 1", s.Name, len(matched))
			continue
		}
		for _, p := range s.Spec.Ports {
			if _, ok := containerPort(matched[0].Spec.Template.Spec.Containers[0], p.TargetPort); !ok {
				t.Errorf("Service %s: targetPort %s is not a port of %s's container", s.Name, p.TargetPort.String(), matched[0].Name)
			}
		}
	}
	for _, pdb := range r.pdbs {
		n := 0
		for _, l := range pods {
			if selects(t, pdb.Spec.Selector, l) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("PodDisruptionBudget %s selects %d Deployments' pods, want 1", pdb.Name, n)
		}
	}
	for _, h := range r.hpas {
		d := slices.IndexFunc(r.deployments, func(d *appsv1.Deployment) bool {
			return h.Spec.ScaleTargetRef.Kind == "Deployment" && d.Name == h.Spec.ScaleTargetRef.Name
		})
		if d < 0 {
			t.Errorf("HPA %s scales %s %s, which is not rendered", h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
			continue
		}
		if r.deployments[d].Spec.Template.Labels["app.kubernetes.io/component"] == "projector" {
			t.Errorf("HPA %s scales the projector: replicas must stay at or below the partitions", h.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			t.Errorf("HPA %s: minReplicas %v, maxReplicas %d", h.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
	}
	scraped := map[string]bool{}
	for _, m := range r.monitors {
		for _, s := range r.services {
			if !selects(t, &m.Spec.Selector, s.Labels) {
				continue
			}
			for _, ep := range m.Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("ServiceMonitor %s: Service %s has no port named %q", m.Name, s.Name, ep.Port)
				}
			}
			scraped[s.Name] = true
		}
	}
	for _, component := range []string{"api", "projector"} {
		if !slices.ContainsFunc(r.services, func(s *corev1.Service) bool {
			return scraped[s.Name] && s.Spec.Selector["app.kubernetes.io/component"] == component
		}) {
			t.Errorf("no ServiceMonitor scrapes the %s", component)
		}
	}
}

// checkPods: probes on declared ports, resources set, images one version for all.
func checkPods(t *testing.T, r rendered) {
	images := map[string]bool{}
	for _, w := range r.workloads() {
		for _, c := range w.tmpl.Spec.Containers {
			images[c.Image] = true
			where := fmt.Sprintf("%s %s container %s", w.kind, w.name, c.Name)
			if binaryOf(c) == "" {
				t.Errorf("%s: no command naming the binary", where)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: want cpu and memory requests and a memory limit, got %v", where, c.Resources)
			}
			if w.kind != "Deployment" {
				continue
			}
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("%s: want readiness and liveness probes", where)
				continue
			}
			for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
				if p == nil {
					continue
				}
				if p.HTTPGet == nil {
					t.Errorf("%s: %s probe is not an HTTP GET", where, name)
					continue
				}
				if _, ok := containerPort(c, p.HTTPGet.Port); !ok {
					t.Errorf("%s: %s probe port %s is not a declared container port", where, name, p.HTTPGet.Port.String())
				}
			}
			if c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("%s: readiness probe on %s, want /readyz", where, c.ReadinessProbe.HTTPGet.Path)
			}
			if c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("%s: liveness probe on %s, want /healthz (readiness failing must not restart the pod)", where, c.LivenessProbe.HTTPGet.Path)
			}
		}
	}
	if len(images) != 1 {
		t.Errorf("workloads run %d images %v, want one (migrations must match the binaries)", len(images), images)
	}
}

// envOf resolves a container's environment: literal values, ConfigMap and Secret keys of the render
// (an external Secret's keys resolve to a placeholder), resource fields.
func envOf(t *testing.T, r rendered, c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			i := slices.IndexFunc(r.configMaps, func(cm *corev1.ConfigMap) bool { return cm.Name == ref.Name })
			if i < 0 {
				t.Errorf("%s: ConfigMap %s is not rendered", e.Name, ref.Name)
				continue
			}
			v, ok := r.configMaps[i].Data[ref.Key]
			if !ok && !ptrOr(ref.Optional, false) {
				t.Errorf("%s: ConfigMap %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			i := slices.IndexFunc(r.secrets, func(s *corev1.Secret) bool { return s.Name == ref.Name })
			switch {
			case i >= 0:
				v, ok := r.secrets[i].Data[ref.Key]
				if !ok {
					v, ok = []byte(r.secrets[i].StringData[ref.Key]), r.secrets[i].StringData[ref.Key] != ""
				}
				if !ok && !ptrOr(ref.Optional, false) {
					t.Errorf("%s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
				}
				env[e.Name] = string(v)
			case slices.Contains(externalSecrets[r.name], ref.Name):
				env[e.Name] = "placeholder-" + ref.Key
			default:
				t.Errorf("%s: Secret %s is neither rendered nor one the operator creates (externalSecrets)", e.Name, ref.Name)
			}
		case e.ValueFrom.ResourceFieldRef != nil:
			q := c.Resources.Limits.Memory()
			if e.ValueFrom.ResourceFieldRef.Resource != "limits.memory" || q.IsZero() {
				t.Errorf("%s: resourceFieldRef %s, want limits.memory with a limit set", e.Name, e.ValueFrom.ResourceFieldRef.Resource)
			}
			env[e.Name] = strconv.FormatInt(q.Value(), 10)
		default:
			t.Errorf("%s: unsupported valueFrom", e.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("container %s uses envFrom: name each variable, so the check against the binary's config sees it", c.Name)
	}
	return env
}

// checkEnvRefs: every variable set is one the binary's configuration reads.
func checkEnvRefs(t *testing.T, r rendered) {
	for _, w := range r.workloads() {
		for _, c := range w.tmpl.Spec.Containers {
			known := binaryEnv(t, binaryOf(c))
			for name := range envOf(t, r, c) {
				if !known[name] && !slices.Contains(runtimeEnv, name) {
					t.Errorf("%s %s: sets %s, which cmd/%s does not read", w.kind, w.name, name, binaryOf(c))
				}
			}
		}
	}
}

func durationEnv(t *testing.T, env map[string]string, name, def string) time.Duration {
	v := env[name]
	if v == "" {
		v = def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Errorf("%s=%q: %v", name, v, err)
	}
	return d
}

// checkShutdown: the grace period covers the preStop pause, SHUTDOWN_TIMEOUT and the probe server's
// own shutdown (5 s), so SIGKILL never cuts a request or a batch that is finishing.
func checkShutdown(t *testing.T, r rendered) {
	for _, d := range r.deployments {
		c := d.Spec.Template.Spec.Containers[0]
		shutdown := durationEnv(t, envOf(t, r, c), "SHUTDOWN_TIMEOUT", "10s")
		var pause time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			pause = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		if binaryOf(c) == "api" && pause == 0 {
			t.Errorf("Deployment %s: no preStop pause: requests routed during endpoint removal would be refused", d.Name)
		}
		grace := time.Duration(ptrOr(d.Spec.Template.Spec.TerminationGracePeriodSeconds, 30)) * time.Second
		if need := pause + shutdown + 5*time.Second; grace < need {
			t.Errorf("Deployment %s: terminationGracePeriodSeconds %s < preStop %s + SHUTDOWN_TIMEOUT %s + 5s", d.Name, grace, pause, shutdown)
		}
	}
}

// checkProjectorScale: replicas, also during a rollout, never exceed the events topic's partitions.
func checkProjectorScale(t *testing.T, r rendered, proj *appsv1.Deployment) {
	parts, err := strconv.Atoi(envOfKey(r, "KAFKA_PARTITIONS"))
	if err != nil {
		t.Fatalf("KAFKA_PARTITIONS in the ConfigMap: %v", err)
	}
	surge := 0
	if ru := proj.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxSurge != nil {
		surge, _ = intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, int(ptrOr(proj.Spec.Replicas, 1)), true)
	}
	if n := int(ptrOr(proj.Spec.Replicas, 1)) + surge; n > parts {
		t.Errorf("projector: %d replicas (with surge) > %d partitions: the extra ones would sit idle", n, parts)
	}
	if len(r.pdbs) < 2 {
		t.Errorf("want a PodDisruptionBudget for the api and the projector, got %d", len(r.pdbs))
	}
}

func envOfKey(r rendered, key string) string {
	for _, cm := range r.configMaps {
		if v, ok := cm.Data[key]; ok {
			return v
		}
	}
	return ""
}

// checkMigration: a Job runs cmd/migrate with the same database as the binaries.
func checkMigration(t *testing.T, r rendered) {
	i := slices.IndexFunc(r.jobs, func(j *batchv1.Job) bool {
		return binaryOf(j.Spec.Template.Spec.Containers[0]) == "migrate"
	})
	if i < 0 {
		t.Fatal("no Job runs /app/migrate")
	}
	j := r.jobs[i]
	if j.Spec.Template.Spec.RestartPolicy == corev1.RestartPolicyAlways {
		t.Error("migrate Job: restartPolicy Always is invalid for a Job")
	}
	if j.Spec.TTLSecondsAfterFinished == nil {
		t.Error("migrate Job: without ttlSecondsAfterFinished the next release cannot re-create it")
	}
}

var envTag = regexp.MustCompile(`env:"([A-Z0-9_]+)`)

// binaryEnv is the set of variables cmd/<bin> reads: the env tags of its own source and of the
// configuration types it embeds from internal packages.
func binaryEnv(t *testing.T, bin string) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join("..", "..", "cmd", bin, "*.go"))
	if len(files) == 0 {
		t.Fatalf("no source for cmd/%s", bin)
	}
	for _, f := range append(files, embeddedConfigSources...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b := readFile(t, f)
		if f != files[0] && slices.Contains(embeddedConfigSources, f) && !usesEmbedded(t, files, f) {
			continue
		}
		for _, m := range envTag.FindAllSubmatch(b, -1) {
			known[string(m[1])] = true
		}
	}
	return known
}

// embeddedConfigSources hold configuration types binaries embed (kafkaconn.Config, mysql.TLS,
// topicadmin.Replication).
var embeddedConfigSources = []string{
	filepath.Join("..", "..", "internal", "kafkaconn", "kafkaconn.go"),
	filepath.Join("..", "..", "internal", "mysql", "store.go"),
	filepath.Join("..", "..", "internal", "topicadmin", "replication.go"),
}

// usesEmbedded reports whether the binary's source embeds the configuration type defined in src.
func usesEmbedded(t *testing.T, files []string, src string) bool {
	typ := map[string]string{embeddedConfigSources[0]: "kafkaconn.Config", embeddedConfigSources[1]: "mysql.TLS",
		embeddedConfigSources[2]: "topicadmin.Replication"}[src]
	for _, f := range files {
		if bytes.Contains(readFile(t, f), []byte(typ)) {
			return true
		}
	}
	return false
}
