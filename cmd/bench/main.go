// Command bench measures the projector and the API on the local services and prints each figure beside a
// baseline measured in the same run: absolute times on a shared 2-core machine are noise, ratios measured
// side by side are not. It prints a table and, per figure, one line `BENCH {json}`.
//
// It needs TEST_MYSQL_DSN (an account that may create databases) and TEST_KAFKA_BROKERS; `make bench`
// starts the services and sets both. Every run uses fresh databases and topics and removes them.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/convsync/conversations/internal/trafficgen"
)

// WuKongIM v2.2.5 on the peer workload, measured on a machine like ours (docs/benchmarks.md).
const (
	peerReqPerCPUMsg10 = 1642
	peerReqPerCPUMsg1  = 2558
	peerIngestPerSec   = 2276
)

// figure is one measured number, with its baseline when there is one.
type figure struct {
	Name     string   `json:"name"`
	Value    float64  `json:"value"`
	Unit     string   `json:"unit"`
	Baseline *float64 `json:"baseline,omitempty"`
	Ratio    *float64 `json:"ratio,omitempty"`
	Target   string   `json:"target,omitempty"`
}

type report struct{ figures []figure }

func (r *report) add(name string, value float64, unit string) {
	r.emit(figure{Name: name, Value: value, Unit: unit})
}

func (r *report) vs(name string, value float64, unit string, baseline float64, target string) {
	ratio := value / baseline
	r.emit(figure{Name: name, Value: value, Unit: unit, Baseline: &baseline, Ratio: &ratio, Target: target})
}

func (r *report) emit(f figure) {
	r.figures = append(r.figures, f)
	b, err := json.Marshal(f)
	if err != nil { // a NaN or Inf: say so rather than print an empty line
		b = []byte(fmt.Sprintf(`{"name":%q,"error":%q}`, f.Name, err.Error()))
	}
	fmt.Printf("BENCH %s\n", b)
}

func (r *report) table() {
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tunit\tbaseline\tratio\ttarget")
	for _, f := range r.figures {
		base, ratio := "", ""
		if f.Baseline != nil {
			base, ratio = fmt.Sprintf("%.1f", *f.Baseline), fmt.Sprintf("%.2f", *f.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\t%s\t%s\n", f.Name, f.Value, f.Unit, base, ratio, f.Target)
	}
	tw.Flush()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	only := flag.String("only", "projector,api,peer,freshness", "sections to run, comma-separated")
	duration := flag.Duration("duration", 20*time.Second, "length of each API load run")
	scale := flag.Float64("scale", 1, "multiplies the size of the projector workloads")
	freshRate := flag.Float64("freshness-rate", 0, "events/s of the freshness run (0: half the measured maximum)")
	flag.Parse()
	sections := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		sections[strings.TrimSpace(s)] = true
	}
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	defer e.close()
	// A freshly formatted broker creates its offsets topic on the first group join, which takes seconds:
	// an untimed run pays for it so that no figure does.
	warm, err := newWorkload("warm-up", trafficgen.W1(100, 9))
	if err != nil {
		return err
	}
	if _, err := e.runProjector(ctx, warm, nil); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	rep := &report{}
	var maxRSS struct{ projector, api float64 }
	n := func(v int) int { return max(1, int(float64(v)**scale)) }

	if sections["projector"] {
		for _, wl := range []struct {
			name string
			cfg  trafficgen.Config
		}{
			{"w1", trafficgen.W1(n(30_000), 1)},
			{"w2", trafficgen.W2(n(2_000), 2)},
			{"w3", trafficgen.W3(n(500), 3)},
		} {
			w, err := newWorkload(wl.name, wl.cfg)
			if err != nil {
				return err
			}
			base, err := e.baselineUpserts(ctx, w)
			if err != nil {
				return err
			}
			res, err := e.runProjector(ctx, w, nil)
			if err != nil {
				return err
			}
			maxRSS.projector = max(maxRSS.projector, res.peakRSS)
			rows := float64(len(w.rows)) / res.seconds
			rep.add("projector."+wl.name+".events_per_s", res.events, "events/s")
			target := "≥ 0.8"
			if wl.name == "w3" {
				target = ""
			}
			rep.vs("projector."+wl.name+".row_updates_per_s", rows, "rows/s", base, target)
			if wl.name == "w3" {
				perEvent, err := e.runProjector(ctx, w, map[string]string{"BATCH_MAX_RECORDS": "1"})
				if err != nil {
					return err
				}
				maxRSS.projector = max(maxRSS.projector, perEvent.peakRSS)
				rep.vs("projector.w3.coalesced_vs_per_event", res.events, "events/s", perEvent.events, "≥ 3")
			}
		}
	}

	if sections["api"] {
		dsn, err := e.loadDirect(ctx, trafficgen.Config{Seed: 4, Messages: 12_000, Users: 500, Groups: 1_000,
			GroupSizeMin: 25, GroupSizeMax: 25, InlineShare: 1})
		if err != nil {
			return err
		}
		users, err := syncUsers(ctx, dsn, 5)
		if err != nil {
			return err
		}
		feed, err := e.freshTopic(ctx, 1)
		if err != nil {
			return err
		}
		api, err := e.start(ctx, "api", e.apiEnv(dsn, feed))
		if err != nil {
			return err
		}
		for _, incr := range []bool{false, true} {
			kind := map[bool]string{false: "full", true: "incremental"}[incr]
			progress("api: %s sync, 64 clients, %s", kind, *duration)
			viaAPI := apiLoad(ctx, api, e.dbPID, users, 10, 64, *duration, incr)
			progress("api: %s sync baseline, same SQL from Go", kind)
			direct, err := directLoad(ctx, dsn, e.dbPID, users, 10, 64, *duration, incr)
			if err != nil {
				api.stop()
				return err
			}
			if viaAPI.errors > 0 || direct.errors > 0 {
				progress("api: %d API errors, %d direct errors", viaAPI.errors, direct.errors)
			}
			rep.vs("api."+kind+".req_per_s", viaAPI.rate(), "req/s", direct.rate(), "≥ 0.7")
			rep.add("api."+kind+".p50", ms(viaAPI.p50), "ms")
			rep.add("api."+kind+".p99", ms(viaAPI.p99), "ms")
		}
		maxRSS.api = max(maxRSS.api, peakRSSMiB(api.cmd.Process.Pid))
		api.stop()
	}

	if sections["peer"] || sections["freshness"] {
		w, err := newWorkload("peer", trafficgen.Peer())
		if err != nil {
			return err
		}
		topic, dsn, projector, res, err := e.peerIngest(ctx, w)
		if err != nil {
			return err
		}
		defer projector.stop()
		maxRSS.projector = max(maxRSS.projector, res.peakRSS)
		rep.vs("peer.ingest.events_per_s", res.events, "events/s", peerIngestPerSec, "≥ 10 (vs WuKongIM)")
		api, err := e.start(ctx, "api", e.apiEnv(dsn, topic))
		if err != nil {
			return err
		}
		defer api.stop()
		if sections["peer"] {
			users, err := syncUsers(ctx, dsn, 0)
			if err != nil {
				return err
			}
			for _, mc := range []int{10, 1} {
				progress("peer: sync msg_count %d, 32 clients, %s", mc, *duration)
				r := apiLoad(ctx, api, e.dbPID, users, mc, 32, *duration, false)
				peer := map[int]float64{10: peerReqPerCPUMsg10, 1: peerReqPerCPUMsg1}[mc]
				name := fmt.Sprintf("peer.sync_msg%d", mc)
				rep.add(name+".req_per_s", r.rate(), "req/s")
				rep.add(name+".p50", ms(r.p50), "ms")
				rep.add(name+".p99", ms(r.p99), "ms")
				rep.vs(name+".req_per_cpu_s", float64(r.requests)/r.cpu, "req/CPU-s", peer, "≥ 2 (vs WuKongIM)")
				if len(r.cpuPer) == 2 {
					rep.add(name+".api_cpu_us_per_req", 1e6*r.cpuPer[0]/float64(r.requests), "µs")
					rep.add(name+".db_cpu_us_per_req", 1e6*r.cpuPer[1]/float64(r.requests), "µs")
				}
			}
		}
		if sections["freshness"] {
			rate := res.events // half the measured maximum of the same workload
			if *freshRate > 0 {
				rate = 2 * *freshRate
			}
			progress("freshness: %.0f events/s for 10s", rate/2)
			sum0, _ := projector.metric("conv_projector_batch_size_sum")
			count0, _ := projector.metric("conv_projector_batch_size_count")
			p50, p99, n, err := e.freshness(ctx, topic, api, rate/2, 10*time.Second)
			if err != nil {
				return err
			}
			sum1, _ := projector.metric("conv_projector_batch_size_sum")
			count1, _ := projector.metric("conv_projector_batch_size_count")
			if count1 > count0 {
				rep.add("freshness.mean_batch", (sum1-sum0)/(count1-count0), "records")
			}
			rep.add("freshness.rate", rate/2, "events/s")
			rep.add("freshness.p50", ms(p50), "ms")
			rep.add("freshness.p99", ms(p99), "ms")
			progress("freshness: %d probes, p50 %s, p99 %s", n, fmtMS(p50), fmtMS(p99))
		}
		maxRSS.projector = max(maxRSS.projector, peakRSSMiB(projector.cmd.Process.Pid))
		maxRSS.api = max(maxRSS.api, peakRSSMiB(api.cmd.Process.Pid))
	}
	if maxRSS.projector > 0 {
		rep.add("memory.projector.peak_rss", maxRSS.projector, "MiB")
	}
	if maxRSS.api > 0 {
		rep.add("memory.api.peak_rss", maxRSS.api, "MiB")
	}
	fmt.Println()
	rep.table()
	return nil
}
