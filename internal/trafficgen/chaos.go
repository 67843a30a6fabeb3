package trafficgen

import (
	"fmt"
	"strings"
)

// scramble applies the configured chaos to the current chunk: swaps nearby messages of one channel,
// schedules duplicates a few records later, and inserts malformed records. Records never leave their
// chunk, so the stream stays bounded in memory.
func (g *Generator) scramble() {
	ch := g.cfg.Chaos
	if ch.ReorderRate > 0 {
		for i := range g.buf {
			if g.buf[i].kind != kindMessage || g.rng.Float64() >= ch.ReorderRate {
				continue
			}
			// Swap with the next message of the same channel, if it is near: the channel sees seq n+1
			// before n. Only messages move, so membership changes keep their place among a channel's events.
			for j := i + 1; j < len(g.buf) && j <= i+ch.ReorderDistance; j++ {
				if g.buf[j].ch == g.buf[i].ch {
					if g.buf[j].kind == kindMessage {
						g.buf[i], g.buf[j] = g.buf[j], g.buf[i]
						g.stats.Reordered++
					}
					break
				}
			}
		}
	}
	if ch.DuplicateRate == 0 && ch.MalformedRate == 0 {
		return
	}
	type pending struct {
		at int
		it item
	}
	var later []pending
	out := make([]item, 0, len(g.buf)+len(g.buf)/8)
	flush := func(all bool) {
		kept := later[:0]
		for _, p := range later {
			if all || p.at <= len(out) {
				out = append(out, p.it)
			} else {
				kept = append(kept, p)
			}
		}
		later = kept
	}
	for _, it := range g.buf {
		out = append(out, it)
		if it.kind == kindMessage && g.rng.Float64() < ch.DuplicateRate {
			later = append(later, pending{at: len(out) + g.rng.IntN(4*ch.ReorderDistance+1), it: it})
			g.stats.Duplicates++
		}
		if g.rng.Float64() < ch.MalformedRate {
			out = append(out, item{rec: Record{Key: it.rec.Key, Value: g.malformed(it)}, kind: kindMalformed})
			g.stats.Malformed++
		}
		flush(false)
	}
	flush(true)
	g.buf = out
}

// malformed returns a record value that breaks the contract in one of many ways, near the given record's
// channel so it lands among that channel's events.
func (g *Generator) malformed(near item) []byte {
	good := string(near.rec.Value)
	id := strings.SplitN(string(near.rec.Key), "@", 2)[0]
	kinds := []string{
		// not JSON at all, or cut short
		`not json`,
		good[:len(good)/2],
		`null`,
		`[1,2,3]`,
		`"message.sent"`,
		// unknown event type
		fmt.Sprintf(`{"type":"message.edited","message_id":7,"message_seq":3,"channel_id":%q,"channel_type":2}`, id),
		// required fields missing
		fmt.Sprintf(`{"type":"message.sent","message_id":7,"channel_id":%q,"channel_type":2,"from_uid":"u1"}`, id),
		`{"message_id":7,"message_seq":3,"channel_type":2,"from_uid":"u1"}`,
		fmt.Sprintf(`{"message_seq":3,"channel_id":%q,"channel_type":2,"from_uid":"u1"}`, id),
		fmt.Sprintf(`{"message_id":7,"message_seq":3,"channel_id":%q,"channel_type":1}`, id),
		fmt.Sprintf(`{"type":"channel.subscribers.added","channel_id":%q,"channel_type":2}`, id),
		// wrong JSON types
		fmt.Sprintf(`{"message_id":7,"message_seq":"3","channel_id":%q,"channel_type":2}`, id),
		fmt.Sprintf(`{"message_id":7,"message_seq":3,"channel_id":%q,"channel_type":"group"}`, id),
		fmt.Sprintf(`{"type":"channel.subscribers.removed","channel_id":%q,"channel_type":2,"uids":"u1"}`, id),
		// values out of range
		fmt.Sprintf(`{"message_id":7,"message_seq":0,"channel_id":%q,"channel_type":2}`, id),
		fmt.Sprintf(`{"message_id":-7,"message_seq":3,"channel_id":%q,"channel_type":2}`, id),
		fmt.Sprintf(`{"message_id":7,"message_seq":3,"channel_id":%q,"channel_type":0}`, id),
		fmt.Sprintf(`{"message_id":7,"message_seq":3,"channel_id":%q,"channel_type":2,"header":{"red_dot":2}}`, id),
		fmt.Sprintf(`{"message_id":7,"message_seq":3,"channel_id":%q,"channel_type":2,"payload":"%%%%not base64"}`, id),
		fmt.Sprintf(`{"type":"channel.subscribers.added","channel_id":%q,"channel_type":1,"uids":["u1"]}`, id),
	}
	return []byte(kinds[g.rng.IntN(len(kinds))])
}
