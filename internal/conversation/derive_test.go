package conversation_test

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
)

// Two followers of one channel at different bases: the late messages must be read from the lowest
// base. Reading from the base of whichever follower came last (what one reader used to do, harmless
// in a user's list, which holds one row per channel) would leave out a late message the older follower
// needs, and its unread would count that message although it is below its read point.
func TestFollowedSinceTakesTheLowestBase(t *testing.T) {
	g := conversation.ChannelKey{Key: "g", Type: 2}
	follower := func(uid string, base, readTo int64) conversation.Row {
		return conversation.Row{ConvKey: conversation.ConvKey{UID: uid, ChannelID: "g", ChannelType: 2}, Follows: true,
			ReadedToMsgSeq: readTo, LastMsgSeq: 20, Base: conversation.Base{Arrivals: base, RedDots: base, MaxSeq: 20}}
	}
	ann, bob := follower("ann", 2, 15), follower("bob", 4, 20)
	now := conversation.Broadcast{Arrivals: 5, RedDots: 5, MaxSeq: 20, Version: 9}
	late := []conversation.LateMsg{ // every arrival since ann's base came below the newest seq
		{Channel: g, Arrival: 3, Seq: 12, RedDot: true}, // below ann's read point
		{Channel: g, Arrival: 4, Seq: 17, RedDot: true},
		{Channel: g, Arrival: 5, Seq: 18, RedDot: true},
	}
	lateSince := func(since int64) []conversation.LateMsg {
		var out []conversation.LateMsg
		for _, m := range late {
			if m.Arrival > since {
				out = append(out, m)
			}
		}
		return out
	}
	// The case is one where the two rules differ: from bob's base ann is answered wrongly.
	if right, wrong := conversation.Derive(ann, now, late), conversation.Derive(ann, now, lateSince(bob.Base.Arrivals)); right.Unread == wrong.Unread {
		t.Fatalf("ann's unread is %d from either base: the case does not tell the rules apart", right.Unread)
	}
	for _, order := range [][]conversation.Row{{ann, bob}, {bob, ann}} {
		if got := conversation.FollowedSince(slices.Values(order)); got[g] != ann.Base.Arrivals || len(got) != 1 {
			t.Errorf("FollowedSince(%s, %s) = %v, want g since %d", order[0].UID, order[1].UID, got, ann.Base.Arrivals)
		}
		rows, err := conversation.DeriveList(context.Background(), order, func(_ context.Context, since map[conversation.ChannelKey]int64) (
			map[conversation.ChannelKey]conversation.ChannelState, map[conversation.ChannelKey][]conversation.LateMsg, error) {
			return map[conversation.ChannelKey]conversation.ChannelState{g: {Broadcast: now}},
				map[conversation.ChannelKey][]conversation.LateMsg{g: lateSince(since[g])}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rows {
			if want := conversation.Derive(order[i], now, late); r != want {
				t.Errorf("%s derived with %s last: unread %d last %d, want unread %d last %d", r.UID, order[1].UID,
					r.Unread, r.LastMsgSeq, want.Unread, want.LastMsgSeq)
			}
		}
		byKey := map[conversation.ConvKey]conversation.Row{ann.ConvKey: ann, bob.ConvKey: bob}
		conversation.DeriveRows(byKey, map[conversation.ChannelKey]conversation.ChannelState{g: {Broadcast: now}},
			map[conversation.ChannelKey][]conversation.LateMsg{g: lateSince(conversation.FollowedSince(maps.Values(byKey))[g])})
		for _, r := range rows {
			if byKey[r.ConvKey] != r {
				t.Errorf("%s: DeriveRows and DeriveList disagree", r.UID)
			}
		}
	}
}

// A list without followers reads no state.
func TestDeriveListWithoutFollowersReadsNothing(t *testing.T) {
	rows := []conversation.Row{{ConvKey: conversation.ConvKey{UID: "u", ChannelID: "g", ChannelType: 2}, Unread: 1}}
	got, err := conversation.DeriveList(context.Background(), rows, func(context.Context, map[conversation.ChannelKey]int64) (
		map[conversation.ChannelKey]conversation.ChannelState, map[conversation.ChannelKey][]conversation.LateMsg, error) {
		t.Error("read the states of a list that follows no large channel")
		return nil, nil, nil
	})
	if err != nil || len(got) != 1 || got[0] != rows[0] {
		t.Errorf("got %v, %v; want the rows as they are", got, err)
	}
}
