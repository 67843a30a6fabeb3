package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/topicadmin"
)

// followersRun is the devices following users while the rounds run.
type followersRun struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	list   []*follower
	errs   []error
	mu     sync.Mutex
}

// startFollowers starts cfg.Followers devices, each on its own user, syncing incrementally in a loop.
func (ch *chaos) startFollowers(ctx context.Context) *followersRun {
	ctx, cancel := context.WithCancel(ctx)
	fr := &followersRun{cancel: cancel}
	for i := range ch.cfg.Followers {
		f := &follower{uid: fmt.Sprintf("u%d", i+1), rows: map[convID]item{}}
		fr.list = append(fr.list, f)
		fr.wg.Go(func() {
			for ctx.Err() == nil {
				if err := f.step(ctx, ch.pool); err != nil && ctx.Err() == nil {
					fr.mu.Lock()
					fr.errs = append(fr.errs, err)
					fr.mu.Unlock()
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
	}
	ch.followers = fr
	return fr
}

func (fr *followersRun) stop() error {
	fr.cancel()
	fr.wg.Wait()
	if len(fr.errs) > 0 {
		return fmt.Errorf("a following device failed: %w", fr.errs[0])
	}
	return nil
}

// restartDatabase restarts the database with -db-restart, or cuts chaos's proxy for -outage. First the
// group drains and every API replica syncs the following devices' users, so their lists and recents
// are cached and current; during the outage the same syncs are made again: each must answer 503 or
// exactly what it answered before (from memory, or from the outage path). Then it times how long
// until every replica is ready again.
func (ch *chaos) restartDatabase(ctx context.Context) error {
	ch.drain(ctx, 90*time.Second)
	before := map[string]string{}
	for _, a := range ch.pool.addrs {
		for i := range ch.cfg.Followers {
			status, body, _, err := ch.syncOn(ctx, a, i)
			if err == nil && status == 200 {
				before[a+"/"+strconv.Itoa(i)] = string(body)
			}
		}
	}
	ch.c.outage.Store(true)
	defer ch.c.outage.Store(false)
	begin := time.Now()
	var down time.Duration
	probing, stopProbing := context.WithCancel(ctx)
	probed := make(chan [2]int)
	go func() { probed <- ch.probeDuringOutage(probing, before) }()
	if ch.cfg.DBRestart != "" {
		err := shell(ctx, ch.cfg.DBRestart)
		stopProbing()
		if err != nil {
			<-probed
			return fmt.Errorf("-db-restart: %w", err)
		}
		down = time.Since(begin)
	} else {
		d, err := time.ParseDuration(ch.cfg.OutageFor)
		if err != nil {
			stopProbing()
			<-probed
			return fmt.Errorf("-outage: %w", err)
		}
		ch.proxy.cut()
		time.Sleep(d)
		stopProbing()
		ch.proxy.restore()
		down = d
	}
	p := <-probed
	ch.outageAnswered += p[0]
	ch.outageDiffering += p[1]
	took, err := ch.allReady(ctx)
	if err != nil {
		return err
	}
	ch.restarts++
	ch.printf("  database restart: down %s, every replica ready %s later; during it: %d syncs answered 200 (%d differing from before), 503 %d, outage-path reads %d",
		down.Round(time.Millisecond), took.Round(time.Millisecond), p[0], p[1], ch.c.outage503.Load(), ch.c.outageReads.Load())
	ch.recoveries = append(ch.recoveries, "db:"+took.String())
	return nil
}

// syncOn makes following device i's user's full sync on API replica addr, also telling whether the
// answer came from the outage path (X-Conv-Outage).
func (ch *chaos) syncOn(ctx context.Context, addr string, i int) (int, []byte, bool, error) {
	return ch.pool.postTo(ctx, addr, "/conversation/sync", []byte(fmt.Sprintf(`{"uid":"u%d","version":0,"msg_count":1}`, i+1)))
}

// probeDuringOutage repeats the syncs of before until ctx ends and returns how many answered 200 and how
// many of those differed from before.
func (ch *chaos) probeDuringOutage(ctx context.Context, before map[string]string) [2]int {
	var answered, differing int
	for ctx.Err() == nil {
		for _, a := range ch.pool.addrs {
			for i := range ch.cfg.Followers {
				want, ok := before[a+"/"+strconv.Itoa(i)]
				if !ok {
					continue
				}
				status, body, outage, err := ch.syncOn(ctx, a, i)
				if err != nil || status != 200 {
					continue
				}
				answered++
				// With database replicas (make chaos-cluster) a sync during the primary's outage may be a
				// fresh read of a replica, not the outage path: the byte-for-byte rule is the outage path's.
				if string(body) != want && (outage || len(ch.cfg.ReadDSNs) == 0) {
					differing++
				}
				if string(body) != want && !outage && len(ch.cfg.ReadDSNs) > 0 {
					ch.replicaAnswersDiffering++
					if ch.replicaAnswersDiffering == 1 {
						_ = os.WriteFile(filepath.Join(ch.cfg.LogDir, "outage-replica-answer.txt"),
							[]byte("before:\n"+want+"\nduring:\n"+string(body)+"\n"), 0o644)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return [2]int{answered, differing}
}

// restartBroker runs -kafka-restart, if given, and times how long until every replica is ready again.
func (ch *chaos) restartBroker(ctx context.Context) error {
	if ch.cfg.KafkaRestart == "" {
		ch.printf("  broker restart: skipped (no -kafka-restart: chaos never restarts a broker it was not given)")
		return nil
	}
	ch.c.outage.Store(true)
	defer ch.c.outage.Store(false)
	begin := time.Now()
	if err := shell(ctx, ch.cfg.KafkaRestart); err != nil {
		return fmt.Errorf("-kafka-restart: %w", err)
	}
	down := time.Since(begin)
	took, err := ch.allReady(ctx)
	if err != nil {
		return err
	}
	ch.restarts++
	ch.printf("  broker restart: took %s, every replica ready %s later", down.Round(time.Millisecond), took.Round(time.Millisecond))
	ch.recoveries = append(ch.recoveries, "kafka:"+took.String())
	return nil
}

// allReady waits until every projector and API replica answers /readyz 200, and a sync goes through.
func (ch *chaos) allReady(ctx context.Context) (time.Duration, error) {
	begin := time.Now()
	for _, r := range append(append([]*replica{}, ch.projs...), ch.apis...) {
		if _, err := r.waitOK(ctx, "/readyz", 120*time.Second); err != nil {
			return 0, err
		}
	}
	return time.Since(begin), nil
}

func shell(ctx context.Context, command string) error {
	cmd := exec.CommandContext(ctx, "bash", "-c", command)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// drain waits until the group committed every record of the events topic. Past bound it counts a stall
// and goes on waiting, up to four times as long; it returns how long it took.
func (ch *chaos) drain(ctx context.Context, bound time.Duration) time.Duration {
	begin := time.Now()
	client := &kafkago.Client{Addr: kafkago.TCP(ch.cfg.Brokers...), Timeout: 5 * time.Second}
	stalled := false
	for {
		if done, _ := ch.committedToEnd(ctx, client); done {
			return time.Since(begin)
		}
		if !stalled && time.Since(begin) > bound {
			stalled = true
			ch.stalls++
			ch.printf("  STALL: the group has not committed every record after %s", bound)
		}
		if time.Since(begin) > 4*bound || ctx.Err() != nil {
			return time.Since(begin)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (ch *chaos) committedToEnd(ctx context.Context, c *kafkago.Client) (bool, error) {
	ends, err := topicadmin.EndOffsets(ctx, c, ch.topics.events)
	if err != nil {
		return false, err
	}
	committed, err := topicadmin.CommittedOffsets(ctx, c, ch.group, ch.topics.events)
	if err != nil {
		return false, err
	}
	for p, end := range ends {
		if end > 0 && committed[p] < end {
			return false, nil
		}
	}
	return true, nil
}

func randomHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func joinComma(s []string) string { return strings.Join(s, ",") }

func with(base, extra map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(extra))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}
