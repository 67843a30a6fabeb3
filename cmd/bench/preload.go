package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/conversation"
)

// shape is the read model the scale section preloads: users with a long tail of conversation counts
// (lognormal, median about 4, mean about 10, clamped to maxPerUser; one user, heavyUID, has exactly
// heavyRows), spread over person chats, groups below the large-channel threshold with full recents
// windows, and a few large channels (contract §5) whose members follow them.
type shape struct {
	users     int
	rows      int // the conversation rows aimed at (the lognormal's mean is scaled to it)
	seed      uint64
	window    int // messages kept per group (the projector's default window)
	heavyRows int
}

// heavyUID is the preloaded user with shape.heavyRows conversations, in the middle of the uid range:
// the paged-sync figures use it.
func heavyUID(users int) string { return "u" + strconv.Itoa(users/2) }

const (
	preloadDB     = "convtest_scale"
	largeChannels = 10
	groupShare    = 0.45 // of the conversation rows, in groups; the rest (after large channels) person chats
	payloadLen    = 32
)

// preloadStats is what a preload wrote.
type preloadStats struct {
	users, convs, messages, channels, members int64
	heavy                                     int
}

// preload fills dsn's (empty, migrated) database with the shape by LOAD DATA LOCAL INFILE, in primary-key
// order, two tables at a time. It prints progress every chunk.
func preload(ctx context.Context, dsn string, sh shape) (preloadStats, error) {
	start := time.Now()
	rng := rand.New(rand.NewPCG(sh.seed, 99))
	n := sh.users
	// Conversation counts per user: lognormal with sigma 1.3, mean scaled to rows/users.
	const sigma = 1.3
	mu := math.Log(1.04*float64(sh.rows)/float64(n)) - sigma*sigma/2 // clamping and duplicates lose about 4%
	deg := make([]int32, n)
	heavyIdx := n/2 - 1
	total := 0
	for i := range deg {
		d := int(math.Exp(mu + sigma*rng.NormFloat64()))
		d = max(1, min(d, sh.heavyRows))
		if i == heavyIdx {
			d = sh.heavyRows
		}
		deg[i] = int32(d)
		total += d
	}
	// Stubs: each user once per conversation, shuffled, then cut into channels (a configuration model).
	stubs := make([]int32, 0, total)
	for i, d := range deg {
		for range d {
			stubs = append(stubs, int32(i))
		}
	}
	rng.Shuffle(len(stubs), func(i, j int) { stubs[i], stubs[j] = stubs[j], stubs[i] })
	// The heavy user's stubs would mostly land in groups; keep them all (duplicates within a channel are
	// dropped below), so the user ends near heavyRows.

	type channel struct {
		key     string
		typ     uint8
		members []int32
		maxSeq  int64
		at      int64 // last message, unix s
		large   bool
	}
	var chans []channel
	now := time.Now().Unix()
	past := func() int64 { return now - 3600 - rng.Int64N(30*86400) }
	pos := 0
	take := func(k int) []int32 {
		k = min(k, len(stubs)-pos)
		m := slices.Clone(stubs[pos : pos+k])
		pos += k
		slices.Sort(m)
		return slices.Compact(m)
	}
	for i := range largeChannels {
		size := []int{50_000, 30_000, 20_000, 20_000, 20_000, 10_000, 10_000, 10_000, 10_000, 10_000}[i] * sh.rows / 10_000_000
		chans = append(chans, channel{key: fmt.Sprintf("lg%d", i+1), typ: 2, members: take(max(size, 1_000)),
			maxSeq: int64(sh.window) + rng.Int64N(5_000), at: past(), large: true})
	}
	groupEnd := pos + int(groupShare*float64(len(stubs)))
	for g := 1; pos < groupEnd; g++ {
		size := 20 + rng.IntN(260) // 20..279, mean about 150: below the large-channel threshold
		chans = append(chans, channel{key: fmt.Sprintf("sg%d", g), typ: 2, members: take(size),
			maxSeq: int64(sh.window) + rng.Int64N(2_000), at: past()})
	}
	uid := func(i int32) string { return "u" + strconv.Itoa(int(i)+1) }
	for pos+1 < len(stubs) {
		a, b := stubs[pos], stubs[pos+1]
		pos += 2
		if a == b {
			continue
		}
		chans = append(chans, channel{key: conversation.PersonKey(uid(a), uid(b)), typ: 1, members: []int32{a, b},
			maxSeq: 1 + rng.Int64N(3), at: past()})
	}
	stubs = nil
	slices.SortFunc(chans, func(a, b channel) int { return strings.Compare(a.key, b.key) })
	progress("scale: preload shape: %d users, %d channels, generated in %s", n, len(chans), time.Since(start).Round(time.Millisecond))

	// Each user's conversations, for the conversations table in (uid, channel_id) order.
	perUser := make([][]int32, n)
	for ci := range chans {
		for _, m := range chans[ci].members {
			perUser[m] = append(perUser[m], int32(ci))
		}
	}
	order := make([]int32, n) // users in uid byte order
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return strings.Compare(uid(a), uid(b)) })
	peer := func(c *channel, u int32) string { // a person chat's channel_id, as u sees it
		if c.members[0] == u {
			return uid(c.members[1])
		}
		return uid(c.members[0])
	}
	chanID := func(c *channel, u int32) string {
		if c.typ == 1 {
			return peer(c, u)
		}
		return c.key
	}
	floor := func(c *channel) int64 { return max(1, c.maxSeq-int64(sh.window)+1) }

	db, err := openLoader(dsn)
	if err != nil {
		return preloadStats{}, err
	}
	defer db.Close()
	var st preloadStats
	st.users = int64(n)
	st.heavy = len(perUser[heavyIdx])
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go1 := func(f func() error) {
		go func() {
			err := f()
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	go1(func() error { // conversations, then user_versions
		var versions []int64
		err := loadTable(gctx, db, "conversations", `(uid, channel_id, channel_type, unread, readed_to_msg_seq, last_msg_seq,
			last_client_msg_no, last_msg_at, is_deleted, deleted_at_seq, deleted_at_ms, version, follows, hidden,
			base_arrivals, base_red_dots, base_max_seq, base_floor)`, &st.convs, func(w *bufio.Writer) error {
			r := rand.New(rand.NewPCG(sh.seed, 7))
			versions = make([]int64, n)
			for _, u := range order {
				cs := perUser[u]
				slices.SortFunc(cs, func(a, b int32) int { return strings.Compare(chanID(&chans[a], u), chanID(&chans[b], u)) })
				for _, ci := range cs {
					c := &chans[ci]
					unread := int64(0)
					if r.IntN(4) == 0 {
						unread = 1 + r.Int64N(min(c.maxSeq, 20))
					}
					version := c.at*1000 + r.Int64N(1000)
					versions[u] = max(versions[u], version)
					deleted, delSeq, delMS := 0, int64(0), int64(0)
					if !c.large && r.IntN(100) == 0 { // 1% tombstones
						deleted, delSeq, delMS, unread = 1, c.maxSeq, version, 0
					}
					follows, baseArr, baseMax, baseFloor := 0, int64(0), int64(0), int64(0)
					if c.large {
						follows, unread, baseArr, baseMax, baseFloor = 1, 0, c.maxSeq, c.maxSeq, c.maxSeq
					}
					fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\tc%s-%d\t%d\t%d\t%d\t%d\t%d\t%d\t0\t%d\t%d\t%d\t%d\n",
						uid(u), chanID(c, u), c.typ, unread, c.maxSeq-unread, c.maxSeq, c.key, c.maxSeq, c.at,
						deleted, delSeq, delMS, version, follows, baseArr, baseArr, baseMax, baseFloor)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		var uv int64
		return loadTable(gctx, db, "user_versions", "(uid, version)", &uv, func(w *bufio.Writer) error {
			for _, u := range order {
				if versions[u] > 0 {
					fmt.Fprintf(w, "%s\t%d\n", uid(u), versions[u])
				}
			}
			return nil
		})
	})
	go1(func() error { // channels, channel_members of large channels, the windows
		err := loadTable(gctx, db, "channels", `(channel_key, channel_type, max_seq, min_kept_seq, large, arrivals, red_dots,
			bc_max_seq, bc_client_msg_no, bc_msg_at, version, members)`, &st.channels, func(w *bufio.Writer) error {
			for i := range chans {
				c := &chans[i]
				if c.large {
					fmt.Fprintf(w, "%s\t%d\t%d\t%d\t1\t%d\t%d\t%d\tc%s-%d\t%d\t%d\t%d\n", c.key, c.typ, c.maxSeq, floor(c),
						c.maxSeq, c.maxSeq, c.maxSeq, c.key, c.maxSeq, c.at, c.at*1000, len(c.members))
				} else {
					fmt.Fprintf(w, "%s\t%d\t%d\t%d\t0\t0\t0\t0\t\t0\t0\t0\n", c.key, c.typ, c.maxSeq, floor(c))
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = loadTable(gctx, db, "channel_members", "(channel_id, channel_type, uid)", &st.members, func(w *bufio.Writer) error {
			for i := range chans {
				c := &chans[i]
				if !c.large {
					continue
				}
				ids := make([]string, len(c.members))
				for j, m := range c.members {
					ids[j] = uid(m)
				}
				slices.Sort(ids)
				for _, id := range ids {
					fmt.Fprintf(w, "%s\t%d\t%s\n", c.key, c.typ, id)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return loadTable(gctx, db, "messages", `(channel_key, channel_type, message_seq, message_id, client_msg_no, from_uid,
			channel_id, sent_at, red_dot, setting, expire, payload)`, &st.messages, func(w *bufio.Writer) error {
			r := rand.New(rand.NewPCG(sh.seed, 11))
			var id int64
			payload := make([]byte, payloadLen)
			const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
			for i := range chans {
				c := &chans[i]
				for seq := floor(c); seq <= c.maxSeq; seq++ {
					id++
					from := c.members[r.IntN(len(c.members))]
					to := c.key
					if c.typ == 1 {
						to = peer(c, from)
					}
					for j := range payload {
						payload[j] = letters[r.IntN(len(letters))]
					}
					fmt.Fprintf(w, "%s\t%d\t%d\t%d\tc%s-%d\t%s\t%s\t%d\t1\t0\t0\t%s\n", c.key, c.typ, seq, id, c.key, seq,
						uid(from), to, c.at-(c.maxSeq-seq), payload)
				}
			}
			return nil
		})
	})
	if err := errors.Join(<-errs, <-errs); err != nil {
		return st, err
	}
	progress("scale: preloaded %d conversations, %d users, %d channels (%d members of large ones), %d messages in %s",
		st.convs, st.users, st.channels, st.members, st.messages, time.Since(start).Round(time.Second))
	return st, nil
}

// openLoader opens dsn for LOAD DATA LOCAL INFILE from readers. Unique checks stay on: with them and
// foreign-key checks off, MariaDB 10.11 loads an empty table in its bulk mode, and a run here lost
// every row of three tables that way.
func openLoader(dsn string) (*sql.DB, error) {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	return db, nil
}

var readerSeq atomic.Int64

// loadTable streams the lines gen writes into table with LOAD DATA LOCAL INFILE, one statement (one
// transaction) per chunk of lines, counting them into *count and printing progress per chunk.
func loadTable(ctx context.Context, db *sql.DB, table, columns string, count *int64, gen func(w *bufio.Writer) error) error {
	const chunk = 250_000
	start := time.Now()
	lines := make(chan []byte, 4)
	var genErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // gen writes into a line splitter that hands out chunks
		defer wg.Done()
		defer close(lines)
		cw := &chunker{out: lines, ctx: ctx, limit: chunk}
		bw := bufio.NewWriterSize(cw, 1<<20)
		genErr = gen(bw)
		if genErr == nil {
			genErr = bw.Flush()
		}
		cw.flush()
	}()
	for buf := range lines {
		name := fmt.Sprintf("preload-%d", readerSeq.Add(1))
		mysql.RegisterReaderHandler(name, func() io.Reader { return bytes.NewReader(buf) })
		res, err := db.ExecContext(ctx, `LOAD DATA LOCAL INFILE 'Reader::`+name+`' INTO TABLE `+table+` `+columns)
		mysql.DeregisterReaderHandler(name)
		if err != nil {
			for range lines { // let the generator finish
			}
			wg.Wait()
			return fmt.Errorf("load %s: %w", table, err)
		}
		n, _ := res.RowsAffected()
		*count += n
		progress("scale: %s: %d rows loaded (%.0f rows/s)", table, *count, float64(*count)/time.Since(start).Seconds())
	}
	wg.Wait()
	return genErr
}

// chunker cuts what is written into chunks of limit whole lines.
type chunker struct {
	ctx   context.Context
	out   chan<- []byte
	buf   []byte
	lines int
	limit int
}

func (c *chunker) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	for _, b := range p {
		c.buf = append(c.buf, b)
		if b == '\n' {
			c.lines++
			if c.lines == c.limit {
				c.out <- c.buf
				c.buf, c.lines = make([]byte, 0, cap(c.buf)), 0
			}
		}
	}
	return len(p), nil
}

func (c *chunker) flush() {
	if len(c.buf) > 0 {
		c.out <- c.buf
	}
	c.buf = nil
}
