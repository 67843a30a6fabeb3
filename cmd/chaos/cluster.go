package main

// Faults across the nodes of a cluster (make chaos-cluster, contract §6): the broker leading the most
// partitions of the events topic killed with SIGKILL while events flow, then started again; a database
// replica frozen (SIGSTOP) and resumed; and, beside them, a check that no answer is older than one a
// user was already given.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/topicadmin"
)

// clustered reports whether the run was given a cluster's nodes to fault.
func (c config) clustered() bool { return c.BrokerPidFile != "" }

// readDSN is the database replica API replica i reads (they take the replicas in turn), with the
// run's database.
func (ch *chaos) readDSN(i int) string {
	if len(ch.cfg.ReadDSNs) == 0 {
		return ""
	}
	d := ch.cfg.ReadDSNs[i%len(ch.cfg.ReadDSNs)]
	return strings.TrimSuffix(d, "/") + "/" + ch.dbName
}

// pidOf reads a pid file.
func pidOf(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// leaderOfMost returns the id of the broker leading the most partitions of the events topic.
func (ch *chaos) leaderOfMost(ctx context.Context) (int, int, error) {
	c := &kafkago.Client{Addr: kafkago.TCP(ch.cfg.Brokers...), Timeout: 5 * time.Second}
	meta, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{ch.topics.events}})
	if err != nil {
		return 0, 0, err
	}
	count := map[int]int{}
	for _, t := range meta.Topics {
		for _, p := range t.Partitions {
			count[p.Leader.ID]++
		}
	}
	best, n := -1, 0
	for id, c := range count {
		if c > n || (c == n && id < best) {
			best, n = id, c
		}
	}
	if best < 0 {
		return 0, 0, fmt.Errorf("no leader for %s", ch.topics.events)
	}
	return best, n, nil
}

// committedSum is how many records the group has committed over every partition.
func (ch *chaos) committedSum(ctx context.Context, c *kafkago.Client) (int64, error) {
	committed, err := topicadmin.CommittedOffsets(ctx, c, ch.group, ch.topics.events)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, o := range committed {
		sum += max(0, o)
	}
	return sum, nil
}

// killLeader kills the broker leading the most partitions (SIGKILL) while the round's events flow,
// measures how long until the group commits again, then starts the broker with -broker-start and
// measures how long until every replica is ready.
func (ch *chaos) killLeader(ctx context.Context) error {
	time.Sleep(time.Second) // let the round's events flow first
	id, led, err := ch.leaderOfMost(ctx)
	if err != nil {
		return err
	}
	pidFile := fmt.Sprintf(ch.cfg.BrokerPidFile, id)
	pid, err := pidOf(pidFile)
	if err != nil {
		return fmt.Errorf("-broker-pidfile %s: %w", pidFile, err)
	}
	client := &kafkago.Client{Addr: kafkago.TCP(ch.cfg.Brokers...), Timeout: 3 * time.Second}
	base, _ := ch.committedSum(ctx, client)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 broker %d (pid %d): %w", id, pid, err)
	}
	killed := time.Now()
	stall := time.Duration(-1)
	for time.Since(killed) < 90*time.Second && ctx.Err() == nil {
		if sum, err := ch.committedSum(ctx, client); err == nil && sum > base {
			stall = time.Since(killed)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if stall < 0 {
		ch.stalls++
		ch.printf("  STALL: nothing committed for 90s after kill -9 of broker %d", id)
	}
	time.Sleep(2 * time.Second) // the cluster runs on two brokers for a while
	begin := time.Now()
	if err := shell(ctx, fmt.Sprintf(ch.cfg.BrokerStart, id)); err != nil {
		return fmt.Errorf("-broker-start: %w", err)
	}
	up := time.Since(begin)
	took, err := ch.allReady(ctx)
	if err != nil {
		return err
	}
	ch.restarts++
	ch.printf("  kill -9 of broker %d (leading %d of %d partitions): next commit %s after the kill; restarted in %s, every replica ready %s later",
		id, led, ch.cfg.Partitions, stall.Round(time.Millisecond), up.Round(time.Millisecond), took.Round(time.Millisecond))
	ch.recoveries = append(ch.recoveries, "leader-kill:"+stall.String())
	return nil
}

// freezeReplica stops a database replica's process (SIGSTOP) for -freeze, then resumes it.
func (ch *chaos) freezeReplica(ctx context.Context) error {
	time.Sleep(500 * time.Millisecond)
	file := ch.cfg.ReplicaPidFiles[ch.killRng.IntN(len(ch.cfg.ReplicaPidFiles))]
	pid, err := pidOf(file)
	if err != nil {
		return fmt.Errorf("-replica-pidfiles %s: %w", file, err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP replica (pid %d): %w", pid, err)
	}
	frozen := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(ch.cfg.Freeze):
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("SIGCONT replica (pid %d): %w", pid, err)
	}
	ch.printf("  database replica %s frozen (SIGSTOP) for %s, resumed", file, time.Since(frozen).Round(time.Millisecond))
	ch.recoveries = append(ch.recoveries, "replica-freeze:"+time.Since(frozen).Round(time.Millisecond).String())
	return nil
}

// olderCheck watches users' full lists through every API replica in turn and counts answers older
// than one the user was already given: a list (tombstones included, which are never purged here)
// whose newest version is below the newest one seen in an answer at least olderGrace before. The
// grace leaves out the milliseconds an announcement takes to reach the other API replicas, within
// which a list cached there is allowed (docs/proofs.md); a replica serving a lagging database would
// show as older by its lag.
type olderCheck struct {
	mu      sync.Mutex
	seen    map[string][]seenAt // per user, increasing versions with when each was first seen
	answers int
	older   int
}

type seenAt struct {
	version int64
	at      time.Time
}

const olderGrace = 500 * time.Millisecond

func (o *olderCheck) observe(uid string, version int64, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.answers++
	hist := o.seen[uid]
	for i := len(hist) - 1; i >= 0; i-- {
		if now.Sub(hist[i].at) >= olderGrace {
			if version < hist[i].version {
				o.older++
			}
			break
		}
	}
	if len(hist) == 0 || version > hist[len(hist)-1].version {
		o.seen[uid] = append(hist, seenAt{version, now})
	}
}

// startOlderCheck runs the check over the following devices' users until ctx ends.
func (ch *chaos) startOlderCheck(ctx context.Context) (*olderCheck, func()) {
	o := &olderCheck{seen: map[string][]seenAt{}}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range ch.cfg.Followers {
		uid := fmt.Sprintf("u%d", i+1)
		wg.Go(func() {
			for n := i; ctx.Err() == nil; n++ {
				addr := ch.pool.addrs[n%len(ch.pool.addrs)]
				status, body, err := ch.syncFull(ctx, addr, uid)
				if err == nil && status == 200 {
					var items []item
					if jsonErr := json.Unmarshal(body, &items); jsonErr == nil {
						var v int64
						for _, it := range items {
							v = max(v, it.Version)
						}
						o.observe(uid, v, time.Now())
					}
				}
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		})
	}
	return o, func() {
		cancel()
		wg.Wait()
	}
}

// syncFull is uid's full sync, tombstones included, on API replica addr.
func (ch *chaos) syncFull(ctx context.Context, addr, uid string) (int, []byte, error) {
	status, body, _, err := ch.pool.postTo(ctx, addr, "/conversation/sync", []byte(fmt.Sprintf(`{"uid":%q,"version":0,"msg_count":0,"include_deleted":1}`, uid)))
	return status, body, err
}
