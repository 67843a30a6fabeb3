package mysql_test

import (
	"slices"
	"testing"

	"github.com/convsync/conversations/internal/mysql"
)

func TestParseShards(t *testing.T) {
	for _, tc := range []struct {
		list  string
		names []string
		bad   bool
	}{
		{"-80,80-", []string{"-80", "80-"}, false},
		{"80-,-80", []string{"-80", "80-"}, false},
		{"-40,40-80,80-c0,c0-", []string{"-40", "40-80", "80-c0", "c0-"}, false},
		{"-", []string{"-"}, false},
		{"-80", nil, true},           // nothing owns 80-
		{"-80,40-", nil, true},       // overlap
		{"-40,80-", nil, true},       // gap
		{"-80,80-,c0-", nil, true},   // two open ends
		{"-8g,8g-", nil, true},       // not hex
		{"80-40,-80,40-", nil, true}, // start above end
		{"-80-c0", nil, true},        // two dashes
	} {
		t.Run(tc.list, func(t *testing.T) {
			got, err := mysql.ParseShards(tc.list)
			if tc.bad {
				if err == nil {
					t.Fatalf("ParseShards(%q) = %v, want an error", tc.list, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range got {
				names = append(names, r.Name())
			}
			if !slices.Equal(names, tc.names) {
				t.Fatalf("shards %v, want %v", names, tc.names)
			}
		})
	}
}

// TestUIDKeyspaceIDIsBinaryMD5: the keyspace ids Go computes are Vitess's binary_md5 vindex's (the
// VSchema's), checked against values vtgate gave (SELECT keyspace_id FROM uid_md5 WHERE id = …), and
// every uid is owned by exactly one shard.
func TestUIDKeyspaceIDIsBinaryMD5(t *testing.T) {
	shards, err := mysql.ParseShards("-40,40-80,80-c0,c0-")
	if err != nil {
		t.Fatal(err)
	}
	for uid, first := range map[string]byte{"u1": 0xe4, "u2": 0x27, "alice": 0x63} {
		if id := mysql.UIDKeyspaceID(uid); id[0] != first || len(id) != 16 {
			t.Errorf("keyspace id of %s = %x, want 16 bytes from %02x", uid, id, first)
		}
		owners := 0
		for _, r := range shards {
			if r.OwnsUID(uid) {
				owners++
			}
		}
		if owners != 1 {
			t.Errorf("%s is owned by %d shards", uid, owners)
		}
	}
}
