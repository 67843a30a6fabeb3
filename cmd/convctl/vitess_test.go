package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// TestPurgeUserOnVitess: with VITESS_SHARDS, purge-user works on the read model sharded by user through
// vtgate (make test-vitess; elsewhere it skips), and rebuild refuses, naming the way that works there.
func TestPurgeUserOnVitess(t *testing.T) {
	keyspace, shards := testenv.VitessKeyspace(t)
	ctx := context.Background()
	s, err := mysql.OpenSharded(keyspace, shards, mysql.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	users := []string{"alice", "bob", "carol", "dave", "erin"}
	evs := []conversation.Event{{Membership: &conversation.Membership{Channel: conversation.Channel{ID: "g1", Type: 2}, UIDs: users, Added: true}}}
	for _, m := range []kafkago.Message{event(1, "alice", "g1", 2), event(1, "alice", "bob", 1)} {
		e, err := conversation.DecodeEvent(m.Value, time.Now(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	for _, st := range s.Shards() {
		for _, table := range []string{"conversations", "user_versions", "channels", "messages", "late_messages", "channel_members"} {
			if err := testenv.EmptyTable(ctx, st.DB().DB, table); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.ApplyBatch(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	environ := map[string]string{"MYSQL_DSN": keyspace, "VITESS_SHARDS": os.Getenv("TEST_VITESS_SHARDS")}
	var out bytes.Buffer
	if err := run(ctx, []string{"purge-user", "-uid", "bob", "-memberships", "-yes"}, environ, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `purged "bob": 2 conversations, 1 version row, 1 memberships`) {
		t.Fatalf("purge-user said:\n%s", out.String())
	}
	for _, st := range s.Shards() {
		var n int
		if err := st.DB().GetContext(ctx, &n, `SELECT (SELECT COUNT(*) FROM conversations WHERE uid='bob')
			+ (SELECT COUNT(*) FROM channel_members WHERE uid='bob')`); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("bob still has %d rows on a shard", n)
		}
	}
	if rows, _, err := s.UserRows(ctx, "alice"); err != nil || len(rows) != 2 {
		t.Fatalf("alice after bob's purge: %d rows, %v", len(rows), err)
	}
	err = run(ctx, []string{"rebuild", "-schema", "conv_rb1"}, environ, &out)
	if err == nil || !strings.Contains(err.Error(), "On Vitess") {
		t.Fatalf("rebuild on Vitess = %v, want a refusal naming docs/operations.md", err)
	}
}
