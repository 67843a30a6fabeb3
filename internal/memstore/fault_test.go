package memstore

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/storetest"
)

// TestFaultAtEveryStepCommitsNothing fails a batch at each step of conversation.RunBatch in turn (and at
// the commit): the store must be left exactly as before, and the batch applied again must give what
// it gives without the fault. The batch crosses a large channel's threshold, applies late and
// duplicate messages and changes memberships, so every step has work to do.
func TestFaultAtEveryStepCommitsNothing(t *testing.T) {
	ctx := context.Background()
	frozen := time.UnixMilli(1_000_000)
	history := []conversation.Event{storetest.Members("g", true, "a", "b", "c"), storetest.GroupMsg("g", 2, "a"),
		storetest.GroupMsg("h", 1, "a", "a", "b"), storetest.PersonMsg("a", "b", 1)}
	batch := []conversation.Event{storetest.GroupMsg("g", 4, "b"), storetest.GroupMsg("g", 3, "c"), storetest.GroupMsg("g", 2, "a"),
		storetest.Members("g", true, "d"), storetest.GroupMsg("h", 2, "b", "a", "b"), storetest.PersonMsg("b", "a", 2),
		storetest.Members("g", false, "a", "b", "c")}
	open := func(fail func(string) error) *Store {
		s := New(Options{RecentsWindow: 3, Large: conversation.LargeThresholds{Enter: 3, Leave: 2}, Now: func() time.Time { return frozen },
			Fail: fail})
		if _, err := s.ApplyBatch(ctx, history); err != nil {
			t.Fatal(err)
		}
		return s
	}
	clean := open(nil)
	before := snapshot(clean)
	want, err := clean.ApplyBatch(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(before, snapshot(clean)) {
		t.Fatal("the batch changed nothing: the test tests nothing")
	}
	injected := errors.New("injected")
	for _, step := range []string{"LockChannels", "AppliedMessages", "Members", "RowsForUpdate", "LateSince", "BumpVersions",
		"WriteRows", "WriteChannels", "Commit"} {
		t.Run(step, func(t *testing.T) {
			armed := false
			s := open(func(at string) error {
				if armed && at == step {
					armed = false
					return injected
				}
				return nil
			})
			armed = true
			if _, err := s.ApplyBatch(ctx, batch); !errors.Is(err, injected) {
				t.Fatalf("ApplyBatch = %v, want the fault injected at %s", err, step)
			}
			if armed {
				t.Fatalf("RunBatch never reached %s", step)
			}
			if got := snapshot(s); !reflect.DeepEqual(got, before) {
				t.Fatalf("a batch failed at %s left changes behind", step)
			}
			got, err := s.ApplyBatch(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			if got != want || !reflect.DeepEqual(snapshot(s), snapshot(clean)) {
				t.Errorf("after a fault at %s the batch gave %+v, want %+v and the same state", step, got, want)
			}
		})
	}
}

// TestFaultInUpdateCommitsNothing fails an API mutation of a follower's conversation at each step of
// conversation.RunUpdate in turn: the store must be left as before.
func TestFaultInUpdateCommitsNothing(t *testing.T) {
	ctx := context.Background()
	injected := errors.New("injected")
	key := conversation.ConvKey{UID: "b", ChannelID: "g", ChannelType: 2}
	for _, step := range []string{"LockChannel", "RowsForUpdate", "LateSince", "BumpVersions", "WriteRows", "Commit"} {
		t.Run(step, func(t *testing.T) {
			armed := false
			s := New(Options{Large: conversation.LargeThresholds{Enter: 3, Leave: 2}, Fail: func(at string) error {
				if armed && at == step {
					armed = false
					return injected
				}
				return nil
			}})
			if _, err := s.ApplyBatch(ctx, []conversation.Event{storetest.Members("g", true, "a", "b", "c"),
				storetest.GroupMsg("g", 2, "a"), storetest.GroupMsg("g", 1, "c")}); err != nil {
				t.Fatal(err)
			}
			before := snapshot(s)
			armed = true
			if _, err := s.Update(ctx, key, conversation.Delete); !errors.Is(err, injected) {
				t.Fatalf("Update = %v, want the fault injected at %s", err, step)
			}
			if armed {
				t.Fatalf("RunUpdate never reached %s", step)
			}
			if !reflect.DeepEqual(snapshot(s), before) {
				t.Fatalf("an update failed at %s left changes behind", step)
			}
			if row, err := s.Update(ctx, key, conversation.Delete); err != nil || !row.Deleted || row.DeletedAtSeq != 2 {
				t.Errorf("the update again: %+v, %v; want a tombstone at seq 2", row, err)
			}
		})
	}
}

type state struct {
	Channels map[conversation.ChannelKey]conversation.ChannelState
	Windows  map[conversation.ChannelKey]map[int64]conversation.Message
	Members  map[conversation.ChannelKey]map[string]bool
	Rows     map[conversation.ConvKey]conversation.Row
	Late     map[conversation.ChannelKey][]conversation.LateMsg
	Versions map[string]int64
}

// snapshot is a deep copy of everything s holds.
func snapshot(s *Store) state {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := state{Channels: map[conversation.ChannelKey]conversation.ChannelState{}, Windows: map[conversation.ChannelKey]map[int64]conversation.Message{},
		Members: map[conversation.ChannelKey]map[string]bool{}, Rows: map[conversation.ConvKey]conversation.Row{},
		Late: map[conversation.ChannelKey][]conversation.LateMsg{}, Versions: map[string]int64{}}
	for k, v := range s.channels {
		st.Channels[k] = v
	}
	for k, w := range s.windows {
		st.Windows[k] = map[int64]conversation.Message{}
		for seq, m := range w {
			st.Windows[k][seq] = stored(m)
		}
	}
	for k, ms := range s.members {
		if len(ms) > 0 {
			st.Members[k] = map[string]bool{}
			for u := range ms {
				st.Members[k][u] = true
			}
		}
	}
	for k, r := range s.rows {
		st.Rows[k] = r
	}
	for k, l := range s.late {
		st.Late[k] = append([]conversation.LateMsg(nil), l...)
	}
	for u, v := range s.versions {
		st.Versions[u] = v
	}
	return st
}
