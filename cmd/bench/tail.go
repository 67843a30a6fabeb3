package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// The tail of a latency figure: for each of the slowest messages, where its time went as far as the
// bench sees it (its produce call, then the sync that showed it) and what the projector logged as slow
// meanwhile (its "slow batch" lines, SLOW_BATCH=50ms in the bench).

// msgTrace is one measured message's way from produce to visible.
type msgTrace struct {
	kind    string // "group" or "peer"
	seq     int64
	sent    time.Time     // stamped just before the produce call that carried it
	produce time.Duration // that call's duration (synchronous, acks=all)
	visible time.Time     // the sync that showed it returned
	// syncStart and syncTook are that sync's; prevEnd is when the poller's sync before it returned.
	syncStart time.Time
	syncTook  time.Duration
	prevEnd   time.Time
}

func (t msgTrace) latency() time.Duration { return t.visible.Sub(t.sent) }

// slowBatchLine is one "slow batch" line of the projector's log.
type slowBatchLine struct {
	at     time.Time
	fields map[string]any
}

// readSlowBatches returns the projector's "slow batch" lines in its log file (JSON lines).
func readSlowBatches(path string) ([]slowBatchLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []slowBatchLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), `"slow batch"`) {
			continue
		}
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil || m["msg"] != "slow batch" {
			continue
		}
		ts, _ := m["time"].(string)
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		out = append(out, slowBatchLine{at: at, fields: m})
	}
	return out, sc.Err()
}

// tailCount is how many of n sorted latencies lie at or above the p99 (at least 3, to see a pattern).
func tailCount(n int) int { return min(n, max(3, n/100+1)) }

// reportTail prints, for the slowest messages of each kind, their produce time, the sync that showed
// them and the projector's slow batches between their produce and their visibility. Times are from
// start. It returns the number of slowest messages whose produce call took at least half their latency.
func reportTail(kind string, traces []msgTrace, slow []slowBatchLine, start time.Time) int {
	var of []msgTrace
	for _, t := range traces {
		if t.kind == kind && !t.visible.IsZero() {
			of = append(of, t)
		}
	}
	slices.SortFunc(of, func(a, b msgTrace) int { return int(b.latency() - a.latency()) })
	n := tailCount(len(of))
	at := func(t time.Time) string { return fmt.Sprintf("+%.3fs", t.Sub(start).Seconds()) }
	producerBound := 0
	progress("large: the %d slowest of %d %s messages (produce = the synchronous produce call; slow batches = the projector's, fetched-to-applied ≥ 50 ms, logged between produce and visible):",
		n, len(of), kind)
	for _, t := range of[:n] {
		if t.produce >= t.latency()/2 {
			producerBound++
		}
		line := fmt.Sprintf("  %s seq %d sent %s: %s = produce %s + %s more until the sync that showed it (started %s, took %s; the sync before it ended %s)",
			kind, t.seq, at(t.sent), fmtMS(t.latency()), fmtMS(t.produce), fmtMS(t.latency()-t.produce), at(t.syncStart),
			fmtMS(t.syncTook), at(t.prevEnd))
		var batches []string
		for _, b := range slow {
			if b.at.Before(t.sent) || b.at.After(t.visible) {
				continue
			}
			batches = append(batches, fmt.Sprintf("lane %v at %s: %s", b.fields["lane"], at(b.at), formatSlowBatch(b.fields)))
		}
		if len(batches) == 0 {
			line += "; no slow batch"
		} else {
			line += "; slow batches: " + strings.Join(batches, " | ")
		}
		progress("%s", line)
	}
	return producerBound
}

// formatSlowBatch prints a slow-batch line's figures: records, age, took, the stages over 1 ms and the
// steps over 1 ms.
func formatSlowBatch(f map[string]any) string {
	num := func(k string) float64 { v, _ := f[k].(float64); return v }
	out := fmt.Sprintf("%.0f records, age %.0f, took %.0f, max fetch %.0f, max queue %.0f, apply %.0f, db_commit %.0f, commit_wait %.0f, attempts %.0f",
		num("records"), num("age_ms"), num("took_ms"), num("max_fetch_ms"), num("max_queue_ms"), num("apply_ms"), num("db_commit_ms"),
		num("commit_wait_ms"), num("attempts"))
	if steps, ok := f["steps_ms"].(map[string]any); ok {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(steps)) {
			if v, _ := steps[k].(float64); v >= 1 {
				parts = append(parts, fmt.Sprintf("%s %.0f", k, v))
			}
		}
		if len(parts) > 0 {
			out += " (" + strings.Join(parts, ", ") + ")"
		}
	}
	return out + " ms"
}

// summarizeSlowBatches says how many slow batches the projector logged from start to end, how many of
// them in the first second, and the slowest (by took_ms) with when it ended.
func summarizeSlowBatches(slow []slowBatchLine, start, end time.Time) string {
	n, first := 0, 0
	var worst *slowBatchLine
	for i, b := range slow {
		if b.at.Before(start) || b.at.After(end) {
			continue
		}
		n++
		if b.at.Sub(start) < time.Second {
			first++
		}
		took := func(l slowBatchLine) float64 { v, _ := l.fields["took_ms"].(float64); return v }
		if worst == nil || took(b) > took(*worst) {
			worst = &slow[i]
		}
	}
	if worst == nil {
		return "no slow batch"
	}
	return fmt.Sprintf("%d slow batches (%d in the first second); the longest: lane %v at +%.3fs: %s", n, first,
		worst.fields["lane"], worst.at.Sub(start).Seconds(), formatSlowBatch(worst.fields))
}
