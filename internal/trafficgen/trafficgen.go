// Package trafficgen generates realistic, deterministic streams of events for the events topic (contract
// §1): person chats, groups fed by inline subscribers or by membership events, red-dot and header
// variations, no_persist/sync_once messages, skipped channel types, and, for tests, chaos (duplicates,
// local reordering within a channel, malformed records). The same Config and seed always give the same
// records, byte for byte, so tests and benchmarks can replay a workload exactly.
//
// Every record is keyed by its channel's storage key (contract §3.1), as the contract asks producers to.
package trafficgen

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/convsync/conversations/internal/conversation"
)

// Record is one Kafka record: Key is the channel's storage key, Value the JSON event.
type Record struct {
	Key   []byte
	Value []byte
}

// Chaos makes a stream misbehave the way real delivery does. The zero value is a clean stream. Rates are
// probabilities per message (per record for MalformedRate), in [0, 1].
type Chaos struct {
	// DuplicateRate: a message is sent again a few records later (at-least-once redelivery).
	DuplicateRate float64
	// ReorderRate: a message swaps places with a nearby later message of the same channel, so the channel's
	// seqs arrive out of order.
	ReorderRate float64
	// ReorderDistance is how many records apart two swapped messages may be (default 4). Keep it well
	// below the projector's recents window: seqs older than the window are treated as applied.
	ReorderDistance int
	// MalformedRate: a malformed record (bad JSON, missing or wrong-typed field, unknown type, ...) is
	// inserted after a record, keyed like it. Every malformed record fails conversation.DecodeEvent.
	MalformedRate float64
}

// Config describes a workload. Zero rates mean "never"; the zero value of the other fields picks the
// default named on them. Use the named workloads (Demo, Differential, W1, W2, W3, Peer) as starting points.
type Config struct {
	// Seed makes the stream reproducible (PCG).
	Seed uint64
	// Messages is how many message.sent records the stream has, before chaos; membership events come
	// on top of them.
	Messages int
	// Users is how many users exist, named u1..uN (default 50).
	Users int

	// PersonPairs is how many distinct person chats exist between random users.
	PersonPairs int
	// PersonShare is the share of messages that go to person chats; the rest go to groups (all of them
	// when there are no groups, none when there are no pairs).
	PersonShare float64

	// Groups is how many group-like channels exist, named g1..gN.
	Groups int
	// GroupSizeMin and GroupSizeMax bound a group's initial size (default 3 and 8; capped by Users).
	GroupSizeMin, GroupSizeMax int
	// InlineShare is the share of groups whose messages list their subscribers inline; the others get
	// their members from channel.subscribers.added events sent at the start of the stream.
	InlineShare float64
	// ChurnRate is the chance, per group message, that a member joins or leaves first: a membership event
	// for event-fed groups, a silent change of the subscriber list for inline groups.
	ChurnRate float64
	// OtherTypes makes every fourth group another group-like type (3, 4, 5 or 10), and the last group
	// reuse the first one's id under another type (two channels, contract §3.1).
	OtherTypes bool
	// PartialSubscribersRate is the chance that an inline group message leaves one member out of its
	// subscribers.
	PartialSubscribersRate float64
	// SystemRate is the chance that a group message is a system message (empty from_uid).
	SystemRate float64

	// SkippedRate is the chance that a message goes to a channel of a skipped type (6..9: stored for
	// nobody).
	SkippedRate float64
	// NoPersistRate and SyncOnceRate set header.no_persist and header.sync_once (nothing is stored).
	NoPersistRate, SyncOnceRate float64
	// RedDotOffRate is the chance of red_dot 0; NoHeaderRate of no header at all (which also means
	// red_dot 0).
	RedDotOffRate, NoHeaderRate float64
	// OmitTypeRate is the chance that a message has no "type" field (it is a message.sent then).
	OmitTypeRate float64
	// SeqGapRate is the chance that a channel's sequence skips a number before a message (a message the
	// upstream never forwarded). Messages that are not stored (no_persist, sync_once) never use up a seq.
	SeqGapRate float64

	// FocusUID, when set, is a member of every group and has FocusPairs person chats (with u2, u3, ...),
	// in which the peer sends FocusInboundShare of the messages: the demo user with unread counts.
	FocusUID          string
	FocusPairs        int
	FocusInboundShare float64

	// BurstSize > 1 sends messages in bursts: BurstSize consecutive messages from one sender to one
	// channel.
	BurstSize int

	// PayloadBytes is the approximate size of a message payload before base64 (default 48).
	PayloadBytes int
	// StartUnix is the first message's timestamp in seconds (default 1_700_000_000); MessagesPerSecond
	// spaces the following ones (default 10). Timestamps are never 0.
	StartUnix         int64
	MessagesPerSecond float64
	// SeqBase is added to every channel's message_seq and to message_id, so a later stream can continue a
	// channel's sequence instead of repeating it (default 0: seqs start at 1).
	SeqBase int64

	Chaos Chaos
}

// Stats counts what a generator emitted so far.
type Stats struct {
	// Records is every record, chaos included.
	Records int
	// Messages are message.sent records, counted once (duplicates not included).
	Messages int
	// Memberships are channel.subscribers.* records.
	Memberships int
	// NotProjected counts messages that change nothing by contract §3.2 (no_persist, sync_once, skipped
	// channel type).
	NotProjected int
	// Duplicates, Reordered and Malformed count the chaos: extra copies, swapped pairs, bad records.
	Duplicates, Reordered, Malformed int
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.Messages < 0 {
		errs = append(errs, errors.New("messages must be >= 0"))
	}
	if c.Users < 0 || c.Users == 1 {
		errs = append(errs, errors.New("users must be 0 (default) or at least 2"))
	}
	if c.PersonPairs < 0 || c.Groups < 0 || c.FocusPairs < 0 {
		errs = append(errs, errors.New("person pairs, groups and focus pairs must be >= 0"))
	}
	if c.GroupSizeMin < 0 || c.GroupSizeMax < 0 || (c.GroupSizeMax > 0 && c.GroupSizeMin > c.GroupSizeMax) {
		errs = append(errs, errors.New("group sizes must satisfy 0 <= min <= max"))
	}
	for name, r := range map[string]float64{
		"person share": c.PersonShare, "inline share": c.InlineShare, "churn rate": c.ChurnRate,
		"partial subscribers rate": c.PartialSubscribersRate, "system rate": c.SystemRate,
		"skipped rate": c.SkippedRate, "no_persist rate": c.NoPersistRate, "sync_once rate": c.SyncOnceRate,
		"red_dot off rate": c.RedDotOffRate, "no header rate": c.NoHeaderRate, "omit type rate": c.OmitTypeRate, "seq gap rate": c.SeqGapRate,
		"focus inbound share": c.FocusInboundShare, "duplicate rate": c.Chaos.DuplicateRate,
		"reorder rate": c.Chaos.ReorderRate, "malformed rate": c.Chaos.MalformedRate,
	} {
		if r < 0 || r > 1 {
			errs = append(errs, fmt.Errorf("%s %v is outside [0, 1]", name, r))
		}
	}
	if c.Messages > 0 && c.PersonPairs+c.FocusPairs == 0 && c.Groups == 0 && c.SkippedRate < 1 {
		errs = append(errs, errors.New("messages need person pairs or groups to go to"))
	}
	if c.SeqBase < 0 || c.StartUnix < 0 || c.MessagesPerSecond < 0 || c.PayloadBytes < 0 || c.BurstSize < 0 || c.Chaos.ReorderDistance < 0 {
		errs = append(errs, errors.New("seq base, start time, rate, payload size, burst size and reorder distance must be >= 0"))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Users == 0 {
		c.Users = 50
	}
	if c.GroupSizeMin == 0 {
		c.GroupSizeMin = 3
	}
	if c.GroupSizeMax == 0 {
		c.GroupSizeMax = max(8, c.GroupSizeMin)
	}
	c.GroupSizeMin, c.GroupSizeMax = min(c.GroupSizeMin, c.Users), min(c.GroupSizeMax, c.Users)
	if c.PayloadBytes == 0 {
		c.PayloadBytes = 48
	}
	if c.StartUnix == 0 {
		c.StartUnix = 1_700_000_000
	}
	if c.MessagesPerSecond == 0 {
		c.MessagesPerSecond = 10
	}
	if c.Chaos.ReorderDistance == 0 {
		c.Chaos.ReorderDistance = 4
	}
	c.FocusPairs = min(c.FocusPairs, c.Users-1)
	return c
}

type pair struct{ a, b string }

type group struct {
	id      string
	typ     uint8
	inline  bool
	members []string // sorted
}

func (g *group) has(uid string) bool {
	_, ok := slices.BinarySearch(g.members, uid)
	return ok
}

func (g *group) add(uid string) {
	if i, ok := slices.BinarySearch(g.members, uid); !ok {
		g.members = slices.Insert(g.members, i, uid)
	}
}

func (g *group) remove(uid string) {
	if i, ok := slices.BinarySearch(g.members, uid); ok {
		g.members = slices.Delete(g.members, i, i+1)
	}
}

// kind tells the chaos pass what a buffered record is.
type kind uint8

const (
	kindMessage kind = iota
	kindMembership
	kindMalformed
)

type item struct {
	rec  Record
	kind kind
	ch   string // storage key and type: messages of one channel share it
}

// Generator produces a Config's stream record by record, with bounded memory (it works in chunks of a
// few hundred records, which is also how far chaos moves a record). It is not safe for concurrent use.
type Generator struct {
	cfg     Config
	rng     *rand.Rand
	users   []string
	pairs   []pair
	focus   []pair // pairs that involve FocusUID
	groups  []*group
	skipped []*group
	seqs    map[string]int64
	nextID  int64
	sent    int // messages generated
	setup   []item
	buf     []item
	pos     int
	stats   Stats
	burst   struct {
		left   int
		sender string
		pair   pair
		group  *group
	}
}

// chunkSize is how many records the generator produces and scrambles at a time.
const chunkSize = 512

// New returns a generator of cfg's stream. It fails when cfg does not validate.
func New(cfg Config) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("traffic config: %w", err)
	}
	cfg = cfg.withDefaults()
	g := &Generator{
		cfg:    cfg,
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		seqs:   map[string]int64{},
		nextID: cfg.SeqBase*1000 + 1,
	}
	g.users = make([]string, cfg.Users)
	for i := range g.users {
		g.users[i] = "u" + strconv.Itoa(i+1)
	}
	g.buildPairs()
	g.buildGroups()
	return g, nil
}

func (g *Generator) buildPairs() {
	seen := map[pair]bool{}
	if f := g.cfg.FocusUID; f != "" {
		for _, u := range g.users {
			if len(g.focus) == g.cfg.FocusPairs {
				break
			}
			if u != f {
				p := pair{f, u}
				seen[p], seen[pair{u, f}] = true, true
				g.focus = append(g.focus, p)
				g.pairs = append(g.pairs, p)
			}
		}
	}
	maxPairs := len(g.users) * (len(g.users) - 1) / 2
	for len(g.pairs) < min(g.cfg.PersonPairs+len(g.focus), maxPairs) {
		a, b := g.users[g.rng.IntN(len(g.users))], g.users[g.rng.IntN(len(g.users))]
		if a == b || seen[pair{a, b}] {
			continue
		}
		seen[pair{a, b}], seen[pair{b, a}] = true, true
		g.pairs = append(g.pairs, pair{a, b})
	}
}

var otherTypes = []uint8{3, 4, 5, 10}

func (g *Generator) buildGroups() {
	c := g.cfg
	for i := range c.Groups {
		gr := &group{id: "g" + strconv.Itoa(i+1), typ: conversation.ChannelTypeGroup, inline: g.rng.Float64() < c.InlineShare}
		if c.OtherTypes && i%4 == 3 {
			gr.typ = otherTypes[(i/4)%len(otherTypes)]
		}
		if c.OtherTypes && i > 0 && i == c.Groups-1 {
			gr.id, gr.typ = g.groups[0].id, otherTypes[i%len(otherTypes)]
		}
		size := c.GroupSizeMin + g.rng.IntN(c.GroupSizeMax-c.GroupSizeMin+1)
		for _, u := range g.sample(size) {
			gr.add(u)
		}
		if c.FocusUID != "" {
			gr.add(c.FocusUID)
		}
		g.groups = append(g.groups, gr)
		if !gr.inline {
			g.setup = append(g.setup, g.membership(gr, true, slices.Clone(gr.members)))
		}
	}
	for t := uint8(6); t <= 9; t++ {
		g.skipped = append(g.skipped, &group{id: "sys" + strconv.Itoa(int(t)), typ: t, inline: true,
			members: []string{g.users[0], g.users[len(g.users)-1]}})
	}
}

// sample returns k distinct random users (k <= Users), without shuffling all of them: W2 draws a
// thousand groups from ten thousand users.
func (g *Generator) sample(k int) []string {
	picked := make(map[int]bool, k)
	out := make([]string, 0, k)
	for len(out) < k {
		if i := g.rng.IntN(len(g.users)); !picked[i] {
			picked[i] = true
			out = append(out, g.users[i])
		}
	}
	return out
}

// Next returns the next record, or false when the stream is over.
func (g *Generator) Next() (Record, bool) {
	if g.pos == len(g.buf) {
		if !g.fill() {
			return Record{}, false
		}
	}
	it := g.buf[g.pos]
	g.pos++
	g.stats.Records++
	return it.rec, true
}

// All returns the rest of the stream as an iterator.
func (g *Generator) All() iter.Seq[Record] {
	return func(yield func(Record) bool) {
		for {
			r, ok := g.Next()
			if !ok || !yield(r) {
				return
			}
		}
	}
}

// Stats returns the counts of what Next returned so far (chaos counts cover the chunks generated so far).
func (g *Generator) Stats() Stats { return g.stats }

// Generate returns cfg's whole stream with its counts.
func Generate(cfg Config) ([]Record, Stats, error) {
	g, err := New(cfg)
	if err != nil {
		return nil, Stats{}, err
	}
	var out []Record
	for r := range g.All() {
		out = append(out, r)
	}
	return out, g.Stats(), nil
}

// fill generates and scrambles the next chunk. It reports false when nothing is left.
func (g *Generator) fill() bool {
	g.buf, g.pos = g.buf[:0], 0
	if g.setup != nil {
		g.buf = append(g.buf, g.setup...)
		g.stats.Memberships += len(g.setup)
		g.setup = nil
	}
	for len(g.buf) < chunkSize && g.sent < g.cfg.Messages {
		g.buf = g.appendEvents(g.buf)
	}
	if len(g.buf) == 0 {
		return false
	}
	g.scramble()
	return true
}

// appendEvents appends one message, preceded by a membership change when churn strikes.
func (g *Generator) appendEvents(out []item) []item {
	c := g.cfg
	g.sent++
	r := g.rng.Float64()
	switch {
	case r < c.SkippedRate:
		sk := g.skipped[g.rng.IntN(len(g.skipped))]
		return append(out, g.message(sk.id, sk.typ, sk.members[g.rng.IntN(len(sk.members))], sk.members))
	case g.burst.left > 0:
		g.burst.left--
		return append(out, g.continueBurst())
	}
	wantPerson := len(g.pairs) > 0 && (len(g.groups) == 0 || g.rng.Float64() < c.PersonShare)
	if wantPerson {
		p := g.pickPair()
		from, to := p.a, p.b
		if slices.Contains(g.focus, p) {
			if g.rng.Float64() < c.FocusInboundShare {
				from, to = p.b, p.a
			}
		} else if g.rng.IntN(2) == 0 {
			from, to = to, from
		}
		g.startBurst(pair{from, to}, nil, from)
		return append(out, g.message(to, conversation.ChannelTypePerson, from, nil))
	}
	gr := g.groups[g.rng.IntN(len(g.groups))]
	if g.rng.Float64() < c.ChurnRate {
		if ev, ok := g.churn(gr); ok {
			out = append(out, ev)
			g.stats.Memberships++
		}
	}
	from := ""
	if len(gr.members) > 0 && g.rng.Float64() >= c.SystemRate {
		from = gr.members[g.rng.IntN(len(gr.members))]
	}
	g.startBurst(pair{}, gr, from)
	return append(out, g.groupMessage(gr, from))
}

func (g *Generator) pickPair() pair {
	// The focus user's chats get a fair share of the traffic even among thousands of pairs.
	if len(g.focus) > 0 && g.rng.IntN(2) == 0 {
		return g.focus[g.rng.IntN(len(g.focus))]
	}
	return g.pairs[g.rng.IntN(len(g.pairs))]
}

func (g *Generator) startBurst(p pair, gr *group, sender string) {
	if g.cfg.BurstSize > 1 {
		g.burst.left, g.burst.pair, g.burst.group, g.burst.sender = g.cfg.BurstSize-1, p, gr, sender
	}
}

func (g *Generator) continueBurst() item {
	if gr := g.burst.group; gr != nil {
		return g.groupMessage(gr, g.burst.sender)
	}
	return g.message(g.burst.pair.b, conversation.ChannelTypePerson, g.burst.pair.a, nil)
}

func (g *Generator) groupMessage(gr *group, from string) item {
	var subs []string
	if gr.inline {
		subs = slices.Clone(gr.members)
		if len(subs) > 1 && g.rng.Float64() < g.cfg.PartialSubscribersRate {
			i := g.rng.IntN(len(subs))
			subs = slices.Delete(subs, i, i+1)
		}
	}
	return g.message(gr.id, gr.typ, from, subs)
}

// churn changes gr's membership: a user joins, or a member other than the focus user leaves.
func (g *Generator) churn(gr *group) (item, bool) {
	join := len(gr.members) <= 2 || g.rng.IntN(2) == 0
	var uid string
	if join {
		uid = g.users[g.rng.IntN(len(g.users))]
		if gr.has(uid) {
			return item{}, false
		}
		gr.add(uid)
	} else {
		uid = gr.members[g.rng.IntN(len(gr.members))]
		if uid == g.cfg.FocusUID {
			return item{}, false
		}
		gr.remove(uid)
	}
	if gr.inline {
		return item{}, false // inline groups change only their next subscriber lists
	}
	return g.membership(gr, join, []string{uid}), true
}

type wireMembership struct {
	Type        string   `json:"type"`
	ChannelID   string   `json:"channel_id"`
	ChannelType uint8    `json:"channel_type"`
	UIDs        []string `json:"uids"`
}

func (g *Generator) membership(gr *group, added bool, uids []string) item {
	typ := conversation.TypeSubscribersRemoved
	if added {
		typ = conversation.TypeSubscribersAdded
	}
	v := mustJSON(wireMembership{Type: typ, ChannelID: gr.id, ChannelType: gr.typ, UIDs: uids})
	return item{rec: Record{Key: []byte(gr.id), Value: v}, kind: kindMembership, ch: chanKey(gr.id, gr.typ)}
}

type wireHeader struct {
	NoPersist uint8 `json:"no_persist"`
	RedDot    uint8 `json:"red_dot"`
	SyncOnce  uint8 `json:"sync_once"`
}

// wireMessage is contract §1.1's message.sent, with WuKongIM's field names.
type wireMessage struct {
	Type        string      `json:"type,omitempty"`
	MessageID   int64       `json:"message_id"`
	ClientMsgNo string      `json:"client_msg_no"`
	MessageSeq  int64       `json:"message_seq"`
	FromUID     string      `json:"from_uid"`
	ChannelID   string      `json:"channel_id"`
	ChannelType uint8       `json:"channel_type"`
	Timestamp   int64       `json:"timestamp"`
	Header      *wireHeader `json:"header,omitempty"`
	Setting     uint8       `json:"setting"`
	Expire      uint32      `json:"expire"`
	Payload     string      `json:"payload"`
	Subscribers []string    `json:"subscribers,omitempty"`
}

func (g *Generator) message(channelID string, typ uint8, from string, subs []string) item {
	c := g.cfg
	key := channelID
	if typ == conversation.ChannelTypePerson {
		key = conversation.PersonKey(from, channelID)
	}
	ck := chanKey(key, typ)
	var h *wireHeader
	switch r := g.rng.Float64(); {
	case r < c.NoHeaderRate:
	case r < c.NoHeaderRate+c.RedDotOffRate:
		h = &wireHeader{}
	default:
		h = &wireHeader{RedDot: 1}
	}
	if h != nil {
		switch r := g.rng.Float64(); {
		case r < c.NoPersistRate:
			h.NoPersist = 1
		case r < c.NoPersistRate+c.SyncOnceRate:
			h.SyncOnce = 1
		}
	}
	// A message that is not stored takes no seq of its own (WuKongIM assigns seqs only to stored
	// messages): it carries the next one, which the next stored message carries again.
	transient := h != nil && (h.NoPersist == 1 || h.SyncOnce == 1)
	if transient || typ >= 6 && typ <= 9 {
		g.stats.NotProjected++
	}
	seq := g.seqs[ck] + 1
	if !transient {
		if g.rng.Float64() < c.SeqGapRate {
			seq++ // upstream never forwarded one message of this channel
		}
		g.seqs[ck] = seq
	}
	m := wireMessage{
		Type:        conversation.TypeMessageSent,
		MessageID:   g.nextID,
		ClientMsgNo: fmt.Sprintf("%016x%016x", g.rng.Uint64(), g.rng.Uint64()),
		MessageSeq:  c.SeqBase + seq,
		FromUID:     from,
		ChannelID:   channelID,
		ChannelType: typ,
		Timestamp:   c.StartUnix + int64(float64(g.sent-1)/c.MessagesPerSecond),
		Header:      h,
		Payload:     base64.StdEncoding.EncodeToString(g.payload()),
		Subscribers: subs,
	}
	g.nextID++
	g.stats.Messages++
	if g.rng.Float64() < c.OmitTypeRate {
		m.Type = ""
	}
	return item{rec: Record{Key: []byte(key), Value: mustJSON(m)}, kind: kindMessage, ch: ck}
}

var words = []string{"hi", "hello", "ok", "see", "you", "later", "lunch", "meeting", "at", "noon", "thanks",
	"sure", "why", "not", "on", "my", "way", "done", "great", "news", "call", "me", "tomorrow", "👍", "你好"}

type payload struct {
	Type    int    `json:"type"`
	Content string `json:"content"`
}

func (g *Generator) payload() []byte {
	n := g.cfg.PayloadBytes - 24 // the JSON around the content
	var b []byte
	for len(b) < n || len(b) == 0 {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = append(b, words[g.rng.IntN(len(words))]...)
	}
	return mustJSON(payload{Type: 1, Content: string(b)})
}

func chanKey(key string, typ uint8) string { return key + "\x00" + strconv.Itoa(int(typ)) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("trafficgen: marshal %T: %v", v, err)) // only fixed struct types reach here
	}
	return b
}
