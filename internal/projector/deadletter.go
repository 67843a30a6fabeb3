package projector

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
)

// Headers of a dead-letter record, added after the original record's own headers. The record's key and
// value are the original's, byte for byte, unless the dead-letter topic refused the record for its size:
// then a reduced dead letter is written instead (see reduce), which carries HeaderValueBytes.
const (
	// HeaderPrefixDeadLetter and HeaderPrefixSource begin every header the projector adds (Added).
	HeaderPrefixDeadLetter = "x-dlq-"
	HeaderPrefixSource     = "x-source-"
	// HeaderReason is why the record cannot be applied: one of conversation's Reason constants.
	HeaderReason = HeaderPrefixDeadLetter + "reason"
	// HeaderError is the decoding error in words, naming the offending field.
	HeaderError = HeaderPrefixDeadLetter + "error"
	// HeaderSourceTopic, HeaderSourcePartition and HeaderSourceOffset locate the original record.
	HeaderSourceTopic     = HeaderPrefixSource + "topic"
	HeaderSourcePartition = HeaderPrefixSource + "partition"
	HeaderSourceOffset    = HeaderPrefixSource + "offset"
	// HeaderValueBytes is on reduced dead letters only: the size of the original value, of which the
	// letter's value is the first ReducedValueBytes at most. The original's own headers are not kept.
	HeaderValueBytes = HeaderPrefixDeadLetter + "value-bytes"
	// HeaderErrorClass is on apply_failed dead letters: the class of the store's error (see errorClass).
	HeaderErrorClass = HeaderPrefixDeadLetter + "error-class"
)

// Added reports whether a header key is of the kind the projector adds to a dead letter (not the
// original record's own): what a re-drive leaves out.
func Added(key string) bool {
	return strings.HasPrefix(key, HeaderPrefixDeadLetter) || strings.HasPrefix(key, HeaderPrefixSource)
}

// LastHeader returns the value of the last header named key, and whether there is one: on a dead
// letter the projector's headers come last, should the original record carry the same key.
func LastHeader(m kafkago.Message, key string) (string, bool) {
	for i := len(m.Headers) - 1; i >= 0; i-- {
		if m.Headers[i].Key == key {
			return string(m.Headers[i].Value), true
		}
	}
	return "", false
}

// ReasonApplyFailed is the dead-letter reason of a record that decoded but that the store failed to apply
// alone, with an error that is not transient, PoisonAttempts times in a row (see Projector.apply).
const ReasonApplyFailed = "apply_failed"

// Bounds of what a dead letter adds or keeps. A dead letter must fit the dead-letter topic: its headers
// are small whatever the record, and a reduced one is small whatever the record was.
const (
	// maxErrorHeaderBytes bounds the x-dlq-error text (a decoding error may quote part of the input).
	maxErrorHeaderBytes = 1 << 10
	// ReducedValueBytes is the prefix of the original value that a reduced dead letter keeps.
	ReducedValueBytes = 8 << 10
	// reducedKeyBytes bounds the key of a reduced dead letter (keys are storage keys, far shorter).
	reducedKeyBytes = 1 << 10
)

// reasonUnknown labels a decoding failure that is not a *conversation.BadEventError, which DecodeEvent
// promises never happens; it keeps the record on the dead-letter path rather than lose it.
const reasonUnknown = "unknown"

// decode splits a batch into the events to apply, in order, and the dead letters of the records that can
// never be applied. Each bad record is logged here, once, by position and never by content.
// srcs[i] is the record of events[i].
func (l *lane) decode(msgs []kafkago.Message) (events []conversation.Event, srcs, dead []kafkago.Message) {
	defer l.m.since(stageDecode, time.Now())
	events = make([]conversation.Event, 0, len(msgs))
	srcs = make([]kafkago.Message, 0, len(msgs))
	for _, m := range msgs {
		e, err := conversation.DecodeEvent(m.Value, m.Time, l.p.cfg.MaxEventBytes)
		if err == nil {
			events = append(events, e)
			srcs = append(srcs, m)
			continue
		}
		reason, field := reasonUnknown, ""
		var bad *conversation.BadEventError
		if errors.As(err, &bad) {
			reason, field = bad.Reason, bad.Field
		}
		l.log.Warn("bad record, dead-lettered", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
			"reason", reason, "field", field, "value_bytes", len(m.Value))
		dead = append(dead, deadLetter(m, reason, err))
	}
	return events, srcs, dead
}

// deadLetter is the dead-letter record of m: its key, value and headers, plus the x- headers above.
func deadLetter(m kafkago.Message, reason string, err error) kafkago.Message {
	headers := make([]kafkago.Header, 0, len(m.Headers)+deadLetterHeaders)
	headers = append(headers, m.Headers...)
	headers = append(headers,
		kafkago.Header{Key: HeaderReason, Value: []byte(reason)},
		kafkago.Header{Key: HeaderError, Value: truncate([]byte(err.Error()), maxErrorHeaderBytes)},
		kafkago.Header{Key: HeaderSourceTopic, Value: []byte(m.Topic)},
		kafkago.Header{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(m.Partition))},
		kafkago.Header{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
	)
	return kafkago.Message{Key: m.Key, Value: m.Value, Headers: headers}
}

// reasonOf is the reason header of a dead letter: the last one, ours, should the original carry one too.
func reasonOf(m kafkago.Message) string {
	if r, ok := LastHeader(m, HeaderReason); ok {
		return r
	}
	return reasonUnknown
}

// reduce is the reduced dead letter of d, written when the dead-letter topic refuses d for its size: the
// same reason, error and source headers, the original value's size, and bounded prefixes of the key and
// value. The original's own headers are dropped, they may be what made it too large. Whatever the record,
// the result is a few KiB, so every record the events topic accepted reaches an end.
func reduce(d kafkago.Message) kafkago.Message {
	headers := make([]kafkago.Header, 0, deadLetterHeaders+1)
	headers = append(headers, d.Headers[max(0, len(d.Headers)-deadLetterHeaders):]...)
	headers = append(headers, kafkago.Header{Key: HeaderValueBytes, Value: []byte(strconv.Itoa(len(d.Value)))})
	return kafkago.Message{Key: truncate(d.Key, reducedKeyBytes), Value: truncate(d.Value, ReducedValueBytes), Headers: headers}
}

// deadLetterHeaders is the number of headers deadLetter appends after the original's.
const deadLetterHeaders = 5

func truncate(b []byte, n int) []byte { return b[:min(len(b), n)] }

// tooLarge reports whether a write failed for its records' size: the writer's own check, or the broker's
// MESSAGE_TOO_LARGE (the topic's max.message.bytes), also as the per-record errors of a write.
func tooLarge(err error) bool {
	var perRecord kafkago.WriteErrors
	if errors.As(err, &perRecord) {
		for _, e := range perRecord {
			if e != nil && !tooLarge(e) {
				return false
			}
		}
		return perRecord.Count() > 0
	}
	return errors.Is(err, kafkago.MessageSizeTooLarge)
}

// writePending writes dead letters and returns those still unwritten: none on success; after a partial
// failure only the failed ones, so a retry does not write the others twice. A letter refused for its size
// is written alone (a batch of letters may be too large where each fits), and when it is still refused
// its reduced form is written instead; reduced counts those. Size refusals are therefore never retried
// forever; any other failure leaves the letter pending for the caller's retry.
func writePending(ctx context.Context, w writer, pending []kafkago.Message) (left []kafkago.Message, reduced int, err error) {
	if len(pending) == 0 {
		return nil, 0, nil
	}
	err = w.WriteMessages(ctx, pending...)
	if err == nil {
		return nil, 0, nil
	}
	var sized []kafkago.Message
	var perRecord kafkago.WriteErrors
	switch {
	case errors.As(err, &perRecord) && len(perRecord) == len(pending):
		var errs []error
		for i, e := range perRecord {
			switch {
			case e == nil:
			case tooLarge(e):
				sized = append(sized, pending[i])
			default:
				left = append(left, pending[i])
				errs = append(errs, e)
			}
		}
		err = errors.Join(errs...)
	case tooLarge(err):
		sized, err = pending, nil // the writer refused the call before sending anything
	default:
		return pending, 0, err
	}
	for _, d := range sized {
		e := w.WriteMessages(ctx, d)
		if tooLarge(e) {
			if e = w.WriteMessages(ctx, reduce(d)); e == nil {
				reduced++
			}
		}
		if e != nil {
			left = append(left, d)
			err = errors.Join(err, e)
		}
	}
	return left, reduced, err
}
