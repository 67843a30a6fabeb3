package httpapi

import (
	"strconv"
	"strings"

	"github.com/convsync/conversations/internal/conversation"
)

// lastMsgSeq is one entry of a sync request's last_msg_seqs: the newest seq the client holds for a
// channel, named as the client names it (the peer's uid for person channels).
type lastMsgSeq struct {
	Channel conversation.Channel
	Seq     int64
}

// parseLastMsgSeqs parses "channel_id:channel_type:last_msg_seq" entries joined by '|' (contract §2.1).
// Each entry is read from the right, because a channel_id may itself contain ':'. Empty entries (a
// trailing '|') are skipped; any other malformed entry is a 400 that quotes it (WuKongIM skips those
// silently, and a client that sent one would never learn why its recents were not trimmed).
func parseLastMsgSeqs(s string) ([]lastMsgSeq, error) {
	if s == "" {
		return nil, nil
	}
	out := make([]lastMsgSeq, 0, strings.Count(s, "|")+1)
	for entry := range strings.SplitSeq(s, "|") {
		if entry == "" {
			continue
		}
		e, ok := parseLastMsgSeq(entry)
		if !ok {
			return nil, badRequest("last_msg_seqs: malformed entry %q (want channel_id:channel_type:last_msg_seq, "+
				"channel_type 1..255, last_msg_seq >= 0)", clip(entry))
		}
		out = append(out, e)
	}
	return out, nil
}

func parseLastMsgSeq(entry string) (lastMsgSeq, bool) {
	i := strings.LastIndexByte(entry, ':')
	if i < 0 {
		return lastMsgSeq{}, false
	}
	seq, err := strconv.ParseUint(entry[i+1:], 10, 63) // 63 bits: any int64 >= 0
	if err != nil {
		return lastMsgSeq{}, false
	}
	rest := entry[:i]
	j := strings.LastIndexByte(rest, ':')
	if j < 0 {
		return lastMsgSeq{}, false
	}
	typ, err := strconv.ParseUint(rest[j+1:], 10, 8)
	if err != nil || typ == 0 {
		return lastMsgSeq{}, false
	}
	id := rest[:j]
	if conversation.CheckChannelID(id, uint8(typ)) != nil {
		return lastMsgSeq{}, false
	}
	return lastMsgSeq{Channel: conversation.Channel{ID: id, Type: uint8(typ)}, Seq: int64(seq)}, true
}

// formatLastMsgSeqs is the inverse of parseLastMsgSeqs, for channel ids without '|'.
func formatLastMsgSeqs(entries []lastMsgSeq) string {
	var b strings.Builder
	for i, e := range entries {
		if i > 0 {
			b.WriteByte('|')
		}
		b.WriteString(e.Channel.ID)
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(uint64(e.Channel.Type), 10))
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(e.Seq, 10))
	}
	return b.String()
}

// clip shortens what an error message quotes from a request, so a 1 MiB entry does not come back whole.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
