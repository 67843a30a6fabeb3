package conversation

import (
	"cmp"
	"slices"
	"strings"
)

// Query selects a user's conversations for sync (contract §2.1).
type Query struct {
	UID string
	// Version <= 0 is a full sync: the newest MaxFull rows by timestamp. Above 0, only rows with a greater
	// version.
	Version int64
	// Limit > 0 (incremental only) keeps the Limit changed rows with the lowest versions, plus any row
	// that shares the last one's version, so a client that stores the highest version it saw and asks
	// again never skips a change.
	Limit int
	// MaxFull caps a full sync (0: no cap).
	MaxFull        int
	OnlyUnread     bool
	IncludeDeleted bool
	ExcludeTypes   []uint8
}

// Select returns the rows of one user that q selects, newest timestamp first, ties by channel_id then
// channel_type ascending (byte order). It never returns nil, and does not modify rows.
func Select(rows []Row, q Query) []Row {
	out := make([]Row, 0, len(rows))
	for _, r := range rows {
		if (r.Deleted && !q.IncludeDeleted) || (q.OnlyUnread && r.Unread <= 0) ||
			slices.Contains(q.ExcludeTypes, r.ChannelType) || (q.Version > 0 && r.Version <= q.Version) {
			continue
		}
		out = append(out, r)
	}
	if q.Version > 0 && q.Limit > 0 && len(out) > q.Limit {
		slices.SortFunc(out, func(a, b Row) int { return cmp.Compare(a.Version, b.Version) })
		bound := out[q.Limit-1].Version
		n := q.Limit
		for n < len(out) && out[n].Version == bound {
			n++
		}
		out = out[:n]
	}
	slices.SortFunc(out, func(a, b Row) int {
		if c := cmp.Compare(b.Timestamp, a.Timestamp); c != 0 {
			return c
		}
		if c := strings.Compare(a.ChannelID, b.ChannelID); c != 0 {
			return c
		}
		return cmp.Compare(a.ChannelType, b.ChannelType)
	})
	if q.Version <= 0 && q.MaxFull > 0 && len(out) > q.MaxFull {
		out = out[:q.MaxFull]
	}
	return out
}
