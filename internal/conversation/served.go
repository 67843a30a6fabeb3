package conversation

import "time"

// Served says how a sync read was served, beside what it returned. The versions sync gives large
// channels' conversations are taken at the time the answer was known current (AsOf; Query.NowMS,
// docs/proofs.md "Versions of large channels"), and the caller is told when a cache stood in for an
// unreachable database (Outage). A read from the database during the request is the zero value. A new
// way of serving reads (a replica, another cache) says what it knows here, so that whatever wraps a
// read passes it on with the rows instead of dropping it.
type Served struct {
	// AsOf, when set, is when what was served was last known current, earlier than the request: a
	// list or a large channel's state held in memory. Zero: read or checked during the request.
	AsOf time.Time
	// Outage is set when a cache answered in place of the unreachable database (the outage path):
	// the answer is exact as of the last change announced to this replica.
	Outage bool
}

// Join is how an answer made of both reads was served: as current as the older of the two, and from
// the outage path when either was.
func (s Served) Join(o Served) Served {
	if s.AsOf.IsZero() || (!o.AsOf.IsZero() && o.AsOf.Before(s.AsOf)) {
		s.AsOf = o.AsOf
	}
	s.Outage = s.Outage || o.Outage
	return s
}

// ListRead is a user's conversation list as sync reads it: every row, tombstones included, the user's
// version from the same snapshot, and how it was served.
type ListRead struct {
	Rows    []Row
	Version int64
	Served  Served
}

// RecentsRead is the recents of a sync's conversations, keyed by channel (PickRecents per SeqRange),
// and how they were served.
type RecentsRead struct {
	Messages map[ChannelKey][]Message
	Served   Served
}
