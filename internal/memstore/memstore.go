// Package memstore is the read model in memory: conversation.BatchTx over maps, the same interface
// internal/mysql implements with SQL, so that the batch algorithm (conversation.RunBatch) and the
// store contract suite (internal/storetest) run in plain `go test`, and faults can be injected
// between any two steps of a batch (Options.Fail). It keeps what the database keeps (channels'
// states, windows, memberships, late messages, conversation rows as stored, user versions) and
// answers what the store's read side answers for them. It is for tests: everything is held under one
// mutex and nothing is ever freed.
package memstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

// Options tune a Store. The zero value of each field picks the default named on it.
type Options struct {
	// RecentsWindow is how many of a channel's newest message seqs are kept (default
	// conversation.DefaultRecentsWindow).
	RecentsWindow int64
	// Large says when a channel fans out at read time (default zero: never).
	Large conversation.LargeThresholds
	// Now is the clock versions are taken from (default time.Now).
	Now func() time.Time
	// OnCommit, when set, is called after every committed change with what changed (mysql.Options'
	// OnCommit).
	OnCommit func(ctx context.Context, changes conversation.Changes)
	// Fail, when set, is called before each conversation.BatchTx method with the method's name, and
	// before the commit with "Commit": an error it returns fails the attempt there, and nothing of it
	// is committed (fault injection).
	Fail func(step string) error
}

// Store is the read model in memory. It is safe for concurrent use; batches and updates run one at a
// time.
type Store struct {
	mu       sync.Mutex
	opts     Options
	channels map[conversation.ChannelKey]conversation.ChannelState
	// windows hold each channel's kept messages by seq.
	windows  map[conversation.ChannelKey]map[int64]*conversation.Message
	members  map[conversation.ChannelKey]map[string]bool
	rows     map[conversation.ConvKey]conversation.Row
	late     map[conversation.ChannelKey][]conversation.LateMsg
	versions map[string]int64
}

// New returns an empty store.
func New(opts Options) *Store {
	if opts.RecentsWindow <= 0 {
		opts.RecentsWindow = conversation.DefaultRecentsWindow
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{opts: opts, channels: map[conversation.ChannelKey]conversation.ChannelState{},
		windows: map[conversation.ChannelKey]map[int64]*conversation.Message{}, members: map[conversation.ChannelKey]map[string]bool{},
		rows: map[conversation.ConvKey]conversation.Row{}, late: map[conversation.ChannelKey][]conversation.LateMsg{},
		versions: map[string]int64{}}
}

func (s *Store) nowMS() int64 { return s.opts.Now().UnixMilli() }

func (s *Store) fail(step string) error {
	if s.opts.Fail == nil {
		return nil
	}
	if err := s.opts.Fail(step); err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	return nil
}

// ApplyBatch applies a batch of projected events through conversation.RunBatch, as mysql.Store does:
// when it returns nil every event's effect is committed exactly once; when it returns an error nothing
// of the batch is.
func (s *Store) ApplyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := &batch{s: s}
	out, err := conversation.RunBatch(ctx, tx, events, conversation.BatchOptions{Window: s.opts.RecentsWindow,
		Large: s.opts.Large, NowMS: s.nowMS})
	if err == nil {
		err = s.fail("Commit")
	}
	if err != nil {
		return out.Result, err
	}
	if err := tx.commit(); err != nil {
		return out.Result, err
	}
	s.committed(ctx, out.Changes)
	return out.Result, nil
}

func (s *Store) committed(ctx context.Context, changes conversation.Changes) {
	if s.opts.OnCommit != nil && !changes.Empty() {
		s.opts.OnCommit(ctx, changes)
	}
}

// batch is one attempt at a batch or an update: it reads the store and holds its writes until commit.
type batch struct {
	s        *Store
	locked   []conversation.ChannelKey
	versions map[string]int64
	rows     []conversation.Row
	channels conversation.ChannelWrites
	wrote    bool
}

var (
	_ conversation.BatchTx  = (*batch)(nil)
	_ conversation.UpdateTx = (*batch)(nil)
)

func (b *batch) LockChannels(_ context.Context, keys []conversation.ChannelKey) (map[conversation.ChannelKey]conversation.ChannelState, error) {
	if err := b.s.fail("LockChannels"); err != nil {
		return nil, err
	}
	if !slices.IsSortedFunc(keys, conversation.ChannelKey.Compare) {
		return nil, errors.New("LockChannels: keys not sorted")
	}
	b.locked = keys
	out := make(map[conversation.ChannelKey]conversation.ChannelState, len(keys))
	for _, k := range keys {
		out[k] = b.s.channels[k]
	}
	return out, nil
}

func (b *batch) LockChannel(_ context.Context, key conversation.ChannelKey) (conversation.ChannelState, error) {
	if err := b.s.fail("LockChannel"); err != nil {
		return conversation.ChannelState{}, err
	}
	return b.s.channels[key], nil
}

func (b *batch) AppliedMessages(_ context.Context, keys []conversation.MessageKey) (map[conversation.MessageKey]bool, error) {
	if err := b.s.fail("AppliedMessages"); err != nil {
		return nil, err
	}
	out := map[conversation.MessageKey]bool{}
	for _, k := range keys {
		if b.s.windows[k.Channel][k.Seq] != nil {
			out[k] = true
		}
	}
	return out, nil
}

func (b *batch) Members(_ context.Context, whole []conversation.ChannelKey, named []conversation.Member) (map[conversation.ChannelKey][]string, error) {
	if err := b.s.fail("Members"); err != nil {
		return nil, err
	}
	out := map[conversation.ChannelKey][]string{}
	for _, k := range whole {
		for u := range b.s.members[k] {
			out[k] = append(out[k], u)
		}
	}
	for _, m := range named {
		if b.s.members[m.Channel][m.UID] {
			out[m.Channel] = append(out[m.Channel], m.UID)
		}
	}
	return out, nil
}

func (b *batch) RowsForUpdate(_ context.Context, keys []conversation.ConvKey) (map[conversation.ConvKey]conversation.Row, error) {
	if err := b.s.fail("RowsForUpdate"); err != nil {
		return nil, err
	}
	if !slices.IsSortedFunc(keys, conversation.ConvKey.Compare) {
		return nil, errors.New("RowsForUpdate: keys not sorted")
	}
	out := make(map[conversation.ConvKey]conversation.Row, len(keys))
	for _, k := range keys {
		if r, ok := b.s.rows[k]; ok {
			out[k] = r
		}
	}
	return out, nil
}

func (b *batch) LateSince(_ context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey][]conversation.LateMsg, error) {
	if err := b.s.fail("LateSince"); err != nil {
		return nil, err
	}
	return b.s.lateSince(since), nil
}

func (b *batch) BumpVersions(_ context.Context, uids []string) (map[string]int64, error) {
	if err := b.s.fail("BumpVersions"); err != nil {
		return nil, err
	}
	if b.wrote {
		return nil, errors.New("BumpVersions: after a write")
	}
	b.versions = b.s.nextVersions(uids)
	return b.versions, nil
}

func (b *batch) WriteRows(_ context.Context, rows []conversation.Row) error {
	if err := b.s.fail("WriteRows"); err != nil {
		return err
	}
	b.wrote = true
	b.rows = append(b.rows, rows...)
	return nil
}

func (b *batch) WriteChannels(_ context.Context, w conversation.ChannelWrites) error {
	if err := b.s.fail("WriteChannels"); err != nil {
		return err
	}
	b.wrote = true
	b.channels = w
	return nil
}

// commit applies the attempt's writes, refusing what the database's keys would refuse before changing
// anything.
func (b *batch) commit() error {
	if err := b.check(); err != nil {
		return err
	}
	return b.apply()
}

// check refuses what the database's keys would refuse: a message or late message stored twice.
func (b *batch) check() error {
	s, w := b.s, b.channels
	seen := map[conversation.MessageKey]bool{}
	for _, m := range w.Messages {
		k := conversation.MessageKey{Channel: m.Key(), Seq: m.MessageSeq}
		if seen[k] || s.windows[k.Channel][k.Seq] != nil {
			return fmt.Errorf("insert messages: %v seq %d is in the window already", k.Channel, k.Seq)
		}
		seen[k] = true
	}
	arrivals := map[conversation.ChannelKey]int64{}
	for _, l := range w.Late {
		last, ok := arrivals[l.Channel]
		if !ok && len(s.late[l.Channel]) > 0 {
			last = s.late[l.Channel][len(s.late[l.Channel])-1].Arrival
		}
		if l.Arrival <= last {
			return fmt.Errorf("insert late messages: %v arrival %d is stored already", l.Channel, l.Arrival)
		}
		arrivals[l.Channel] = l.Arrival
	}
	return nil
}

// apply makes the attempt's writes, then checks that each changed channel's member count is its
// stored membership's.
func (b *batch) apply() error {
	s, w := b.s, b.channels
	for _, k := range b.locked {
		if _, ok := s.channels[k]; !ok {
			s.channels[k] = conversation.ChannelState{}
		}
	}
	for u, v := range b.versions {
		s.versions[u] = v
	}
	for _, r := range b.rows {
		s.rows[r.ConvKey] = r
	}
	for _, m := range w.Messages {
		k := m.Key()
		if s.windows[k] == nil {
			s.windows[k] = map[int64]*conversation.Message{}
		}
		s.windows[k][m.MessageSeq] = m
	}
	for _, l := range w.Late {
		s.late[l.Channel] = append(s.late[l.Channel], l)
	}
	for _, u := range w.Channels {
		if u.Pruned {
			for seq := range s.windows[u.Key] {
				if seq < u.MinKeptSeq {
					delete(s.windows[u.Key], seq)
				}
			}
		}
		s.channels[u.Key] = conversation.ChannelState{MaxSeq: u.MaxSeq, MinKeptSeq: u.MinKeptSeq, Large: u.Large,
			Members: u.Members, Broadcast: u.Broadcast}
	}
	for _, m := range w.MembersAdded {
		if s.members[m.Channel] == nil {
			s.members[m.Channel] = map[string]bool{}
		}
		s.members[m.Channel][m.UID] = true
	}
	for _, m := range w.MembersRemoved {
		delete(s.members[m.Channel], m.UID)
	}
	for _, u := range w.Channels { // the count a channel keeps is its membership's
		if n := len(s.members[u.Key]); u.Members != int64(n) {
			return fmt.Errorf("%v: %d members counted, %d stored", u.Key, u.Members, n)
		}
	}
	return nil
}

// nextVersions is each user's next version, max(nowMS, previous + 1).
func (s *Store) nextVersions(uids []string) map[string]int64 {
	now := s.nowMS()
	out := make(map[string]int64, len(uids))
	for _, u := range uids {
		out[u] = max(now, s.versions[u]+1)
	}
	return out
}

func (s *Store) lateSince(since map[conversation.ChannelKey]int64) map[conversation.ChannelKey][]conversation.LateMsg {
	out := map[conversation.ChannelKey][]conversation.LateMsg{}
	for k, after := range since {
		for _, l := range s.late[k] {
			if l.Arrival > after {
				out[k] = append(out[k], l)
			}
		}
	}
	return out
}

// UserRows returns every conversation of uid, tombstones included, followers of large channels derived
// (a follower with no conversation yet as a Hidden row), sorted by key, and the user's version:
// mysql.Store.UserRows.
func (s *Store) UserRows(_ context.Context, uid string) ([]conversation.Row, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []conversation.Row{}
	for k, r := range s.rows {
		if k.UID != uid || (r.Hidden && !r.Follows) {
			continue
		}
		if r.Follows {
			ck := conversation.ChannelKey{Key: k.ChannelID, Type: k.ChannelType}
			r = conversation.Derive(r, s.channels[ck].Broadcast, s.late[ck])
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b conversation.Row) int { return a.ConvKey.Compare(b.ConvKey) })
	return out, s.versions[uid], nil
}

// Users returns every user with a version, sorted.
func (s *Store) Users() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.versions))
	for u := range s.versions {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// LargeStates returns the state of each existing channel of since and its late messages with an arrival
// above since's: mysql.Store.LargeStates.
func (s *Store) LargeStates(_ context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey]conversation.ChannelState, map[conversation.ChannelKey][]conversation.LateMsg, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	channels := map[conversation.ChannelKey]conversation.ChannelState{}
	for k := range since {
		if st, ok := s.channels[k]; ok {
			channels[k] = st
		}
	}
	return channels, s.lateSince(since), nil
}

// Recents returns each range's recents, newest first, keyed by channel (conversation.PickRecents), with
// the fields the database keeps of a message: mysql.Store.Recents.
func (s *Store) Recents(_ context.Context, ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[conversation.ChannelKey][]conversation.Message{}
	for _, r := range ranges {
		if r.Empty() {
			continue
		}
		var msgs []conversation.Message
		for _, m := range s.windows[r.Channel] {
			if m.MessageSeq > r.After && m.MessageSeq <= r.UpTo {
				msgs = append(msgs, stored(m))
			}
		}
		slices.SortFunc(msgs, func(a, b conversation.Message) int { return int(b.MessageSeq - a.MessageSeq) })
		if len(msgs) > r.Count {
			msgs = msgs[:r.Count]
		}
		if len(msgs) > 0 {
			out[r.Channel] = msgs
		}
	}
	return out, nil
}

// stored is m as the messages table keeps it.
func stored(m *conversation.Message) conversation.Message {
	payload := m.Payload
	if payload == nil {
		payload = []byte{}
	}
	return conversation.Message{MessageID: m.MessageID, ClientMsgNo: m.ClientMsgNo, MessageSeq: m.MessageSeq, FromUID: m.FromUID,
		ChannelID: m.ChannelID, ChannelType: m.ChannelType, Timestamp: m.Timestamp, Header: conversation.Header{RedDot: m.Header.RedDot},
		Setting: m.Setting, Expire: m.Expire, Payload: payload}
}

// Update applies change to the user's conversation key through conversation.RunUpdate, as
// mysql.Store.Update does. It returns the row as stored afterwards, or an error wrapping
// conversation.ErrNotFound when there is no such conversation.
func (s *Store) Update(ctx context.Context, key conversation.ConvKey, change func(row conversation.Row, nowMS int64) (conversation.Row, bool)) (conversation.Row, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := &batch{s: s}
	row, changed, err := conversation.RunUpdate(ctx, tx, key, change, s.nowMS)
	if err == nil && changed {
		err = s.fail("Commit")
	}
	if err != nil || !changed {
		return row, err
	}
	if err := tx.commit(); err != nil {
		return conversation.Row{}, err
	}
	s.committed(ctx, conversation.Changes{Versions: tx.versions})
	return row, nil
}

// PurgeTombstones deletes at most limit plain tombstones deleted before beforeMS and returns how many
// went: mysql.Store.PurgeTombstones.
func (s *Store) PurgeTombstones(_ context.Context, beforeMS int64, limit int) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, k := range s.sortedKeys() {
		if r := s.rows[k]; r.Deleted && !r.Follows && r.DeletedAtMS < beforeMS && n < int64(limit) {
			delete(s.rows, k)
			n++
		}
	}
	return n, nil
}

// PurgeFollowerTombstones purges at most limit tombstones of followers of large channels deleted before
// beforeMS through conversation.RunFollowerTombstonePurge, a channel at a time, and returns how many
// went: mysql.Store.PurgeFollowerTombstones.
func (s *Store) PurgeFollowerTombstones(ctx context.Context, beforeMS int64, limit int) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byChannel := map[conversation.ChannelKey][]conversation.ConvKey{}
	var channels []conversation.ChannelKey
	picked := 0
	for _, k := range s.sortedKeys() {
		if r := s.rows[k]; r.Deleted && r.Follows && r.DeletedAtMS < beforeMS && picked < limit {
			ck := conversation.ChannelKey{Key: k.ChannelID, Type: k.ChannelType}
			if byChannel[ck] == nil {
				channels = append(channels, ck)
			}
			byChannel[ck] = append(byChannel[ck], k)
			picked++
		}
	}
	slices.SortFunc(channels, conversation.ChannelKey.Compare)
	var total int64
	for _, ck := range channels {
		tx := &batch{s: s}
		n, versions, err := conversation.RunFollowerTombstonePurge(ctx, tx, ck, byChannel[ck], beforeMS)
		if err == nil {
			err = tx.commit()
		}
		if err != nil {
			return total, fmt.Errorf("purge follower tombstones: %w", err)
		}
		total += n
		s.committed(ctx, conversation.Changes{Versions: versions})
	}
	return total, nil
}

// sortedKeys is every row's key, in primary-key order.
func (s *Store) sortedKeys() []conversation.ConvKey {
	keys := make([]conversation.ConvKey, 0, len(s.rows))
	for k := range s.rows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, conversation.ConvKey.Compare)
	return keys
}
