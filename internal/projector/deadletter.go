package projector

import (
	"context"
	"errors"
	"strconv"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
)

// Headers of a dead-letter record, added after the original record's own headers. The record's key and
// value are the original's, byte for byte.
const (
	// HeaderReason is why the record cannot be applied: one of conversation's Reason constants.
	HeaderReason = "x-dlq-reason"
	// HeaderError is the decoding error in words, naming the offending field.
	HeaderError = "x-dlq-error"
	// HeaderSourceTopic, HeaderSourcePartition and HeaderSourceOffset locate the original record.
	HeaderSourceTopic     = "x-source-topic"
	HeaderSourcePartition = "x-source-partition"
	HeaderSourceOffset    = "x-source-offset"
)

// reasonUnknown labels a decoding failure that is not a *conversation.BadEventError, which DecodeEvent
// promises never happens; it keeps the record on the dead-letter path rather than lose it.
const reasonUnknown = "unknown"

// decode splits a batch into the events to apply, in order, and the dead letters of the records that can
// never be applied. Each bad record is logged here, once, by position and never by content.
func (p *Projector) decode(msgs []kafkago.Message) ([]conversation.Event, []kafkago.Message) {
	defer p.metrics.since(stageDecode, time.Now())
	events := make([]conversation.Event, 0, len(msgs))
	var dead []kafkago.Message
	for _, m := range msgs {
		e, err := conversation.DecodeEvent(m.Value, m.Time, p.cfg.MaxEventBytes)
		if err == nil {
			events = append(events, e)
			continue
		}
		reason, field := reasonUnknown, ""
		var bad *conversation.BadEventError
		if errors.As(err, &bad) {
			reason, field = bad.Reason, bad.Field
		}
		p.log.Warn("bad record, dead-lettered", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
			"reason", reason, "field", field, "value_bytes", len(m.Value))
		dead = append(dead, deadLetter(m, reason, err))
	}
	return events, dead
}

// deadLetter is the dead-letter record of m: its key, value and headers, plus the x- headers above.
func deadLetter(m kafkago.Message, reason string, err error) kafkago.Message {
	headers := make([]kafkago.Header, 0, len(m.Headers)+5)
	headers = append(headers, m.Headers...)
	headers = append(headers,
		kafkago.Header{Key: HeaderReason, Value: []byte(reason)},
		kafkago.Header{Key: HeaderError, Value: []byte(err.Error())},
		kafkago.Header{Key: HeaderSourceTopic, Value: []byte(m.Topic)},
		kafkago.Header{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(m.Partition))},
		kafkago.Header{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
	)
	return kafkago.Message{Key: m.Key, Value: m.Value, Headers: headers}
}

// reasonOf is the reason header of a dead letter: the last one, ours, should the original carry one too.
func reasonOf(m kafkago.Message) string {
	for i := len(m.Headers) - 1; i >= 0; i-- {
		if m.Headers[i].Key == HeaderReason {
			return string(m.Headers[i].Value)
		}
	}
	return reasonUnknown
}

// writePending writes dead letters and returns those still unwritten: none on success; after a partial
// failure only the failed ones, so a retry does not write the others twice.
func writePending(ctx context.Context, w writer, pending []kafkago.Message) ([]kafkago.Message, error) {
	if len(pending) == 0 {
		return nil, nil
	}
	err := w.WriteMessages(ctx, pending...)
	var perRecord kafkago.WriteErrors
	if !errors.As(err, &perRecord) || len(perRecord) != len(pending) {
		if err != nil {
			return pending, err
		}
		return nil, nil
	}
	var failed []kafkago.Message
	for i, e := range perRecord {
		if e != nil {
			failed = append(failed, pending[i])
		}
	}
	return failed, err
}
