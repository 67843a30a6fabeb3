package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/conversation"
	mysqlstore "github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/trafficgen"
)

// activeUsers is the size of the active set whose syncs repeat (scale.sync_msg10.active_*): as many
// users as the small model has, so that each is synced again within seconds, as there. (A set of 20,000
// was not: at about 500 syncs/s here each user came back after 40 s, and 220,000 channels' recents do
// not fit the default RECENTS_CACHE_BYTES.)
const activeUsers = 2_000

// scaleOptions are the -scale-* flags.
type scaleOptions struct {
	users, rows int
	reload      bool
	warm        bool
}

// scaleFlags registers the scale section's flags.
func scaleFlags() *scaleOptions {
	var o scaleOptions
	flag.IntVar(&o.users, "scale-users", 1_000_000, "scale section: users of the preloaded read model")
	flag.IntVar(&o.rows, "scale-rows", 10_000_000, "scale section: conversation rows of the preloaded read model")
	flag.BoolVar(&o.reload, "scale-reload", false, "scale section: preload the read model again even if it is there")
	flag.BoolVar(&o.warm, "scale-warm", false, "scale section: read the whole preloaded model into the buffer pool first (for a pool that holds it)")
	return &o
}

// scaleSection measures the projector and the API on a read model of opts.users users and opts.rows
// conversation rows (preloaded once into convtest_scale and reused by later runs) beside the same
// figures on the small read model, both on the same server in the same run, with the server's own
// evidence (buffer pool hit rate, rows read per statement, EXPLAIN) for each phase.
func scaleSection(ctx context.Context, e *env, rep *report, run options, opts scaleOptions) error {
	admin, err := sql.Open("mysql", e.adminDSN)
	if err != nil {
		return err
	}
	defer admin.Close()
	big, runNo, err := e.scaleDB(ctx, admin, opts)
	if err != nil {
		return err
	}
	if opts.warm {
		if err := warmPool(ctx, admin); err != nil {
			return err
		}
	}
	settle(ctx, admin, 4*time.Minute)
	// Every run's streams continue the channels' seqs above the previous runs' (the database is kept).
	seqBase := int64(runNo) * 1_000_000_000
	ev := &evidence{db: admin}

	// The peer workload: ingest, freshness at 100 events/s, sync of random users; small then large.
	type peerFigures struct {
		ingest         ingest
		fresh          freshResult
		sync, uncached loadResult
		active         loadResult // syncs of an active set of at most activeUsers users
		syncRows       float64
		apiRSS         float64
		hit, rowsPerSt float64
		topic          string
	}
	peerRun := func(label, dsn string, base int64, users func(context.Context, string) ([]syncUser, error)) (peerFigures, *proc, *proc, error) {
		var f peerFigures
		cfg := trafficgen.Peer()
		cfg.SeqBase = base
		w, err := newWorkload("peer-"+label, cfg)
		if err != nil {
			return f, nil, nil, err
		}
		topic, err := e.freshTopic(ctx, 6)
		if err != nil {
			return f, nil, nil, err
		}
		if dsn == "" {
			if dsn, err = e.freshDB(ctx); err != nil {
				return f, nil, nil, err
			}
		}
		f.topic = topic
		ev.begin(ctx, label+".peer_ingest")
		res, projector, err := e.ingestInto(ctx, w, topic, dsn, nil, true)
		if err != nil {
			return f, nil, nil, err
		}
		ev.end(ctx)
		f.ingest = res
		api, err := e.start(ctx, "api", e.apiEnv(dsn, topic))
		if err != nil {
			projector.stop()
			return f, nil, nil, err
		}
		progress("scale: %s: freshness, 100 events/s for 15s", label)
		ev.begin(ctx, label+".freshness_r100")
		if f.fresh, err = e.freshness(ctx, topic, projector, api, freshRun{rate: 100, warm: run.warmUp, d: 15 * time.Second, seqBase: base + 2_000_000}); err != nil {
			api.stop()
			projector.stop()
			return f, nil, nil, fmt.Errorf("freshness %s: %w", label, err)
		}
		ev.end(ctx)
		progress("scale: %s: freshness p50 %s, p99 %s; %s", label, fmtMS(f.fresh.p50), fmtMS(f.fresh.p99), formatStages(f.fresh.stages))
		us, err := users(ctx, dsn)
		if err != nil {
			api.stop()
			projector.stop()
			return f, nil, nil, err
		}
		progress("scale: %s: sync msg_count 10 of %d random users, 32 clients, %s", label, len(us), run.duration)
		ev.begin(ctx, label+".sync_msg10")
		f.sync = apiLoad(ctx, api, e.dbPID, us, 10, 32, run.duration, false)
		st := ev.end(ctx)
		f.hit, f.rowsPerSt = st.hitRate(), st.rowsPerSelect()
		f.active = f.sync
		if len(us) > activeUsers {
			// Users who sync again and again, as a real population's active ones do: their lists and
			// recents can stay in the API's caches, as the small model's whole population does.
			progress("scale: %s: sync msg_count 10 of %d active users, 32 clients, %s", label, activeUsers, run.duration)
			apiLoad(ctx, api, e.dbPID, us[:activeUsers], 10, 32, run.duration/2, false) // fills the caches
			ev.begin(ctx, label+".sync_msg10_active")
			f.active = apiLoad(ctx, api, e.dbPID, us[:activeUsers], 10, 32, run.duration, false)
			ev.end(ctx)
			progress("scale: %s: active users: %.0f req/s (%d errors), p99 %s", label, f.active.rate(), f.active.errors, fmtMS(f.active.p99))
		}
		f.syncRows = meanRows(ctx, api, us, 200)
		f.apiRSS = peakRSSMiB(api.cmd.Process.Pid)
		// The same load on an API with its caches off: every sync reads the database, the path a sync of a
		// user no cache holds takes.
		vars := e.apiEnv(dsn, topic)
		vars["SYNC_CACHE_USERS"] = "0"
		bare, err := e.start(ctx, "api", vars)
		if err != nil {
			api.stop()
			projector.stop()
			return f, nil, nil, err
		}
		ev.begin(ctx, label+".sync_msg10_uncached")
		f.uncached = apiLoad(ctx, bare, e.dbPID, us, 10, 32, run.duration, false)
		ev.end(ctx)
		bare.stop()
		progress("scale: %s: caches off: %.0f req/s (%d errors), p99 %s", label, f.uncached.rate(), f.uncached.errors, fmtMS(f.uncached.p99))
		progress("scale: %s: %.0f req/s (%d errors), p99 %s, %.1f conversations per answer, buffer pool hit %.4f, %.1f rows read per select",
			label, f.sync.rate(), f.sync.errors, fmtMS(f.sync.p99), f.syncRows, f.hit, f.rowsPerSt)
		return f, projector, api, nil
	}

	small, sp, sa, err := peerRun("small", "", 0, func(ctx context.Context, dsn string) ([]syncUser, error) { return syncUsers(ctx, dsn, 0) })
	if err != nil {
		return err
	}
	sa.stop()
	sp.stop()
	large, lp, la, err := peerRun("large", big, seqBase, func(context.Context, string) ([]syncUser, error) {
		rnd := rand.New(rand.NewPCG(uint64(runNo), 3))
		us := make([]syncUser, 100_000)
		for i := range us {
			us[i] = syncUser{uid: "u" + strconv.Itoa(1+rnd.IntN(opts.users))}
		}
		return us, nil
	})
	if err != nil {
		return err
	}
	rep.vs("scale.peer.ingest.vs_small", large.ingest.events, "events/s", small.ingest.events, "≥ 0.7")
	rep.emit(figure{Name: "scale.freshness.r100.p99", Value: ms(large.fresh.p99), Unit: "ms", Stages: large.fresh.stages,
		Baseline: ptr(ms(small.fresh.p99)), Ratio: ptr(ms(large.fresh.p99) / ms(small.fresh.p99)), Target: "≤ 2 (ratio)"})
	rep.vs("scale.sync_msg10.vs_small", large.sync.rate(), "req/s", small.sync.rate(), "≥ 0.7")
	rep.vs("scale.sync_msg10.p99", ms(large.sync.p99), "ms", ms(small.sync.p99), "")
	rep.vs(fmt.Sprintf("scale.sync_msg10.active_%dk.vs_small", activeUsers/1000), large.active.rate(), "req/s", small.sync.rate(), "")
	rep.vs("scale.sync_msg10.uncached.vs_small_uncached", large.uncached.rate(), "req/s", small.uncached.rate(), "")
	rep.vs("scale.sync_msg10.uncached.conversations_per_s", large.uncached.rate()*large.syncRows, "rows/s", small.uncached.rate()*small.syncRows, "")
	rep.vs("scale.sync_msg10.conversations_per_answer", large.syncRows, "rows", small.syncRows, "")
	rep.vs("scale.sync_msg10.conversations_per_s", large.sync.rate()*large.syncRows, "rows/s", small.sync.rate()*small.syncRows, "")
	rep.vs("scale.sync_msg10.bp_hit_pct", 100*large.hit, "%", 100*small.hit, "")
	rep.vs("scale.sync_msg10.rows_read_per_select", large.rowsPerSt, "rows", small.rowsPerSt, "")

	// A user with heavyRows conversations: a full sync paged with limit, and an incremental one.
	if err := heavySync(ctx, rep, ev, la, big, heavyUID(opts.users)); err != nil {
		la.stop()
		lp.stop()
		return err
	}
	// The API's memory while syncing distinct users of the whole model (the caches follow them).
	progress("scale: memory: sync msg_count 1 of distinct random users, 32 clients, %s", run.duration)
	rnd := rand.New(rand.NewPCG(uint64(runNo), 5))
	distinct := make([]syncUser, opts.users)
	for i, p := range rnd.Perm(opts.users) {
		distinct[i] = syncUser{uid: "u" + strconv.Itoa(p+1)}
	}
	mem := apiLoad(ctx, la, e.dbPID, distinct, 1, 32, run.duration, false)
	rss := max(large.apiRSS, peakRSSMiB(la.cmd.Process.Pid))
	if m, err := la.metrics(); err == nil {
		progress("scale: memory: API heap in use %.0f MiB, heap objects %.0f, rows cache holds %.0f lists of %.0f rows, lists loaded %.0f (paged %.0f), recents ranges missed %.0f, next GC at %.0f MiB",
			m["go_memstats_heap_inuse_bytes"]/(1<<20), m["go_memstats_heap_objects"], m[`conv_api_rows_cache_held{what="lists"}`],
			m[`conv_api_rows_cache_held{what="rows"}`], m[`conv_api_rows_cache_total{result="loaded"}`],
			m[`conv_api_rows_cache_total{result="page"}`], m[`conv_api_recents_cache_total{result="miss"}`], m["go_memstats_next_gc_bytes"]/(1<<20))
		rep.add("scale.memory.api.heap_inuse", m["go_memstats_heap_inuse_bytes"]/(1<<20), "MiB")
	}
	progress("scale: memory: %d syncs (of at most as many distinct users), API peak RSS %.0f MiB (small read model: %.0f MiB)", mem.requests, rss, small.apiRSS)
	rep.vs("scale.memory.api.peak_rss", rss, "MiB", small.apiRSS, "bounded by SYNC_CACHE_USERS/ROWS, RECENTS_CACHE_BYTES")
	la.stop()
	// The same load on an API with a tenth of the default bounds: its memory follows the bounds.
	vars := e.apiEnv(big, large.topic)
	vars["SYNC_CACHE_USERS"], vars["SYNC_CACHE_ROWS"], vars["RECENTS_CACHE_BYTES"] = "10000", "100000", strconv.Itoa(64<<20/10)
	tenth, err := e.start(ctx, "api", vars)
	if err != nil {
		lp.stop()
		return err
	}
	apiLoad(ctx, tenth, e.dbPID, distinct, 10, 32, run.duration, false)
	apiLoad(ctx, tenth, e.dbPID, distinct[len(distinct)/2:], 1, 32, run.duration, false)
	if m, err := tenth.metrics(); err == nil {
		progress("scale: memory, a tenth of the bounds: heap in use %.0f MiB, rows cache holds %.0f lists of %.0f rows",
			m["go_memstats_heap_inuse_bytes"]/(1<<20), m[`conv_api_rows_cache_held{what="lists"}`], m[`conv_api_rows_cache_held{what="rows"}`])
	}
	rep.vs("scale.memory.api.peak_rss_tenth_bounds", peakRSSMiB(tenth.cmd.Process.Pid), "MiB", rss, "")
	tenth.stop()
	lp.stop()

	// W1 (person chats): small, then into the large model.
	w1 := trafficgen.W1(30_000, 1)
	ws, err := newWorkload("w1-small", w1)
	if err != nil {
		return err
	}
	ev.begin(ctx, "small.w1")
	smallW1, err := e.runProjector(ctx, ws, nil)
	if err != nil {
		return err
	}
	ev.end(ctx)
	w1.SeqBase = seqBase + 100_000_000
	wl, err := newWorkload("w1-large", w1)
	if err != nil {
		return err
	}
	topic, err := e.freshTopic(ctx, 6)
	if err != nil {
		return err
	}
	ev.begin(ctx, "large.w1")
	largeW1, _, err := e.ingestInto(ctx, wl, topic, big, nil, false)
	if err != nil {
		return err
	}
	ev.end(ctx)
	rep.vs("scale.w1.vs_small", largeW1.events, "events/s", smallW1.events, "≥ 0.7")

	return ev.report(ctx, rep, big, heavyUID(opts.users))
}

func ptr(v float64) *float64 { return &v }

// scaleDB returns the DSN of the preloaded read model, loading it when it is missing, of another shape,
// or opts.reload asks, and the number of this run on it (1 for a fresh load).
func (e *env) scaleDB(ctx context.Context, admin *sql.DB, opts scaleOptions) (string, int, error) {
	cfg, err := mysql.ParseDSN(e.adminDSN)
	if err != nil {
		return "", 0, err
	}
	cfg.DBName = preloadDB
	dsn := cfg.FormatDSN()
	want := fmt.Sprintf("users=%d rows=%d seed=1", opts.users, opts.rows)
	var have string
	var runs int
	err = admin.QueryRowContext(ctx, `SELECT shape, runs FROM `+preloadDB+`.bench_preload`).Scan(&have, &runs)
	if err == nil && have == want && !opts.reload {
		if err := migrate(ctx, dsn); err != nil { // a migration landed since the load
			return "", 0, err
		}
		if _, err := admin.ExecContext(ctx, `UPDATE `+preloadDB+`.bench_preload SET runs = runs + 1`); err != nil {
			return "", 0, err
		}
		progress("scale: reusing the preloaded %s (%s), run %d on it", preloadDB, have, runs+1)
		return dsn, runs + 1, nil
	}
	progress("scale: preloading %s: %s", preloadDB, want)
	if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+preloadDB); err != nil {
		return "", 0, err
	}
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+preloadDB); err != nil {
		return "", 0, err
	}
	if err := migrate(ctx, dsn); err != nil {
		return "", 0, err
	}
	start := time.Now()
	if _, err := preload(ctx, dsn, shape{users: opts.users, rows: opts.rows, seed: 1, window: conversation.DefaultRecentsWindow, heavyRows: 5_000}); err != nil {
		return "", 0, err
	}
	if _, err := admin.ExecContext(ctx, `ANALYZE TABLE `+preloadDB+`.conversations, `+preloadDB+`.messages, `+preloadDB+`.channels, `+preloadDB+`.user_versions`); err != nil {
		return "", 0, err
	}
	if _, err := admin.ExecContext(ctx, `CREATE TABLE `+preloadDB+`.bench_preload (shape VARCHAR(200) NOT NULL, runs INT NOT NULL, load_s DOUBLE NOT NULL)`); err != nil {
		return "", 0, err
	}
	if _, err := admin.ExecContext(ctx, `INSERT INTO `+preloadDB+`.bench_preload VALUES (?, 1, ?)`, want, time.Since(start).Seconds()); err != nil {
		return "", 0, err
	}
	return dsn, 1, nil
}

// heavySync times the sync of heavy (a user with thousands of conversations): every page of a full sync with limit 200 (from version 1: every row,
// lowest versions first, each page asking above the highest version of the one before), and an
// incremental sync that finds the user's 10 newest changes.
func heavySync(ctx context.Context, rep *report, ev *evidence, api *proc, dsn, heavy string) error {
	c := newSyncClient(api.addr, 1)
	type item struct {
		Version int64 `json:"version"`
	}
	page := func(version int64, limit int) ([]item, error) {
		body, _ := json.Marshal(map[string]any{"uid": heavy, "version": version, "limit": limit, "msg_count": 1})
		out, err := c.post(ctx, body)
		if err != nil {
			return nil, err
		}
		var items []item
		return items, json.Unmarshal(out, &items)
	}
	const limit = 200
	var full, pages []time.Duration
	var total int
	ev.begin(ctx, "large.sync_5000_full")
	for rep := 0; rep < 20 && ctx.Err() == nil; rep++ {
		start := time.Now()
		v, n := int64(1), 0
		for {
			t := time.Now()
			items, err := page(v, limit)
			if err != nil {
				return fmt.Errorf("paged sync of %s: %w", heavy, err)
			}
			pages = append(pages, time.Since(t))
			n += len(items)
			next := v
			for _, it := range items {
				next = max(next, it.Version)
			}
			if len(items) < limit || next == v {
				break
			}
			v = next
		}
		full = append(full, time.Since(start))
		total = n
	}
	st := ev.end(ctx)
	slices.Sort(full)
	slices.Sort(pages)
	progress("scale: sync_5000: full paged sync of %d conversations in %d pages: p50 %s, p99 %s; per page p50 %s; %.0f rows read per select",
		total, len(pages)/max(1, len(full)), fmtMS(percentile(full, 50)), fmtMS(percentile(full, 99)), fmtMS(percentile(pages, 50)), st.rowsPerSelect())
	rep.add("scale.sync_5000.conversations", float64(total), "rows")
	rep.add("scale.sync_5000.full_ms.p50", ms(percentile(full, 50)), "ms")
	rep.add("scale.sync_5000.full_ms.p99", ms(percentile(full, 99)), "ms")
	rep.add("scale.sync_5000.page_ms.p50", ms(percentile(pages, 50)), "ms")
	rep.add("scale.sync_5000.full.rows_read_per_select", st.rowsPerSelect(), "rows")

	// The version below the user's 10 newest rows.
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	var v int64
	if err := db.QueryRowContext(ctx, `SELECT version FROM conversations WHERE uid = ? ORDER BY version DESC LIMIT 1 OFFSET 10`, heavy).Scan(&v); err != nil {
		return fmt.Errorf("version of %s: %w", heavy, err)
	}
	var incr []time.Duration
	got := 0
	ev.begin(ctx, "large.sync_5000_incremental")
	for range 200 {
		t := time.Now()
		items, err := page(v, limit)
		if err != nil {
			return err
		}
		incr = append(incr, time.Since(t))
		got = len(items)
	}
	st = ev.end(ctx)
	slices.Sort(incr)
	progress("scale: sync_5000: incremental sync (%d changed rows): p50 %s, p99 %s; %.0f rows read per select",
		got, fmtMS(percentile(incr, 50)), fmtMS(percentile(incr, 99)), st.rowsPerSelect())
	rep.add("scale.sync_5000.incremental_ms.p50", ms(percentile(incr, 50)), "ms")
	rep.add("scale.sync_5000.incremental_ms.p99", ms(percentile(incr, 99)), "ms")
	rep.add("scale.sync_5000.incremental.rows_read_per_select", st.rowsPerSelect(), "rows")
	return nil
}

// meanRows is the mean number of conversations a full sync answers, over n of users.
func meanRows(ctx context.Context, api *proc, users []syncUser, n int) float64 {
	c := newSyncClient(api.addr, 1)
	total, count := 0, 0
	for i := 0; i < n && i < len(users); i++ {
		body, _ := json.Marshal(syncBody{UID: users[i].uid})
		out, err := c.post(ctx, body)
		if err != nil {
			continue
		}
		var items []json.RawMessage
		if json.Unmarshal(out, &items) == nil {
			total += len(items)
			count++
		}
	}
	if count == 0 {
		return 0
	}
	return float64(total) / float64(count)
}

// evidence takes the server's counters around each phase (the scale section runs alone on its server,
// so the deltas are the phase's).
type evidence struct {
	db     *sql.DB
	name   string
	before map[string]float64
	phases []phaseStatus
}

type phaseStatus struct {
	name  string
	delta map[string]float64
}

// hitRate is the share of buffer pool page requests served without reading the disk.
func (p phaseStatus) hitRate() float64 {
	req := p.delta["Innodb_buffer_pool_read_requests"]
	if req == 0 {
		return 1
	}
	return 1 - p.delta["Innodb_buffer_pool_reads"]/req
}

// rowsPerSelect is the rows the handler read (index lookups, next and previous entries, full scans) per
// SELECT: how much of the data a read statement touches.
func (p phaseStatus) rowsPerSelect() float64 {
	sel := p.delta["Com_select"]
	if sel == 0 {
		return 0
	}
	return p.handlerReads() / sel
}

func (p phaseStatus) handlerReads() float64 {
	return p.delta["Handler_read_key"] + p.delta["Handler_read_next"] + p.delta["Handler_read_prev"] +
		p.delta["Handler_read_rnd_next"] + p.delta["Handler_read_first"] + p.delta["Handler_read_last"]
}

func (ev *evidence) status(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	rows, err := ev.db.QueryContext(ctx, `SHOW GLOBAL STATUS`)
	if err != nil {
		return out
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if rows.Scan(&k, &v) == nil {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				out[k] = f
			}
		}
	}
	return out
}

func (ev *evidence) begin(ctx context.Context, name string) {
	ev.name, ev.before = name, ev.status(ctx)
}

func (ev *evidence) end(ctx context.Context) phaseStatus {
	after := ev.status(ctx)
	p := phaseStatus{name: ev.name, delta: map[string]float64{}}
	for k, v := range after {
		p.delta[k] = v - ev.before[k]
	}
	ev.phases = append(ev.phases, p)
	writes := p.delta["Com_insert"] + p.delta["Com_update"] + p.delta["Com_delete"]
	progress("scale: db %s: buffer pool hit %.4f (%.0f page reads from disk), %.0f selects (%.1f handler rows read each), %.0f writes, %.0f rows written, %.0f pages flushed, %.0f dirty pages at the start",
		p.name, p.hitRate(), p.delta["Innodb_buffer_pool_reads"], p.delta["Com_select"], p.rowsPerSelect(), writes,
		p.delta["Handler_write"]+p.delta["Handler_update"]+p.delta["Handler_delete"], p.delta["Innodb_buffer_pool_pages_flushed"],
		ev.before["Innodb_buffer_pool_pages_dirty"])
	return p
}

// report adds each phase's evidence, the size of the large model on disk, the buffer pool it uses and
// EXPLAIN of the hot statements at that size.
func (ev *evidence) report(ctx context.Context, rep *report, dsn, heavy string) error {
	for _, p := range ev.phases {
		rep.add("scale.db."+p.name+".bp_hit_pct", 100*p.hitRate(), "%")
		rep.add("scale.db."+p.name+".pages_from_disk", p.delta["Innodb_buffer_pool_reads"], "pages")
		if rows := p.delta["Handler_write"] + p.delta["Handler_update"] + p.delta["Handler_delete"]; rows > 0 {
			rep.add("scale.db."+p.name+".pages_flushed_per_row_written", p.delta["Innodb_buffer_pool_pages_flushed"]/rows, "pages")
		}
		rep.add("scale.db."+p.name+".rows_read_per_select", p.rowsPerSelect(), "rows")
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return err
	}
	cfg.InterpolateParams = true // ANALYZE cannot be prepared
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	var datadir string
	if err := db.QueryRowContext(ctx, `SELECT @@datadir`).Scan(&datadir); err != nil {
		return err
	}
	var pool float64
	if err := db.QueryRowContext(ctx, `SELECT @@innodb_buffer_pool_size`).Scan(&pool); err != nil {
		return err
	}
	rep.add("scale.db.buffer_pool", pool/(1<<20), "MiB")
	var totalBytes float64
	var convRows float64
	for _, t := range []string{"conversations", "messages", "channels", "user_versions", "channel_members", "late_messages"} {
		var rows, data, index float64
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t).Scan(&rows); err != nil {
			return err
		}
		if err := db.QueryRowContext(ctx, `SELECT data_length, index_length FROM information_schema.TABLES WHERE table_schema = ? AND table_name = ?`,
			preloadDB, t).Scan(&data, &index); err != nil {
			return err
		}
		file := data + index
		if fi, err := os.Stat(filepath.Join(datadir, preloadDB, t+".ibd")); err == nil {
			file = float64(fi.Size())
		}
		totalBytes += file
		if t == "conversations" {
			convRows = rows
		}
		progress("scale: size: %s: %.0f rows, %.0f MiB on disk (data %.0f MiB, indexes %.0f MiB), %.0f bytes per row",
			t, rows, file/(1<<20), data/(1<<20), index/(1<<20), file/max(rows, 1))
		if rows > 0 {
			rep.add("scale.db.size."+t+"_per_million_rows", file/(1<<20)/(rows/1e6), "MiB")
		}
	}
	rep.add("scale.db.size.total", totalBytes/(1<<20), "MiB")
	rep.add("scale.db.size.total_per_million_conversation_rows", totalBytes/(1<<20)/(convRows/1e6), "MiB")
	st := ev.status(ctx)
	rep.add("scale.db.pool_pages_with_data", st["Innodb_buffer_pool_pages_data"]*16/1024, "MiB")
	return explainHot(ctx, db, heavy)
}

// explainHot prints ANALYZE (EXPLAIN with the rows each step actually read) of the statements on the
// hot paths, at the large model's size, for heavy and a typical user.
func explainHot(ctx context.Context, db *sql.DB, heavy string) error {
	var typical string
	if err := db.QueryRowContext(ctx, `SELECT uid FROM user_versions WHERE uid >= 'u12345' ORDER BY uid LIMIT 1`).Scan(&typical); err != nil {
		return err
	}
	for _, q := range []struct {
		name, sql string
		args      []any
	}{
		{"sync rows of " + heavy + " (every row)", `SELECT v.version, c.* FROM user_versions v LEFT JOIN conversations c ON c.uid = v.uid WHERE v.uid = ?`, []any{heavy}},
		{"sync rows of a typical user", `SELECT v.version, c.* FROM user_versions v LEFT JOIN conversations c ON c.uid = v.uid WHERE v.uid = ?`, []any{typical}},
		{"a page (limit 200) of " + heavy + "'s incremental sync, as mysql.Store.RawUserRowsPage reads it",
			`SELECT v.version, c.* FROM user_versions v JOIN conversations c ON c.uid = v.uid AND c.follows = 0 AND c.version > ?
			AND c.hidden = 0 AND c.is_deleted = 0 WHERE v.uid = ? ORDER BY c.version LIMIT 264`, []any{1, heavy}},
		{"the followers of " + heavy, `SELECT c.* FROM conversations c WHERE c.uid = ? AND c.follows = 1`, []any{heavy}},
		{"user version", `SELECT version FROM user_versions WHERE uid = ?`, []any{typical}},
		{"recents of one group", `SELECT * FROM messages WHERE channel_key = ? AND channel_type = 2 AND message_seq BETWEEN ? AND ? ORDER BY channel_key, channel_type, message_seq DESC`,
			[]any{"sg1000", 0, 1 << 40}},
		{"channel lock", `SELECT * FROM channels WHERE channel_key = ? AND channel_type = 2`, []any{"sg1000"}},
		{"large channel's followers among named uids", `SELECT uid FROM channel_members WHERE channel_id = ? AND channel_type = 2 AND uid IN (?, ?)`, []any{"lg1", "u1", "u2"}},
		{"tombstone purge candidates", `SELECT uid FROM conversations WHERE is_deleted = 1 AND follows = 0 AND deleted_at_ms < ? LIMIT 500`, []any{time.Now().UnixMilli()}},
	} {
		lines, err := analyze(ctx, db, q.sql, q.args)
		if err != nil {
			return fmt.Errorf("analyze %s: %w", q.name, err)
		}
		progress("scale: ANALYZE %s:\n%s", q.name, lines)
	}
	return nil
}

// analyze runs MariaDB's ANALYZE on query and returns its plan table as text (r_rows: rows read).
func analyze(ctx context.Context, db *sql.DB, query string, args []any) (string, error) {
	rows, err := db.QueryContext(ctx, "ANALYZE "+query, args...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("    " + strings.Join(cols, " | ") + "\n")
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		dest := make([]any, len(cols))
		for i := range vals {
			dest[i] = &vals[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return "", err
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = v.String
			if !v.Valid {
				parts[i] = "NULL"
			}
		}
		b.WriteString("    " + strings.Join(parts, " | ") + "\n")
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	if b.Len() == 0 {
		return "", errors.New("no plan")
	}
	return b.String(), nil
}

// migrate applies the pending migrations to dsn's database.
func migrate(ctx context.Context, dsn string) error {
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Migrate(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// warmPool reads every index of the preloaded model once, so that a buffer pool large enough to hold it
// starts the measurements holding it, as a server that has run for a while would.
func warmPool(ctx context.Context, db *sql.DB) error {
	start := time.Now()
	for _, q := range []string{
		`SELECT COUNT(*) FROM ` + preloadDB + `.conversations FORCE INDEX (PRIMARY) WHERE last_msg_at >= 0`,
		`SELECT COUNT(*) FROM ` + preloadDB + `.conversations FORCE INDEX (conversations_by_version)`,
		`SELECT COUNT(*) FROM ` + preloadDB + `.conversations FORCE INDEX (conversations_tombstones)`,
		`SELECT COUNT(*) FROM ` + preloadDB + `.messages WHERE sent_at >= 0`,
		`SELECT COUNT(*) FROM ` + preloadDB + `.channels WHERE max_seq >= 0`,
		`SELECT COUNT(*) FROM ` + preloadDB + `.user_versions WHERE version >= 0`,
		`SELECT COUNT(*) FROM ` + preloadDB + `.channel_members`,
	} {
		var n int64
		if err := db.QueryRowContext(ctx, q).Scan(&n); err != nil {
			return fmt.Errorf("warm the buffer pool: %w", err)
		}
	}
	st := (&evidence{db: db}).status(ctx)
	free, total := st["Innodb_buffer_pool_pages_free"], st["Innodb_buffer_pool_pages_total"]
	progress("scale: buffer pool warmed in %s: %.0f of %.0f pages used", time.Since(start).Round(time.Second), total-free, total)
	return nil
}

// settle waits, at most limit, until the server has flushed the dirty pages a preload left (below 5% of
// the pool: below that InnoDB's page cleaner is in no hurry), so that the background flushing of the load does not slow the measurements.
func settle(ctx context.Context, db *sql.DB, limit time.Duration) {
	start := time.Now()
	for time.Since(start) < limit && ctx.Err() == nil {
		st := (&evidence{db: db}).status(ctx)
		dirty, total := st["Innodb_buffer_pool_pages_dirty"], st["Innodb_buffer_pool_pages_total"]
		if total == 0 {
			return
		}
		if dirty < total/20 {
			progress("scale: %.0f dirty pages left after %s", dirty, time.Since(start).Round(time.Second))
			return
		}
		progress("scale: waiting for %.0f dirty pages to be flushed", dirty)
		time.Sleep(10 * time.Second)
	}
}
