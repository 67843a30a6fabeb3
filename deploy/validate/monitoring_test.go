package validate

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/convsync/conversations/internal/changefeed"
	"github.com/convsync/conversations/internal/projector"
	"github.com/convsync/conversations/internal/readcache"
	"github.com/convsync/conversations/internal/replica"
)

// externalMetrics are named by the rules or the dashboard but exported by something else: Prometheus
// itself (up) and kube-state-metrics.
var externalMetrics = []string{"up", "kube_pod_status_ready"}

// recorder is a Registerer that also remembers the name of every metric registered through it, so
// labelled metrics that have no series yet (a lag gauge before any partition is assigned) count too.
type recorder struct {
	*prometheus.Registry
	names map[string]bool
	// labels are each metric's variable labels.
	labels map[string][]string
}

var (
	fqName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	varLabel = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	sample   = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} `)
	labelKey = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
			if l := varLabel.FindStringSubmatch(d.String()); l != nil && l[1] != "" {
				r.labels[m[1]] = strings.Split(l[1], ",")
			}
		}
	}
	return r.Registry.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// exportedWithLabels gathers the metric names the binaries export, with their types where known: the /metrics of
// the real api and projector binaries (dev overlay's environment), plus every metric the packages they
// wire register, series or not. Histograms and summaries also export _bucket, _sum and _count.
//
// The labels are each metric's label names (series labels, not target labels).
func exportedWithLabels(t *testing.T) (map[string]string, map[string]map[string]bool) {
	t.Helper()
	types := map[string]string{}
	labels := map[string]map[string]bool{}
	addLabel := func(metric, label string) {
		if labels[metric] == nil {
			labels[metric] = map[string]bool{}
		}
		labels[metric][label] = true
	}
	rec := &recorder{Registry: prometheus.NewRegistry(), names: map[string]bool{}, labels: map[string][]string{}}
	if _, err := projector.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := readcache.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	// The dev overlay's API runs without database replicas, so their metrics come from the router alone.
	if _, err := replica.New(nil, nil, replica.Options{Registry: rec}); err != nil {
		t.Fatal(err)
	}
	if _, err := changefeed.NewPublisher(nil, []string{"127.0.0.1:1"}, "t", slog.New(slog.NewTextHandler(io.Discard, nil)), rec,
		changefeed.PublisherOptions{}); err != nil {
		t.Fatal(err)
	}
	for n := range rec.names {
		types[n] = ""
		for _, l := range rec.labels[n] {
			addLabel(n, strings.TrimSpace(l))
		}
	}
	r := render(t, "dev")
	for _, component := range []string{"api", "projector"} {
		c := r.deployment(component).Spec.Template.Spec.Containers[0]
		env, addr := localize(t, envOf(t, r, c))
		p := start(t, binaryOf(c), env, addr)
		p.get(t, "/readyz") // a request, so the API's per-route series exist
		_, body := p.get(t, "/metrics")
		for _, line := range strings.Split(body, "\n") {
			if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
				types[f[2]] = f[3]
			}
			if m := sample.FindStringSubmatch(line); m != nil {
				for _, k := range labelKey.FindAllStringSubmatch(m[2], -1) {
					addLabel(m[1], k[1])
				}
			}
		}
	}
	if len(types) < 20 {
		t.Fatalf("only %d metrics found: %v", len(types), slices.Sorted(maps.Keys(types)))
	}
	return types, labels
}

// base maps a series name to the metric it belongs to: x_bucket, x_sum and x_count to histogram or
// summary x. ok is false for names no binary exports.
func base(exp map[string]string, name string) (string, bool) {
	if _, ok := exp[name]; ok {
		return name, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		b, found := strings.CutSuffix(name, suffix)
		if typ, ok := exp[b]; found && ok && (typ == "" || typ == "histogram" || typ == "summary") {
			if suffix == "_bucket" && typ == "summary" {
				return "", false
			}
			return b, true
		}
	}
	return "", false
}

// promql is the parser Prometheus itself uses for rule files, with its default functions.
var promql = parser.NewParser(parser.Options{})

// metricNames are the metric names an expression selects.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		t.Errorf("PromQL does not parse: %v\n%s", err, expr)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			if name == "" {
				for _, m := range vs.LabelMatchers {
					if m.Name == "__name__" {
						name = m.Value
					}
				}
			}
			names = append(names, name)
		}
		return nil
	})
	return names
}

func checkNames(t *testing.T, exp map[string]string, where, expr string, used map[string]bool) {
	for _, n := range metricNames(t, expr) {
		if slices.Contains(externalMetrics, n) {
			continue
		}
		b, ok := base(exp, n)
		if !ok {
			t.Errorf("%s: %s is not exported by the binaries", where, n)
			continue
		}
		used[b] = true
	}
}

// TestAlertRules: the PrometheusRule's groups are a valid Prometheus rule file (rulefmt), every
// expression parses, and every metric it names is exported.
func TestAlertRules(t *testing.T) {
	exp, labels := exportedWithLabels(t)
	r := render(t, "production")
	if len(r.rules) != 1 {
		t.Fatalf("want one PrometheusRule, got %d", len(r.rules))
	}
	// Through JSON first: monitoringv1 types carry json tags, rulefmt reads YAML.
	js, err := json.Marshal(map[string]any{"groups": r.rules[0].Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(js, &generic); err != nil {
		t.Fatal(err)
	}
	spec, err := yaml.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, promql, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		t.Errorf("rulefmt: %v", err)
	}
	if groups == nil {
		t.Fatal("no rule groups")
	}
	used := map[string]bool{}
	alerts := 0
	for _, g := range groups.Groups {
		for _, rule := range g.Rules {
			checkNames(t, exp, "alert "+rule.Alert, rule.Expr, used)
			checkLabels(t, exp, labels, "alert "+rule.Alert, rule.Expr)
			if rule.Alert != "" {
				alerts++
				if rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" {
					t.Errorf("alert %s: needs a severity label and a summary", rule.Alert)
				}
			}
		}
	}
	// What the issue asks the alerts to cover.
	for _, m := range []string{"conv_projector_consumer_lag", "conv_projector_dead_lettered_total", "conv_projector_apply_failures_total",
		"conv_projector_commit_failures_total", "conv_projector_dead_letter_failures_total", "conv_api_requests_total",
		"conv_api_request_seconds", "conv_changes_publish_failures_total"} {
		if !used[m] {
			t.Errorf("no alert watches %s", m)
		}
	}
	t.Logf("%d alerts over %d metrics", alerts, len(used))
}

// dashboard is what the test reads of Grafana's dashboard JSON.
type dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	GridPos *struct{ H, W, X, Y int } `json:"gridPos"`
}

// grafanaVars are the dashboard's variables, replaced by values that parse as PromQL.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "${namespace}", "ns", "$namespace", "ns")

// TestDashboard: the dashboard parses, each query parses as PromQL and names only exported metrics,
// and every metric the service exports (conv_*) is charted somewhere.
func TestDashboard(t *testing.T) {
	exp, labels := exportedWithLabels(t)
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(readFile(t, filepath.Join("..", "k8s", "base", "monitoring", "dashboard.json")))))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard needs a uid and a title")
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d is used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil {
				t.Errorf("panel %q has no gridPos", p.Title)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				checkNames(t, exp, "panel "+p.Title, grafanaVars.Replace(tg.Expr), used)
				checkLabels(t, exp, labels, "panel "+p.Title, grafanaVars.Replace(tg.Expr))
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for name := range exp {
		if strings.HasPrefix(name, "conv_") && !used[name] {
			t.Errorf("%s is exported but no dashboard panel charts it", name)
		}
	}
}

// targetLabels are attached by Prometheus (and the Operator) to every series it scrapes.
var targetLabels = []string{"namespace", "job", "pod", "instance", "service", "endpoint", "container"}

// checkLabels: each label an expression matches on or groups by is one its metric has, so a query never
// silently selects nothing (a "code" where the metric says "status").
func checkLabels(t *testing.T, exp map[string]string, labels map[string]map[string]bool, where, expr string) {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return // reported by checkNames
	}
	has := func(series, label string) bool {
		b, ok := base(exp, series)
		if !ok || slices.Contains(targetLabels, label) {
			return true // unknown metrics are reported elsewhere; target labels exist on all
		}
		return labels[b][label] || labels[series][label] || (label == "le" && strings.HasSuffix(series, "_bucket"))
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			if slices.Contains(externalMetrics, n.Name) {
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name != "__name__" && !has(n.Name, m.Name) {
					t.Errorf("%s: %s has no label %q", where, n.Name, m.Name)
				}
			}
		case *parser.AggregateExpr:
			if n.Without {
				return nil
			}
			var names []string
			parser.Inspect(n.Expr, func(c parser.Node, _ []parser.Node) error {
				if vs, ok := c.(*parser.VectorSelector); ok && !slices.Contains(names, vs.Name) {
					names = append(names, vs.Name)
				}
				return nil
			})
			for _, name := range names {
				if slices.Contains(externalMetrics, name) {
					continue
				}
				for _, g := range n.Grouping {
					if !has(name, g) {
						t.Errorf("%s: groups %s by %q, a label it does not have", where, name, g)
					}
				}
			}
		}
		return nil
	})
}
