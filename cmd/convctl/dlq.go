package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/projector"
)

// letter is one dead letter as listed: where it is, why, and where it came from. Never its value.
type letter struct {
	Partition       int       `json:"partition"`
	Offset          int64     `json:"offset"`
	Time            time.Time `json:"time"`
	Reason          string    `json:"reason"`
	Error           string    `json:"error,omitempty"`
	SourceTopic     string    `json:"source_topic,omitempty"`
	SourcePartition string    `json:"source_partition,omitempty"`
	SourceOffset    string    `json:"source_offset,omitempty"`
	ValueBytes      int       `json:"value_bytes"`
	// Reduced is set on a letter the dead-letter topic refused whole: its value is a prefix only, so it
	// cannot be re-driven.
	Reduced bool `json:"reduced,omitempty"`

	msg kafkago.Message
}

// header is the value of the projector's header key on m, "" when absent.
func header(m kafkago.Message, key string) string {
	v, _ := projector.LastHeader(m, key)
	return v
}

func toLetter(m kafkago.Message) letter {
	l := letter{Partition: m.Partition, Offset: m.Offset, Time: m.Time, Reason: header(m, projector.HeaderReason),
		Error: header(m, projector.HeaderError), SourceTopic: header(m, projector.HeaderSourceTopic),
		SourcePartition: header(m, projector.HeaderSourcePartition), SourceOffset: header(m, projector.HeaderSourceOffset),
		ValueBytes: len(m.Value), msg: m}
	if n := header(m, projector.HeaderValueBytes); n != "" {
		l.Reduced = true
		l.ValueBytes, _ = strconv.Atoi(n)
	}
	return l
}

// readLetters reads every dead letter present when it starts (later ones are left for the next run),
// partition by partition, in offset order, keeping those keep accepts. Without values the records'
// keys, values and headers are dropped as they are read, so listing a large topic holds little.
func (e *cmdEnv) readLetters(ctx context.Context, c *cluster, topic string, keep func(letter) bool, values bool) ([]letter, error) {
	parts, err := c.partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	first, end, err := c.offsets(ctx, topic, parts)
	if err != nil {
		return nil, err
	}
	var out []letter
	for _, p := range parts {
		if end[p] <= first[p] {
			continue
		}
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: c.brokers, Topic: topic, Partition: p, Dialer: c.conn.Dialer(),
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond})
		if err := r.SetOffset(first[p]); err != nil {
			r.Close()
			return nil, fmt.Errorf("read %s/%d: %w", topic, p, err)
		}
		for {
			rctx, cancel := context.WithTimeout(ctx, opTimeout)
			m, err := r.ReadMessage(rctx)
			cancel()
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("read %s/%d: %w", topic, p, err)
			}
			if l := toLetter(m); keep(l) {
				if !values {
					l.msg = kafkago.Message{}
				}
				out = append(out, l)
			}
			if m.Offset >= end[p]-1 {
				break
			}
		}
		r.Close()
	}
	return out, nil
}

// selection is which dead letters a command applies to.
type selection struct {
	reasons []string
	at      map[[2]int64]bool // partition, offset
}

func (s selection) keep(l letter) bool {
	if len(s.reasons) > 0 && !slices.Contains(s.reasons, l.Reason) {
		return false
	}
	return len(s.at) == 0 || s.at[[2]int64{int64(l.Partition), l.Offset}]
}

func parseSelection(reasons, offsets string) (selection, error) {
	var s selection
	for r := range strings.SplitSeq(reasons, ",") {
		if r = strings.TrimSpace(r); r != "" {
			s.reasons = append(s.reasons, r)
		}
	}
	for po := range strings.SplitSeq(offsets, ",") {
		if po = strings.TrimSpace(po); po == "" {
			continue
		}
		ps, os, ok := strings.Cut(po, ":")
		p, err1 := strconv.ParseInt(ps, 10, 32)
		o, err2 := strconv.ParseInt(os, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return s, fmt.Errorf("%w: -offsets entry %q, want partition:offset", errUsage, po)
		}
		if s.at == nil {
			s.at = map[[2]int64]bool{}
		}
		s.at[[2]int64{p, o}] = true
	}
	return s, nil
}

// dlqList prints the selected dead letters (at most -limit) and a count per reason of all selected.
func (e *cmdEnv) dlqList(ctx context.Context, args []string) error {
	fs := e.flags("dlq list", "dlq list [-reason R[,R]] [-offsets P:O[,P:O]] [-limit N] [-json]")
	reasons := fs.String("reason", "", "only these reasons (comma-separated)")
	offsets := fs.String("offsets", "", "only the letters at these partition:offset positions of the dead-letter topic")
	limit := fs.Int("limit", 100, "print at most this many letters (the counts cover all)")
	asJSON := fs.Bool("json", false, "one JSON object per line instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	return e.withLetters(ctx, *reasons, *offsets, false, func(_ *cluster, letters []letter) error {
		return e.printLetters(letters, *limit, *asJSON)
	})
}

// withLetters reads the dead letters the -reason and -offsets flags select (with their values when
// values is set) and calls fn with them and the cluster they were read from.
func (e *cmdEnv) withLetters(ctx context.Context, reasons, offsets string, values bool, fn func(*cluster, []letter) error) error {
	sel, err := parseSelection(reasons, offsets)
	if err != nil {
		return err
	}
	c, err := e.cluster()
	if err != nil {
		return err
	}
	defer c.Close()
	letters, err := e.readLetters(ctx, c, e.cfg.KafkaDLQTopic, sel.keep, values)
	if err != nil {
		return err
	}
	return fn(c, letters)
}

// printLetters prints at most limit letters, as a table or JSON lines, and a count per reason of all.
func (e *cmdEnv) printLetters(letters []letter, limit int, asJSON bool) error {
	counts := map[string]int{}
	for _, l := range letters {
		counts[l.Reason]++
	}
	if asJSON {
		enc := json.NewEncoder(e.out)
		for i, l := range letters {
			if i == limit {
				break
			}
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PARTITION\tOFFSET\tTIME\tREASON\tSOURCE\tBYTES\tERROR")
	for i, l := range letters {
		if i == limit {
			fmt.Fprintf(w, "… %d more\n", len(letters)-i)
			break
		}
		errText := l.Error
		if l.Reduced {
			errText = "(reduced: value truncated, cannot be re-driven) " + errText
		}
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s/%s@%s\t%d\t%s\n", l.Partition, l.Offset, l.Time.UTC().Format(time.RFC3339), l.Reason,
			l.SourceTopic, l.SourcePartition, l.SourceOffset, l.ValueBytes, errText)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "REASON\tCOUNT")
	for _, r := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(w, "%s\t%d\n", r, counts[r])
	}
	return w.Flush()
}

// redriveHeader marks a re-driven record with the dead letter it came from.
const redriveHeader = "x-redriven-from"

// dlqRedrive re-sends the selected dead letters' keys and values (and original headers) to the events
// topic, in dead-letter order. Re-driving is safe to repeat: the projector applies each (channel,
// message_seq) once, so a letter sent twice changes nothing the second time.
func (e *cmdEnv) dlqRedrive(ctx context.Context, args []string) error {
	fs := e.flags("dlq redrive", "dlq redrive (-reason R[,R] | -offsets P:O[,P:O] | -all) [-to TOPIC] [-dry-run]")
	reasons := fs.String("reason", "", "re-drive the letters with these reasons (comma-separated)")
	offsets := fs.String("offsets", "", "re-drive the letters at these partition:offset positions of the dead-letter topic")
	all := fs.Bool("all", false, "re-drive every letter")
	to := fs.String("to", e.cfg.KafkaTopic, "topic to send them to")
	dry := fs.Bool("dry-run", false, "only list what would be sent")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *reasons == "" && *offsets == "" && !*all {
		return fmt.Errorf("%w: dlq redrive needs -reason, -offsets or -all", errUsage)
	}
	return e.withLetters(ctx, *reasons, *offsets, true, func(c *cluster, letters []letter) error {
		return e.redrive(ctx, c, letters, *to, *dry)
	})
}

// redrive sends the letters that are not reduced to topic to (or only says so, when dry).
func (e *cmdEnv) redrive(ctx context.Context, c *cluster, letters []letter, to string, dry bool) error {
	var msgs []kafkago.Message
	skipped := 0
	for _, l := range letters {
		if l.Reduced {
			skipped++
			continue
		}
		msgs = append(msgs, kafkago.Message{Key: l.msg.Key, Value: l.msg.Value, Headers: originalHeaders(l)})
	}
	if !dry && len(msgs) > 0 {
		w := &kafkago.Writer{Addr: kafkago.TCP(c.brokers...), Topic: to, Transport: c.transport,
			// The partitioner of Kafka's Java producer: a channel's key lands where its other events do.
			Balancer: &kafkago.Murmur2Balancer{}, RequiredAcks: kafkago.RequireAll, BatchSize: 1000,
			BatchTimeout: 10 * time.Millisecond}
		err := w.WriteMessages(ctx, msgs...)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("re-drive to %s: %w", to, err)
		}
	}
	verb := "re-drove"
	if dry {
		verb = "would re-drive"
	}
	fmt.Fprintf(e.out, "%s %d dead letters to %s", verb, len(msgs), to)
	if skipped > 0 {
		fmt.Fprintf(e.out, "; skipped %d reduced letters (their values were truncated)", skipped)
	}
	fmt.Fprintln(e.out)
	return nil
}

// originalHeaders are the letter's headers without the ones the projector added, plus where it was.
func originalHeaders(l letter) []kafkago.Header {
	var hs []kafkago.Header
	for _, h := range l.msg.Headers {
		if projector.Added(h.Key) {
			continue
		}
		hs = append(hs, h)
	}
	return append(hs, kafkago.Header{Key: redriveHeader, Value: fmt.Appendf(nil, "%s/%d/%d", l.msg.Topic, l.Partition, l.Offset)})
}
