package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	mysqlstore "github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/trafficgen"
)

// syncUser is one user of a sync load: who, and the version an incremental sync starts from.
type syncUser struct {
	uid     string
	version int64
}

// loadDirect applies a workload to a fresh database through the store (the projector's write path,
// without Kafka) and returns the DSN.
func (e *env) loadDirect(ctx context.Context, cfg trafficgen.Config) (string, error) {
	dsn, err := e.freshDB(ctx)
	if err != nil {
		return "", err
	}
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{MaxOpenConns: 2})
	if err != nil {
		return "", err
	}
	defer s.Close()
	records, _, err := trafficgen.Generate(cfg)
	if err != nil {
		return "", err
	}
	skip := conversation.DefaultSkipSet()
	batch := make([]conversation.Event, 0, 500)
	for i, r := range records {
		ev, err := conversation.DecodeEvent(r.Value, time.Now(), 1<<20)
		if err != nil {
			return "", err
		}
		batch = append(batch, ev)
		if len(batch) == cap(batch) || i == len(records)-1 {
			projected, _ := skip.Filter(batch)
			if _, err := s.ApplyBatch(ctx, projected); err != nil {
				return "", err
			}
			batch = batch[:0]
		}
		if i%5000 == 0 {
			progress("loading %d/%d events", i, len(records))
		}
	}
	return dsn, nil
}

// syncUsers lists every user with conversations and, for incremental syncs, a version that leaves
// about `newer` of the user's rows changed since.
func syncUsers(ctx context.Context, dsn string, newer int) ([]syncUser, error) {
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{MaxOpenConns: 1})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	rows, err := s.DB().QueryContext(ctx, `SELECT uid, version FROM conversations ORDER BY uid, version DESC`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var users []syncUser
	seen := 0
	for rows.Next() {
		var uid string
		var v int64
		if err := rows.Scan(&uid, &v); err != nil {
			return nil, err
		}
		if len(users) == 0 || users[len(users)-1].uid != uid {
			users, seen = append(users, syncUser{uid: uid}), 0
		}
		seen++
		if seen == newer+1 {
			users[len(users)-1].version = v
		}
	}
	return users, rows.Err()
}

type syncBody struct {
	UID      string `json:"uid"`
	Version  int64  `json:"version"`
	MsgCount int    `json:"msg_count"`
}

// apiLoad runs sync requests against an API process: full syncs (version 0) or incremental ones.
func apiLoad(ctx context.Context, api *proc, dbPID int, users []syncUser, msgCount, concurrency int, d time.Duration, incremental bool) loadResult {
	bodies := make([][]byte, len(users))
	for i, u := range users {
		b := syncBody{UID: u.uid, MsgCount: msgCount}
		if incremental {
			b.Version = u.version
		}
		bodies[i], _ = json.Marshal(b)
	}
	c := newSyncClient(api.addr, concurrency)
	pids := []int{api.cmd.Process.Pid}
	if dbPID > 0 {
		pids = append(pids, dbPID)
	}
	return closedLoop(ctx, concurrency, d, pids, func(ctx context.Context, rnd *rand.Rand) error {
		_, err := c.post(ctx, bodies[rnd.IntN(len(bodies))])
		return err
	})
}

// directLoad issues the SQL a sync costs straight from Go through the store, with no HTTP and no JSON:
// the baseline of the API figures.
func directLoad(ctx context.Context, dsn string, dbPID int, users []syncUser, msgCount, concurrency int, d time.Duration, incremental bool) (loadResult, error) {
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{MaxOpenConns: concurrency})
	if err != nil {
		return loadResult{}, err
	}
	defer s.Close()
	var pids []int
	if dbPID > 0 {
		pids = []int{dbPID}
	}
	return closedLoop(ctx, concurrency, d, pids, func(ctx context.Context, rnd *rand.Rand) error {
		u := users[rnd.IntN(len(users))]
		q := conversation.Query{UID: u.uid, MaxFull: 1000}
		if incremental {
			q.Version = u.version
		}
		all, _, err := s.UserRows(ctx, u.uid)
		if err != nil {
			return err
		}
		rows := conversation.Select(all, q)
		ranges := make([]conversation.SeqRange, 0, len(rows))
		for i := range rows {
			r := &rows[i]
			ch := conversation.ChannelKeyOf(u.uid, conversation.Channel{ID: r.ChannelID, Type: r.ChannelType})
			ranges = append(ranges, conversation.RecentsRange(r, ch, 0, msgCount))
		}
		_, err = s.Recents(ctx, ranges)
		return err
	}), nil
}

func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fmtMS(d time.Duration) string { return fmt.Sprintf("%.1f ms", ms(d)) }
