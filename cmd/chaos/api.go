package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"
)

// counters are what the run's clients saw; every field is safe for concurrent use.
type counters struct {
	requests    atomic.Int64
	faults      atomic.Int64 // 5xx outside a database or broker outage: must stay 0
	outage503   atomic.Int64 // 503 while the database was down: the contract's answer to retry
	connErrors  atomic.Int64 // a replica killed under the request
	outage      atomic.Bool
	outageReads atomic.Int64 // 200 answers marked as served from the outage path
}

// apiPool sends requests to a random live API replica.
type apiPool struct {
	addrs  []string
	client *http.Client
	c      *counters
}

// post sends body to path on one replica and returns the status and body. Transport errors (a replica
// being killed) come back as err.
func (a *apiPool) post(ctx context.Context, path string, body []byte) (int, []byte, error) {
	status, raw, _, err := a.postTo(ctx, a.addrs[rand.N(len(a.addrs))], path, body)
	return status, raw, err
}

// postTo is post to the replica at addr, also telling whether the answer came from the outage path
// (X-Conv-Outage).
func (a *apiPool) postTo(ctx context.Context, addr, path string, body []byte) (int, []byte, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	a.c.requests.Add(1)
	res, err := a.client.Do(req)
	if err != nil {
		a.c.connErrors.Add(1)
		return 0, nil, false, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		a.c.connErrors.Add(1)
		return 0, nil, false, err
	}
	outage := res.Header.Get("X-Conv-Outage") != ""
	switch {
	case res.StatusCode == http.StatusServiceUnavailable && a.c.outage.Load():
		a.c.outage503.Add(1)
	case res.StatusCode >= 500:
		a.c.faults.Add(1)
	case res.StatusCode == 200 && outage:
		a.c.outageReads.Add(1)
	}
	return res.StatusCode, raw, outage, nil
}

// must posts until a replica answers 200 (replicas die, the database restarts) and decodes the answer
// into out when out is not nil. It gives up when ctx ends or an answer is a 4xx, which is a bug here.
func (a *apiPool) must(ctx context.Context, path string, body any, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	for {
		status, raw, err := a.post(ctx, path, b)
		switch {
		case err == nil && status == 200:
			if out == nil {
				return nil
			}
			return json.Unmarshal(raw, out)
		case err == nil && status < 500:
			return fmt.Errorf("POST %s %s: %d %s", path, b, status, raw)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("POST %s: %w (last: %d %v)", path, ctx.Err(), status, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// item is one conversation of a sync answer.
type item struct {
	ChannelID      string `json:"channel_id"`
	ChannelType    uint8  `json:"channel_type"`
	Unread         int64  `json:"unread"`
	Timestamp      int64  `json:"timestamp"`
	LastMsgSeq     int64  `json:"last_msg_seq"`
	ReadedToMsgSeq int64  `json:"readed_to_msg_seq"`
	Version        int64  `json:"version"`
	IsDeleted      int    `json:"is_deleted"`
}

type convID struct {
	id  string
	typ uint8
}

// follower is a device of one user that keeps its list with incremental syncs, as a client does.
type follower struct {
	uid     string
	version int64
	rows    map[convID]item
}

// step runs one incremental sync (a full one first) and merges it.
func (f *follower) step(ctx context.Context, a *apiPool) error {
	var items []item
	if err := a.must(ctx, "/conversation/sync", map[string]any{"uid": f.uid, "version": f.version, "msg_count": 1, "include_deleted": 1}, &items); err != nil {
		return err
	}
	for _, it := range items {
		k := convID{it.ChannelID, it.ChannelType}
		if it.IsDeleted == 1 {
			delete(f.rows, k)
		} else {
			f.rows[k] = it
		}
		f.version = max(f.version, it.Version)
	}
	return nil
}
