package e2e

import (
	"bytes"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// syncItem is one conversation of a /conversation/sync answer (contract §2.1).
type syncItem struct {
	ChannelID       string    `json:"channel_id"`
	ChannelType     uint8     `json:"channel_type"`
	Unread          int64     `json:"unread"`
	Timestamp       int64     `json:"timestamp"`
	LastMsgSeq      int64     `json:"last_msg_seq"`
	LastClientMsgNo string    `json:"last_client_msg_no"`
	ReadedToMsgSeq  int64     `json:"readed_to_msg_seq"`
	Version         int64     `json:"version"`
	IsDeleted       int       `json:"is_deleted"`
	Recents         []syncMsg `json:"recents"`
}

type syncMsg struct {
	Header struct {
		NoPersist uint8 `json:"no_persist"`
		RedDot    uint8 `json:"red_dot"`
		SyncOnce  uint8 `json:"sync_once"`
	} `json:"header"`
	Setting      uint8  `json:"setting"`
	MessageID    int64  `json:"message_id"`
	MessageIDStr string `json:"message_idstr"`
	ClientMsgNo  string `json:"client_msg_no"`
	MessageSeq   int64  `json:"message_seq"`
	FromUID      string `json:"from_uid"`
	ChannelID    string `json:"channel_id"`
	ChannelType  uint8  `json:"channel_type"`
	Expire       uint32 `json:"expire"`
	Timestamp    int64  `json:"timestamp"`
	Payload      string `json:"payload"`
}

type apiClient struct {
	t    *testing.T
	base string
	http *http.Client
}

// post sends a JSON body and decodes the answer into out; it fails the test unless the status is 200.
func (c *apiClient) post(path string, body, out any) {
	c.t.Helper()
	b, _ := json.Marshal(body)
	resp, err := c.http.Post(c.base+path, "application/json", bytes.NewReader(b))
	if err != nil {
		c.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("POST %s %s: %d %s", path, b, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		c.t.Fatalf("POST %s: answer %s: %v", path, raw, err)
	}
}

func (c *apiClient) sync(req map[string]any) []syncItem {
	c.t.Helper()
	var items []syncItem
	c.post("/conversation/sync", req, &items)
	if items == nil {
		c.t.Fatalf("sync %v answered null, want an array", req)
	}
	return items
}

// mutate calls a mutation endpoint and checks its {"status":200}.
func (c *apiClient) mutate(path string, body map[string]any) {
	c.t.Helper()
	var res struct {
		Status int `json:"status"`
	}
	c.post(path, body, &res)
	if res.Status != 200 {
		c.t.Fatalf("POST %s: status %d in the body", path, res.Status)
	}
}

// emptyDatabase creates a database without the schema, for the migrate command to fill.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	admin := os.Getenv("TEST_MYSQL_DSN")
	cfg, err := mysql.ParseDSN(admin)
	if err != nil {
		t.Fatalf("TEST_MYSQL_DSN: %v", err)
	}
	db, err := sql.Open("mysql", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	name := testenv.Name("convtest_e2e_")
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept database %s of the failed test", name)
			return
		}
		if db, err := sql.Open("mysql", admin); err == nil {
			_, _ = db.Exec("DROP DATABASE " + name)
			db.Close()
		}
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}

// TestSyncThroughAPI is the whole path: cmd/migrate prepares an empty database and the topics, events go
// to Kafka, the projector applies them, and POST /conversation/sync of cmd/api answers every user exactly
// what the model says: conversations in order, unread counts, read points, recents (trimmed by
// msg_count, last_msg_seqs and delete points, person messages addressed to their recipient). API
// mutations in the middle, then more events, then an incremental sync that returns exactly the rows
// changed since.
func TestSyncThroughAPI(t *testing.T) {
	parallel(t)
	need(t, "api")
	s := &stack{t: t, brokers: testenv.KafkaBrokers(t), window: window}
	s.dsn = emptyDatabase(t)
	s.topic = testenv.Name("test.events.")
	s.dlq, s.changes = s.topic+".dlq", s.topic+".changes"
	testenv.DeleteTopicsAtCleanup(t, s.brokers, s.topic, s.dlq, s.changes)
	mig := start(t, "migrate", "migrate", map[string]string{"MYSQL_DSN": s.dsn, "KAFKA_BROKERS": strings.Join(s.brokers, ","),
		"KAFKA_TOPIC": s.topic, "KAFKA_DLQ_TOPIC": s.dlq, "KAFKA_CHANGES_TOPIC": s.changes, "KAFKA_PARTITIONS": "3"})
	select {
	case <-mig.done:
		if mig.err != nil {
			t.Fatalf("migrate: %v\n%s", mig.err, tail(mig.logPath, 20))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("migrate did not finish within 60s")
	}
	s.open()

	group := testenv.Name("e2e-api-")
	p := s.projector("projector", group)
	apiAddr := testenv.FreeAddr(t)
	api := start(t, "api", "api", map[string]string{"MYSQL_DSN": s.dsn, "API_HTTP_ADDR": apiAddr})
	waitHTTP(t, api, "http://"+apiAddr+"/readyz", 30*time.Second)
	c := &apiClient{t: t, base: "http://" + apiAddr, http: &http.Client{Timeout: 10 * time.Second}}

	cfg := trafficgen.Demo(12, 4, 600, seed(t))
	cfg.RedDotOffRate, cfg.SyncOnceRate = 0.1, 0.02
	recs, _, err := trafficgen.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	model := refmodel.New(refmodel.Options{Window: window})
	users := make([]string, 0, cfg.Users)
	for i := 1; i <= cfg.Users; i++ {
		users = append(users, "u"+strconv.Itoa(i))
	}

	// Phase 1: events in, every user's full sync equals the model.
	half := len(recs) / 2
	applyAll(t, model, recs[:half], false)
	s.produce(recs[:half])
	s.waitCommitted(group, 60*time.Second, p)
	compared := 0
	for _, u := range users {
		compared += checkFullSync(t, c, model, u, 3)
	}
	first := c.sync(map[string]any{"uid": "u1", "version": 0, "msg_count": 1})
	var seen int64
	for _, it := range first {
		seen = max(seen, it.Version)
	}
	mark := model.Now()
	if len(first) < 4 {
		t.Fatalf("u1 has %d conversations after phase 1, want several", len(first))
	}

	// API mutations, mirrored in the model: u1 reads one conversation, sets another's count, deletes a third.
	ops := []struct {
		path string
		it   syncItem
	}{{"/conversations/clearUnread", first[0]}, {"/conversations/setUnread", first[1]}, {"/conversations/delete", first[2]}}
	for _, op := range ops {
		body := map[string]any{"uid": "u1", "channel_id": op.it.ChannelID, "channel_type": op.it.ChannelType}
		switch op.path {
		case "/conversations/clearUnread":
			model.ClearUnread("u1", op.it.ChannelID, op.it.ChannelType)
		case "/conversations/setUnread":
			body["unread"] = 7
			model.SetUnread("u1", op.it.ChannelID, op.it.ChannelType, 7)
		default:
			model.Delete("u1", op.it.ChannelID, op.it.ChannelType)
		}
		c.mutate(op.path, body)
	}
	checkFullSync(t, c, model, "u1", 3)

	// Phase 2: more events (some revive the tombstone), then full and incremental syncs.
	applyAll(t, model, recs[half:], false)
	s.produce(recs[half:])
	s.waitCommitted(group, 60*time.Second, p)
	for _, u := range users {
		compared += checkFullSync(t, c, model, u, 5)
	}
	s.compare(model)

	changed := map[string]bool{}
	for _, r := range model.Rows() {
		if r.UID == "u1" && r.ChangedAt > mark {
			changed[fmt.Sprintf("%s/%d/%v", r.ChannelID, r.ChannelType, r.IsDeleted)] = true
		}
	}
	inc := c.sync(map[string]any{"uid": "u1", "version": seen, "msg_count": 0, "include_deleted": 1})
	got := map[string]bool{}
	for _, it := range inc {
		got[fmt.Sprintf("%s/%d/%v", it.ChannelID, it.ChannelType, it.IsDeleted == 1)] = true
		if len(it.Recents) != 0 {
			t.Errorf("msg_count 0: %s has %d recents", it.ChannelID, len(it.Recents))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(changed) {
		t.Errorf("incremental sync from version %d: got %v, want the rows changed since: %v", seen, got, changed)
	}

	// last_msg_seqs trims recents to what the client does not have.
	conv := model.Sync("u1")[0]
	lastSeqs := fmt.Sprintf("%s:%d:%d", conv.ChannelID, conv.ChannelType, conv.LastMsgSeq-2)
	items := c.sync(map[string]any{"uid": "u1", "version": 0, "msg_count": 10, "last_msg_seqs": lastSeqs})
	want := model.Recents(conv, conv.LastMsgSeq-2, 10)
	if len(items) == 0 || items[0].ChannelID != conv.ChannelID || len(items[0].Recents) != len(want) {
		t.Errorf("last_msg_seqs %s: got %+v, want %d recents", lastSeqs, items[0], len(want))
	}
	t.Logf("api: events=%d users=%d conversations compared=%d (full syncs before and after mutations), incremental rows=%d",
		len(recs), len(users), compared, len(inc))
}

// checkFullSync compares a user's full sync with the model and returns how many conversations it compared.
func checkFullSync(t *testing.T, c *apiClient, m *refmodel.Model, uid string, msgCount int) int {
	t.Helper()
	got := c.sync(map[string]any{"uid": uid, "version": 0, "last_msg_seqs": nil, "msg_count": msgCount})
	want := m.Sync(uid)
	if len(got) != len(want) {
		t.Errorf("%s: sync has %d conversations, want %d", uid, len(got), len(want))
		return 0
	}
	for i, w := range want {
		g := got[i]
		gotRow := fmt.Sprintf("%s/%d unread=%d ts=%d last=%d/%s readed=%d", g.ChannelID, g.ChannelType, g.Unread, g.Timestamp,
			g.LastMsgSeq, g.LastClientMsgNo, g.ReadedToMsgSeq)
		wantRow := fmt.Sprintf("%s/%d unread=%d ts=%d last=%d/%s readed=%d", w.ChannelID, w.ChannelType, w.Unread, w.Timestamp,
			w.LastMsgSeq, w.LastClientMsgNo, w.ReadedToMsgSeq)
		if gotRow != wantRow {
			t.Errorf("%s: conversation %d is %s, want %s", uid, i, gotRow, wantRow)
			continue
		}
		if g.Version <= 0 {
			t.Errorf("%s: %s has version %d", uid, g.ChannelID, g.Version)
		}
		wr := m.Recents(w, 0, msgCount)
		if len(g.Recents) != len(wr) {
			t.Errorf("%s: %s has %d recents, want %d", uid, g.ChannelID, len(g.Recents), len(wr))
			continue
		}
		for j, wm := range wr {
			gm := g.Recents[j]
			if gm.MessageSeq != wm.Seq || gm.MessageID != wm.MessageID || gm.MessageIDStr != strconv.FormatInt(wm.MessageID, 10) ||
				gm.ClientMsgNo != wm.ClientMsgNo || gm.FromUID != wm.FromUID || gm.ChannelID != wm.ChannelID ||
				gm.ChannelType != w.ChannelType || gm.Timestamp != wm.Timestamp || gm.Header.RedDot != wm.RedDot ||
				gm.Payload != base64.StdEncoding.EncodeToString(wm.Payload) {
				t.Errorf("%s: %s recent %d is %+v, want %+v", uid, g.ChannelID, j, gm, wm)
			}
		}
	}
	return len(want)
}
