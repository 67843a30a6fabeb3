package conversation

import (
	"fmt"
	"testing"
)

func TestSelect(t *testing.T) {
	row := func(id string, typ uint8, ts, version, unread int64, deleted bool) Row {
		return Row{ConvKey: ConvKey{UID: "u", ChannelID: id, ChannelType: typ}, Timestamp: ts, Version: version, Unread: unread, Deleted: deleted}
	}
	rows := []Row{
		row("b", 2, 100, 10, 1, false),
		row("a", 2, 100, 11, 0, false),
		row("a", 1, 100, 11, 2, false),
		row("c", 3, 300, 12, 0, false),
		row("d", 2, 200, 13, 5, true),
		row("e", 2, 50, 13, 1, false),
		row("f", 2, 60, 14, 1, false),
	}
	ids := func(rs []Row) string {
		out := ""
		for _, r := range rs {
			out += fmt.Sprintf("%s/%d ", r.ChannelID, r.ChannelType)
		}
		return out
	}
	tests := []struct {
		name string
		q    Query
		want string
	}{
		{"full sync: newest first, ties by channel_id then type, no tombstones", Query{}, "c/3 a/1 a/2 b/2 f/2 e/2 "},
		{"full sync cap keeps the newest", Query{MaxFull: 2}, "c/3 a/1 "},
		{"include_deleted", Query{IncludeDeleted: true}, "c/3 d/2 a/1 a/2 b/2 f/2 e/2 "},
		{"only_unread", Query{OnlyUnread: true}, "a/1 b/2 f/2 e/2 "},
		{"exclude_channel_types", Query{ExcludeTypes: []uint8{1, 3}}, "a/2 b/2 f/2 e/2 "},
		{"incremental is strictly greater", Query{Version: 12}, "f/2 e/2 "},
		{"incremental with tombstones", Query{Version: 12, IncludeDeleted: true}, "d/2 f/2 e/2 "},
		{"limit takes the lowest versions", Query{Version: 1, Limit: 1}, "b/2 "},
		{"limit never splits a version", Query{Version: 1, Limit: 2}, "a/1 a/2 b/2 "},
		{"limit applies after the filters", Query{Version: 10, Limit: 1, OnlyUnread: true}, "a/1 "},
		{"limit is not a cap on a full sync", Query{Limit: 1}, "c/3 a/1 a/2 b/2 f/2 e/2 "},
		{"nothing newer", Query{Version: 14}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]Row(nil), rows...)
			got := Select(in, tt.q)
			if ids(got) != tt.want {
				t.Errorf("Select = %q, want %q", ids(got), tt.want)
			}
			if got == nil {
				t.Error("Select returned nil, want an empty slice")
			}
			if ids(in) != ids(rows) {
				t.Error("Select modified its input")
			}
		})
	}
}

func TestSelectLargeVersions(t *testing.T) {
	const slack = LargeVersionSlackMS
	plain := Row{ConvKey: ConvKey{UID: "u", ChannelID: "p", ChannelType: 2}, Version: 100_000}
	large := Row{ConvKey: ConvKey{UID: "u", ChannelID: "g", ChannelType: 2}, Version: 100_000, Follows: true}
	tests := []struct {
		name string
		q    Query
		want map[string]int64 // channel -> version answered
	}{
		{"a full sync answers a large conversation with the safe version, not its channel's",
			Query{UserVersion: 90_000, NowMS: 100_500}, map[string]int64{"p": 100_000, "g": 95_500}},
		{"the user's committed version is safe too",
			Query{UserVersion: 99_000, NowMS: 100_500}, map[string]int64{"p": 100_000, "g": 99_000}},
		{"incremental: a large conversation up to the slack below the cursor is repeated",
			Query{Version: 100_000 + slack - 1, UserVersion: 200_000, NowMS: 300_000}, map[string]int64{"g": 295_000}},
		{"incremental: at the slack below the cursor it is not",
			Query{Version: 100_000 + slack, UserVersion: 200_000, NowMS: 300_000}, map[string]int64{}},
		{"incremental: a plain conversation is never repeated",
			Query{Version: 100_000, UserVersion: 200_000, NowMS: 300_000}, map[string]int64{"g": 295_000}},
		{"no clock given: own versions", Query{}, map[string]int64{"p": 100_000, "g": 100_000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]int64{}
			for _, r := range Select([]Row{plain, large}, tt.q) {
				got[r.ChannelID] = r.Version
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Select = %v, want %v", got, tt.want)
			}
		})
	}
}
