package mysql_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// TestLargeVersionsNeverMiss is contract §5's version promise under concurrent writers: two projector
// instances (own pools, clocks 300 ms apart) applying batches of one large channel (late and duplicate messages included) and of a
// small group and person chats of the same users, and API mutations on those users, while each member
// runs a client that syncs incrementally with the highest version it saw and replaces conversations
// by channel. When the writers stop, one more incremental sync must leave every client exactly at a
// full sync. (Answering large conversations with their channel's own version instead makes clients
// skip changes of their other conversations here: see conversation.LargeVersionSlackMS.)
func TestLargeVersionsNeverMiss(t *testing.T) {
	opts := mysql.Options{LargeChannelMembers: 3, RecentsWindow: 50}
	store, dsn := testenv.Store(t, opts)
	// Each writer is its own process as far as the database can tell: its own pool, and its own clock,
	// the second projector's 300 ms ahead and the API's 200 ms behind (skew well within the slack's
	// quarter, as the design assumes).
	instance := func(skew time.Duration) *mysql.Store {
		o := opts
		o.Now = func() time.Time { return time.Now().Add(skew) }
		s, err := mysql.Open(dsn, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	projectors := []*mysql.Store{store, instance(300 * time.Millisecond)}
	apiStore := instance(-200 * time.Millisecond)
	ctx := context.Background()
	const users = 6
	var uids []string
	for i := range users {
		uids = append(uids, fmt.Sprintf("u%d", i))
	}
	apply(t, store, members("big", true, uids...), members("small", true, uids[0], uids[1]))
	if _, err := store.Update(ctx, conversation.ConvKey{UID: "u0", ChannelID: "big", ChannelType: 2},
		func(r conversation.Row, _ int64) (conversation.Row, bool) { return r, false }); err == nil {
		t.Fatal("a member who received nothing yet has a conversation")
	}

	var seq, smallSeq atomic.Int64
	stop := make(chan struct{})
	var writers sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 2 { // two projector instances; batches of one channel serialise on its lock
		writers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				var batch []conversation.Event
				for range 1 + rng.IntN(8) {
					s := seq.Add(1)
					from := uids[rng.IntN(users)]
					batch = append(batch, groupMsg("big", s, from))
					if rng.IntN(4) == 0 {
						batch = append(batch, groupMsg("small", smallSeq.Add(1), from))
					}
					if rng.IntN(4) == 0 {
						batch = append(batch, personMsg(from, uids[rng.IntN(users)], s))
					}
				}
				rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] }) // late messages
				if rng.IntN(3) == 0 {
					batch = append(batch, batch[0]) // a duplicate
				}
				if _, err := projectors[w].ApplyBatch(ctx, batch); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	writers.Go(func() { // the API
		rng := rand.New(rand.NewPCG(9, 9))
		for {
			select {
			case <-stop:
				return
			default:
			}
			k := conversation.ConvKey{UID: uids[rng.IntN(users)], ChannelID: "big", ChannelType: 2}
			if rng.IntN(3) == 0 {
				k.ChannelID = "small"
			}
			change := func(r conversation.Row, now int64) (conversation.Row, bool) { return conversation.Delete(r, now) }
			if n := rng.IntN(4); n > 0 {
				change = func(r conversation.Row, _ int64) (conversation.Row, bool) {
					return conversation.SetUnread(r, int64(n-1))
				}
			}
			if _, err := apiStore.Update(ctx, k, change); err != nil && !errorsIsNotFound(err) {
				errs <- err
				return
			}
		}
	})

	type client struct {
		version int64
		rows    map[conversation.ConvKey]conversation.Row
	}
	clients := make([]*client, users)
	var repeats atomic.Int64
	syncOnce := func(i int) {
		c := clients[i]
		all, _, err := store.UserRows(ctx, uids[i])
		if err != nil {
			errs <- err
			return
		}
		got := conversation.Select(all, conversation.Query{UID: uids[i], Version: c.version, IncludeDeleted: true,
			NowMS: time.Now().UnixMilli()})
		top := c.version
		for _, r := range got {
			if old, ok := c.rows[r.ConvKey]; ok && sameFields(old, r) {
				repeats.Add(1)
			}
			c.rows[r.ConvKey] = r
			top = max(top, r.Version)
		}
		c.version = top
	}
	var readers sync.WaitGroup
	for i := range users {
		clients[i] = &client{rows: map[conversation.ConvKey]conversation.Row{}}
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				syncOnce(i)
			}
		})
	}
	time.Sleep(3 * time.Second)
	close(stop)
	writers.Wait()
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, uid := range uids {
		syncOnce(i)
		all, _, err := store.UserRows(ctx, uid)
		if err != nil {
			t.Fatal(err)
		}
		all = conversation.Select(all, conversation.Query{UID: uid, IncludeDeleted: true})
		if len(all) != len(clients[i].rows) {
			t.Errorf("%s: the client holds %d conversations, a full sync has %d", uid, len(clients[i].rows), len(all))
		}
		for _, want := range all {
			if got := clients[i].rows[want.ConvKey]; !sameFields(got, want) {
				t.Errorf("%s: the client missed a change: holds %+v, full sync %+v", uid, got, want)
			}
		}
	}
	t.Logf("messages=%d repeats=%d", seq.Load(), repeats.Load())
}

// sameFields compares what a client shows of a conversation: everything but the version.
func sameFields(a, b conversation.Row) bool {
	a.Version, b.Version = 0, 0
	a.Base, b.Base = conversation.Base{}, conversation.Base{}
	a.DeletedAtMS, b.DeletedAtMS = 0, 0
	return a == b
}

func errorsIsNotFound(err error) bool { return errors.Is(err, conversation.ErrNotFound) }

// TestLargeChannelOf100kMembers builds a 100,000-member channel from ten membership events of 10,000
// uids (each under the 1 MiB event limit), then sends messages to it: each writes O(1) rows, members'
// conversations are derived, and a sender's own message rewrites only the sender's row.
func TestLargeChannelOf100kMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 100,000-member channel")
	}
	store, _ := testenv.Store(t, mysql.Options{LargeChannelMembers: 1000})
	for part := range 10 {
		uids := make([]string, 10_000)
		for i := range uids {
			uids[i] = fmt.Sprintf("member-%06d", part*10_000+i)
		}
		start := time.Now()
		res := apply(t, store, members("huge", true, uids...))
		t.Logf("membership event %d: %d rows in %v", part, res.RowsWritten, time.Since(start).Round(time.Millisecond))
	}
	var total time.Duration
	for seq := int64(1); seq <= 20; seq++ {
		from := "member-000007"
		if seq%2 == 0 {
			from = "member-099999"
		}
		start := time.Now()
		res := apply(t, store, groupMsg("huge", seq, from))
		total += time.Since(start)
		if res.RowsWritten > 1 {
			t.Fatalf("message %d wrote %d conversation rows, want at most the sender's", seq, res.RowsWritten)
		}
	}
	t.Logf("20 messages, one batch each: %v per batch", (total / 20).Round(time.Millisecond))
	for uid, want := range map[string]int64{"member-050000": 20, "member-000007": 1, "member-099999": 0} {
		rows := rowsOf(t, store, uid)
		if r := rows["huge"]; r.Unread != want || r.LastMsgSeq != 20 {
			t.Errorf("%s: unread %d, last %d; want %d and 20", uid, r.Unread, r.LastMsgSeq, want)
		}
	}
}

// TestPurgeUserKeepsMemberCounts: purging a user's memberships keeps each channel's stored member
// count, which large channels decide on, equal to its membership.
func TestPurgeUserKeepsMemberCounts(t *testing.T) {
	store, _ := testenv.Store(t, mysql.Options{LargeChannelMembers: 3})
	apply(t, store, members("g1", true, "a", "b", "c", "d"), members("g2", true, "a", "b"), groupMsg("g1", 1, "b"))
	if _, err := store.PurgeUser(context.Background(), "a", true); err != nil {
		t.Fatal(err)
	}
	for ch, want := range map[string]int64{"g1": 3, "g2": 1} {
		var got, stored int64
		if err := store.DB().QueryRowContext(context.Background(), `SELECT c.members, (SELECT COUNT(*) FROM channel_members m
			WHERE m.channel_id = c.channel_key AND m.channel_type = c.channel_type) FROM channels c WHERE c.channel_key = ?`, ch).Scan(&got, &stored); err != nil {
			t.Fatal(err)
		}
		if got != want || stored != want {
			t.Errorf("%s: counted %d, stored %d, want %d", ch, got, stored, want)
		}
	}
}
