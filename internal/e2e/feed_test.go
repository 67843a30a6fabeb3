package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// TestChangeFeedKeepsCachedListsCurrent runs two API replicas that follow the change feed with
// SYNC_CACHE_MAX_AGE of a minute (the most the API accepts; the test takes seconds): once a user's list
// is cached, only the feed's announcements can make a replica read it again. Every user's sync on both replicas must still catch up with the model within
// seconds of the projector's commits, and a mutation made through one replica must show on the other.
func TestChangeFeedKeepsCachedListsCurrent(t *testing.T) { feedKeepsCachesCurrent(t) }

// TestChangeFeedKeepsLargeStatesCurrent is TestChangeFeedKeepsCachedListsCurrent with
// LARGE_CHANNEL_MEMBERS=3 (contract §5): the groups fan out at read time, and the replicas derive their
// members' conversations from the channel states they hold (readcache.Large), which only the feed's
// announcements can move on.
func TestChangeFeedKeepsLargeStatesCurrent(t *testing.T) {
	feedKeepsCachesCurrent(t, "LARGE_CHANNEL_MEMBERS", "3")
}

func feedKeepsCachesCurrent(t *testing.T, projectorEnv ...string) {
	s := newStack(t, 3, 200)
	group := testenv.Name("e2e-feed-")
	p := s.projector("projector", group, projectorEnv...)
	replica := func(name string) *apiClient {
		addr := testenv.FreeAddr(t)
		api := start(t, "api", name, map[string]string{"MYSQL_DSN": s.dsn, "API_HTTP_ADDR": addr,
			"KAFKA_BROKERS": strings.Join(s.brokers, ","), "KAFKA_CHANGES_TOPIC": s.changes, "SYNC_CACHE_MAX_AGE": "1m"})
		waitHTTP(t, api, "http://"+addr+"/readyz", 30*time.Second)
		return &apiClient{t: t, base: "http://" + addr, http: &http.Client{Timeout: 10 * time.Second}}
	}
	a, b := replica("api-a"), replica("api-b")

	cfg := trafficgen.Demo(10, 3, 400, seed(t))
	if len(projectorEnv) > 0 {
		// Every group on stored membership, so that some become large: with inline subscribers drawn per
		// group, one seed in eight left all three inline and nothing for the replicas to hold.
		cfg.InlineShare = 0
	}
	recs, _, err := trafficgen.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	model := refmodel.New(refmodel.Options{Window: 200})
	users := model.Users
	half := len(recs) / 2
	phase := func(name string, part []trafficgen.Record) {
		applyAll(t, model, part, false)
		s.produce(part)
		s.waitCommitted(group, 60*time.Second, p)
		start := time.Now()
		for _, u := range users() {
			for _, c := range []*apiClient{a, b} {
				eventuallySynced(t, c, model, u, 10*time.Second)
				checkFullSync(t, c, model, u, 3)
			}
		}
		t.Logf("%s: %d users on 2 replicas matched the model %s after the commit", name, len(users()), time.Since(start).Round(time.Millisecond))
	}
	phase("phase 1 (lists cached from here on)", recs[:half])
	phase("phase 2 (seen only through the feed)", recs[half:])
	if len(projectorEnv) > 0 {
		// The large groups' conversations came from the states the replicas hold, not from the database.
		for _, c := range []*apiClient{a, b} {
			if n := metricValue(t, c, `conv_api_large_cache_total{result="memory"}`); n == 0 {
				t.Errorf("%s: no large channel state served from memory", c.base)
			}
		}
	}

	// A mutation through replica a reaches replica b's cached list through the feed.
	conv := model.Sync("u1")[0]
	model.SetUnread("u1", conv.ChannelID, conv.ChannelType, 42)
	a.mutate("/conversations/setUnread", map[string]any{"uid": "u1", "channel_id": conv.ChannelID, "channel_type": conv.ChannelType, "unread": 42})
	checkFullSync(t, a, model, "u1", 3) // the replica that made the change knows at once
	eventuallySynced(t, b, model, "u1", 10*time.Second)
}

// eventuallySynced waits until the user's full sync has the model's conversations and counts.
func eventuallySynced(t *testing.T, c *apiClient, m *refmodel.Model, uid string, timeout time.Duration) {
	t.Helper()
	summary := func(rows []string) string { return strings.Join(rows, "; ") }
	var want []string
	for _, r := range m.Sync(uid) {
		want = append(want, fmt.Sprintf("%s/%d unread=%d last=%d readed=%d", r.ChannelID, r.ChannelType, r.Unread, r.LastMsgSeq, r.ReadedToMsgSeq))
	}
	deadline := time.Now().Add(timeout)
	for {
		var got []string
		for _, it := range c.sync(map[string]any{"uid": uid, "version": 0, "msg_count": 0}) {
			got = append(got, fmt.Sprintf("%s/%d unread=%d last=%d readed=%d", it.ChannelID, it.ChannelType, it.Unread, it.LastMsgSeq, it.ReadedToMsgSeq))
		}
		if summary(got) == summary(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s at %s: still %q after %s, want %q", uid, c.base, summary(got), timeout, summary(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue returns the value of one exported series (name with its labels, as exposed), 0 if absent.
func metricValue(t *testing.T, c *apiClient, series string) float64 {
	t.Helper()
	resp, err := c.http.Get(c.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}
