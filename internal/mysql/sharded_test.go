package mysql_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/storetest"
	"github.com/convsync/conversations/internal/testenv"
)

// The read model sharded by user, through vtgate (make test-vitess; elsewhere these tests skip).

// openSharded opens the sharded store on emptied shards.
func openSharded(t *testing.T, opts mysql.Options) *mysql.Sharded {
	t.Helper()
	dsn, shards := testenv.VitessKeyspace(t)
	s, err := mysql.OpenSharded(dsn, shards, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	for _, st := range s.Shards() {
		for _, table := range []string{"conversations", "user_versions", "channels", "messages", "late_messages", "channel_members"} {
			if err := testenv.EmptyTable(ctx, st.DB().DB, table); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

// shardedStore is the sharded read model as the contract suite sees one store: every batch applied by
// each shard's own store in turn (each shard's projector group, one after the other), each user's
// reads and mutations on the user's shard, channel reads on the first shard (after every batch the
// shards' copies of the channels agree).
type shardedStore struct{ *mysql.Sharded }

func (s shardedStore) ApplyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error) {
	// Every shard counts the same messages; rows are written by their users' shards only.
	var res conversation.BatchResult
	rows := 0
	for _, st := range s.Shards() {
		r, err := st.ApplyBatch(ctx, events)
		if err != nil {
			return res, err
		}
		res, rows = r, rows+r.RowsWritten
	}
	res.RowsWritten = rows
	return res, nil
}

func (s shardedStore) LargeStates(ctx context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey]conversation.ChannelState, map[conversation.ChannelKey][]conversation.LateMsg, error) {
	return s.Shards()[0].LargeStates(ctx, since)
}

func (s shardedStore) Recents(ctx context.Context, ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error) {
	return s.Shards()[0].Recents(ctx, ranges)
}

// TestShardedContract runs the store contract suite against the sharded read model.
func TestShardedContract(t *testing.T) {
	testenv.VitessKeyspace(t)
	storetest.Run(t, func(t *testing.T, o storetest.Options) storetest.Store {
		return shardedStore{openSharded(t, mysql.Options{RecentsWindow: o.Window, LargeChannelMembers: o.Large.Enter,
			LargeChannelLeave: o.Large.Leave, Now: o.Now})}
	}, storetest.Config{Seeds: 1})
}

// TestShardedSyncIsOneShard shows, with vtgate's own counters of the statements it sent to each shard
// (VttabletCall in /debug/vars), that a user's whole sync (list and version, recents, large channels'
// states) goes to the user's shard only; and with vtgate's plan (VEXPLAIN PLAN) that the list and version
// statement, sent to the keyspace rather than a shard, is one route to one shard (EqualUnique on the
// uid vindex).
func TestShardedSyncIsOneShard(t *testing.T) {
	dsn, shards := testenv.VitessKeyspace(t)
	vars := os.Getenv("TEST_VITESS_HTTP")
	if vars == "" {
		t.Fatal("TEST_VITESS_HTTP is not set (vtcombo's HTTP address)")
	}
	s := openSharded(t, mysql.Options{LargeChannelMembers: 3})
	ctx := context.Background()
	// Users on both shards, a group of each kind, a large channel (3 members) with a late message.
	users := []string{"u1", "u2", "u3", "u4", "u5", "u6"}
	var events []conversation.Event
	events = append(events, storetest.Members("big", true, users...))
	for i, u := range users {
		events = append(events, storetest.PersonMsg(u, users[(i+1)%len(users)], 1), storetest.GroupMsg("small", int64(i+1), u, users...))
	}
	events = append(events, storetest.GroupMsg("big", 3, "u1"), storetest.GroupMsg("big", 2, "u2"))
	for _, st := range s.Shards() {
		if _, err := st.ApplyBatch(ctx, events); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[int]bool{}
	for _, uid := range users {
		owner := mysql.ShardOf(shards, uid)
		seen[owner] = true
		before := tabletCalls(t, vars)
		list, err := s.ReadList(ctx, conversation.Query{UID: uid})
		if err != nil {
			t.Fatal(err)
		}
		var ranges []conversation.SeqRange
		var follows bool
		for i := range list.Rows {
			r := &list.Rows[i]
			follows = follows || r.Follows
			ranges = append(ranges, conversation.RecentsRange(r, conversation.ChannelKeyOf(uid, conversation.Channel{ID: r.ChannelID, Type: r.ChannelType}), 0, 5))
		}
		recents, err := s.ReadRecents(ctx, uid, ranges)
		if err != nil {
			t.Fatal(err)
		}
		after := tabletCalls(t, vars)
		var other []string
		for i, r := range shards {
			d := after[r.Name()] - before[r.Name()]
			if i == owner && d == 0 {
				t.Fatalf("%s: no statement reached its shard %s", uid, r.Name())
			}
			if i != owner && d != 0 {
				other = append(other, fmt.Sprintf("%s: %d", r.Name(), d))
			}
		}
		if len(other) > 0 {
			t.Fatalf("%s's sync (shard %s) sent statements to other shards: %v", uid, shards[owner].Name(), other)
		}
		t.Logf("%s: %d conversations (following a large channel: %v), recents of %d, %d statements, all to shard %s",
			uid, len(list.Rows), follows, len(recents.Messages), after[shards[owner].Name()]-before[shards[owner].Name()], shards[owner].Name())
	}
	if len(seen) < 2 {
		t.Fatal("every user is on one shard: the test tests nothing")
	}

	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var plan string
	q := strings.Replace(mysql.UserRowsSQL, "?", "'u1'", 1)
	if err := db.QueryRowContext(ctx, "VEXPLAIN PLAN "+q).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	var p struct{ OperatorType, Variant, Vindex string }
	if err := json.Unmarshal([]byte(plan), &p); err != nil {
		t.Fatalf("VEXPLAIN PLAN: %v: %s", err, plan)
	}
	if p.OperatorType != "Route" || p.Variant != "EqualUnique" || p.Vindex != "uid_md5" {
		t.Fatalf("the list and version statement is not one route to one shard: %s", plan)
	}
	t.Logf("the list and version statement through the keyspace: %s %s on %s", p.OperatorType, p.Variant, p.Vindex)
}

// tabletCalls returns how many statements vtgate has sent to each shard's primary so far.
func tabletCalls(t *testing.T, base string) map[string]int64 {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(base + "/debug/vars")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		VttabletCall struct {
			Histograms map[string]struct{ Count int64 }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for k, h := range v.VttabletCall.Histograms {
		// Execute.conv.-80.primary, StreamExecute.conv.80-.primary, ...
		parts := strings.Split(k, ".")
		if len(parts) == 4 && parts[1] == "conv" {
			out[parts[2]] += h.Count
		}
	}
	return out
}

// TestShardedPurgeUser: convctl purge-user on the sharded read model removes the user's rows and
// version from the user's shard and the user's memberships from every shard's copy, keeping each
// copy's member counts exact.
func TestShardedPurgeUser(t *testing.T) {
	_, shards := testenv.VitessKeyspace(t)
	s := openSharded(t, mysql.Options{})
	ctx := context.Background()
	users := []string{"u1", "u2", "u3", "u4", "u5", "u6"}
	events := []conversation.Event{storetest.Members("g", true, users...), storetest.GroupMsg("g", 1, "u2")}
	for _, st := range s.Shards() {
		if _, err := st.ApplyBatch(ctx, events); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.PurgeUser(ctx, "u1", true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Conversations != 1 || res.Versions != 1 || res.Memberships != 1 {
		t.Fatalf("purged %+v, want one conversation, version and membership", res)
	}
	if rows, _, err := s.UserRows(ctx, "u1"); err != nil || len(rows) != 0 {
		t.Fatalf("u1 after the purge: %v, %v", rows, err)
	}
	for i, st := range s.Shards() {
		var n, members int64
		if err := st.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM channel_members WHERE uid = 'u1'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := st.DB().QueryRowContext(ctx, `SELECT members FROM channels WHERE channel_key = 'g'`).Scan(&members); err != nil {
			t.Fatal(err)
		}
		if n != 0 || members != int64(len(users)-1) {
			t.Fatalf("shard %s: u1 still in %d memberships, channel g counts %d members", shards[i].Name(), n, members)
		}
	}
	if rows, _, err := s.UserRows(ctx, "u3"); err != nil || len(rows) != 1 {
		t.Fatalf("u3 after u1's purge: %v, %v", rows, err)
	}
}
