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
