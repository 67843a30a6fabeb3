package projector

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/probes"
	"github.com/convsync/conversations/internal/testenv"
)

// tcpProxy forwards connections to upstream until cut: then it drops every open connection and closes
// new ones at once, as a network partition would look to the client.
type tcpProxy struct {
	ln       net.Listener
	upstream string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

func newTCPProxy(t *testing.T, upstream string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
	})
	go p.serve()
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *tcpProxy) forward(c net.Conn) {
	p.mu.Lock()
	down := p.down
	p.mu.Unlock()
	if down {
		_ = c.Close()
		return
	}
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		_, _ = c.Close(), up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
	_, _ = c.Close(), up.Close()
}

func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *tcpProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// The database becomes unreachable while records keep arriving, then comes back. Readiness must be
// false while it is down, the group's offsets must not move, and afterwards every message must have
// been counted exactly once.
func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 2)
	direct, dsn := testenv.Store(t, mysql.Options{})
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, cfg.Addr)
	cfg.Addr = proxy.addr()
	cfg.Timeout = time.Second
	cfg.ReadTimeout, cfg.WriteTimeout = 2*time.Second, 2*time.Second
	proxied, err := mysql.Open(cfg.FormatDSN(), mysql.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxied.Close() })

	const perChannel = 150
	subscribers := []string{"bob", "carol"}
	batch := func(from, to int64) []record {
		var recs []record
		for seq := from; seq <= to; seq++ {
			recs = append(recs, groupMsg(t, "g1", seq, "alice", subscribers), groupMsg(t, "g2", seq, "alice", subscribers))
		}
		return recs
	}
	produce(t, brokers, topic, batch(1, 50)...)
	group := testenv.Name("group.")
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group,
		BatchMaxRecords: 20, BatchMaxWait: 10 * time.Millisecond,
		RetryMinBackoff: 50 * time.Millisecond, RetryMaxBackoff: 300 * time.Millisecond}, proxied)
	kafka := probes.NewKafka(brokers, topic, dlq, nil)
	defer kafka.Close()
	// As cmd/projector wires them.
	checks := probes.Checks{Database: proxied.Ping, Kafka: kafka.Check, DeadLetter: kafka.CheckDeadLetter, Loop: p.Failing}
	start(t, p)
	waitCommittedToEnd(t, brokers, group, topic, 2, 20*time.Second)
	if r := checks.Readiness(t.Context()); !r.Ready {
		t.Fatalf("before the outage, readiness = %+v, want ready", r)
	}

	// Cut while records are arriving, so the cut may land inside a transaction, even its commit.
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for seq := int64(51); seq <= perChannel; seq += 10 {
			if err := produceErr(brokers, topic, batch(seq, seq+9)...); err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			time.Sleep(30 * time.Millisecond)
		}
	}()
	time.Sleep(80 * time.Millisecond)
	proxy.cut()
	var down probes.Readiness
	testenv.Eventually(t, 10*time.Second, "readiness reports the database down", func() bool {
		down = checks.Readiness(t.Context())
		return !down.Ready && down.Database == "unreachable" && down.Loop == "retrying apply"
	})
	<-produced
	frozen := committed(t, brokers, group, topic, 2)
	time.Sleep(500 * time.Millisecond) // several retries
	if now := committed(t, brokers, group, topic, 2); jsonString(now) != jsonString(frozen) {
		t.Fatalf("offsets moved while the database was down: %v, then %v", frozen, now)
	}
	end := endOffsets(t, brokers, topic, 2)
	if jsonString(frozen) == jsonString(end) {
		t.Fatalf("everything was committed before the cut took effect (%v): the outage tested nothing", end)
	}
	proxy.restore()

	waitCommittedToEnd(t, brokers, group, topic, 2, 30*time.Second)
	testenv.Eventually(t, 5*time.Second, "readiness recovers", func() bool { return checks.Readiness(t.Context()).Ready })
	for _, r := range rows(t, direct) {
		if r.UID == "alice" {
			continue
		}
		if r.Unread != perChannel || r.LastMsgSeq != perChannel {
			t.Errorf("row %s/%s: unread %d, last_msg_seq %d; want %d, %d (no loss, no double count)",
				r.UID, r.ChannelID, r.Unread, r.LastMsgSeq, perChannel, perChannel)
		}
	}
	if n := metricValue(t, reg, "conv_projector_messages_applied_total"); n != 2*perChannel {
		t.Errorf("messages_applied_total = %v, want %d", n, 2*perChannel)
	}
	if n := metricValue(t, reg, "conv_projector_apply_failures_total"); n == 0 {
		t.Errorf("apply_failures_total = 0, want the failures during the outage counted")
	}
	t.Logf("while down: %+v; apply failures %v, duplicates %v", down, metricValue(t, reg, "conv_projector_apply_failures_total"),
		metricValue(t, reg, "conv_projector_duplicates_skipped_total"))
}
