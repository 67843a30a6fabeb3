package conversation

import (
	"fmt"
	"testing"
)

// window returns messages with the given seqs, newest first (seqs given in any order, newest first here).
func window(seqs ...int64) []Message {
	out := make([]Message, len(seqs))
	for i, s := range seqs {
		out[i] = Message{MessageSeq: s}
	}
	return out
}

func seqsOf(ms []Message) string {
	out := []int64{}
	for _, m := range ms {
		out = append(out, m.MessageSeq)
	}
	return fmt.Sprint(out)
}

var ch = ChannelKey{Key: "g1", Type: 2}

func TestRecentsRangeAndPick(t *testing.T) {
	// Seqs 1..8 of which 3, 5 and 6 were never stored (no_persist, sync_once, skipped).
	w := window(8, 7, 4, 2, 1)
	tests := []struct {
		name          string
		row           Row
		clientLastSeq int64
		count         int
		want          string
	}{
		{"msg_count counts messages, not seqs", Row{LastMsgSeq: 8}, 0, 3, "[8 7 4]"},
		{"more than the window holds: all of it", Row{LastMsgSeq: 8}, 0, 10, "[8 7 4 2 1]"},
		{"gaps at the window's start", Row{LastMsgSeq: 4}, 0, 3, "[4 2 1]"},
		{"up to the row's last_msg_seq only", Row{LastMsgSeq: 7}, 0, 2, "[7 4]"},
		{"delete point inside a gap", Row{LastMsgSeq: 8, DeletedAtSeq: 5}, 0, 3, "[8 7]"},
		{"delete point at a stored seq", Row{LastMsgSeq: 8, DeletedAtSeq: 4}, 0, 3, "[8 7]"},
		{"last_msg_seqs trims", Row{LastMsgSeq: 8}, 2, 10, "[8 7 4]"},
		{"last_msg_seqs inside a gap trims", Row{LastMsgSeq: 8}, 6, 10, "[8 7]"},
		{"last_msg_seqs below the delete point: the delete point wins", Row{LastMsgSeq: 8, DeletedAtSeq: 7}, 2, 10, "[8]"},
		{"client has everything", Row{LastMsgSeq: 8}, 8, 10, "[]"},
		{"msg_count 0", Row{LastMsgSeq: 8}, 0, 0, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := RecentsRange(&tt.row, ch, tt.clientLastSeq, tt.count)
			if got := seqsOf(PickRecents(w, r)); got != tt.want {
				t.Errorf("PickRecents = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestStretchAnswersOnlyWhenItHoldsEverything(t *testing.T) {
	// Loaded as the newest 3 messages at or below 8: the window holds 8, 7, 4 there (5 and 6 never stored).
	s := StretchOf(SeqRange{Channel: ch, UpTo: 8, Count: 3}, window(8, 7, 4))
	if s.Lo != 4 || s.Hi != 8 {
		t.Fatalf("stretch [%d, %d], want [4, 8]", s.Lo, s.Hi)
	}
	// Fewer than asked came back: the stretch reaches down to After+1.
	short := StretchOf(SeqRange{Channel: ch, After: 0, UpTo: 3, Count: 5}, window(2, 1))
	if short.Lo != 1 || short.Hi != 3 {
		t.Fatalf("short stretch [%d, %d], want [1, 3]", short.Lo, short.Hi)
	}
	tests := []struct {
		name   string
		s      Stretch
		r      SeqRange
		want   string
		answer bool
	}{
		{"count reached inside", s, SeqRange{UpTo: 8, Count: 3}, "[8 7 4]", true},
		{"older last seq inside", s, SeqRange{UpTo: 7, Count: 2}, "[7 4]", true},
		{"needs a seq below the stretch", s, SeqRange{UpTo: 7, Count: 3}, "", false},
		{"after reaches into the stretch: everything is there", s, SeqRange{After: 4, UpTo: 8, Count: 10}, "[8 7]", true},
		{"after is just below Lo: everything is there", s, SeqRange{After: 3, UpTo: 8, Count: 10}, "[8 7 4]", true},
		{"after below Lo and count not reached", s, SeqRange{After: 2, UpTo: 8, Count: 10}, "", false},
		{"newer than the stretch", s, SeqRange{UpTo: 9, Count: 1}, "", false},
		{"the whole window below UpTo", short, SeqRange{UpTo: 3, Count: 10}, "[2 1]", true},
		{"nothing asked", s, SeqRange{UpTo: 8, Count: 0}, "[]", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.Channel = ch
			got, ok := tt.s.Answer(tt.r)
			if ok != tt.answer || (ok && seqsOf(got) != tt.want) {
				t.Errorf("Answer = %s, %v; want %s, %v", seqsOf(got), ok, tt.want, tt.answer)
			}
		})
	}
}

func TestStretchAfterWindowChange(t *testing.T) {
	s := Stretch{Lo: 4, Hi: 8, Msgs: window(8, 7, 4)}
	tests := []struct {
		name  string
		w     WindowChange
		keep  bool
		after string
	}{
		{"late message inside: untrusted", WindowChange{LateMin: 6, LateMax: 6}, false, ""},
		{"late message at Lo: untrusted", WindowChange{LateMin: 4, LateMax: 4}, false, ""},
		{"late messages around the stretch: untrusted", WindowChange{LateMin: 2, LateMax: 9}, false, ""},
		{"late message below: kept", WindowChange{LateMin: 3, LateMax: 3}, true, "[8 7 4]"},
		{"prune below: kept whole", WindowChange{MinKept: 4}, true, "[8 7 4]"},
		{"prune into it: pruned messages leave", WindowChange{MinKept: 5}, true, "[8 7]"},
		{"prune everything", WindowChange{MinKept: 9}, true, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := s.Apply(tt.w)
			if ok != tt.keep || (ok && seqsOf(got.Msgs) != tt.after) {
				t.Errorf("Apply = %s, %v; want %s, %v", seqsOf(got.Msgs), ok, tt.after, tt.keep)
			}
		})
	}
	// After a prune the stretch answers what it still holds, and misses what reaches below it.
	pruned, _ := s.Apply(WindowChange{MinKept: 5})
	if got, ok := pruned.Answer(SeqRange{Channel: ch, UpTo: 8, Count: 2}); !ok || seqsOf(got) != "[8 7]" {
		t.Errorf("after prune answered %s, %v; want [8 7], true", seqsOf(got), ok)
	}
	if got, ok := pruned.Answer(SeqRange{Channel: ch, UpTo: 8, Count: 3}); ok {
		t.Errorf("after prune answered %s for a range reaching below the stretch; want a miss", seqsOf(got))
	}
	// A late message below the stretch, then a prune below it: the stretch still claims only its seqs.
	late, _ := s.Apply(WindowChange{LateMin: 3, LateMax: 3})
	late, _ = late.Apply(WindowChange{MinKept: 2})
	if got, ok := late.Answer(SeqRange{Channel: ch, UpTo: 8, Count: 4}); ok {
		t.Errorf("answered %s without the late message 3", seqsOf(got))
	}
}
