package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/convsync/conversations/internal/conversation"
)

// requestError is an error the client caused and may read: its status and message go out as they are.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

// Unwrap makes errors.Is(err, conversation.ErrInvalid) true for every client error.
func (e *requestError) Unwrap() error { return conversation.ErrInvalid }

func badRequest(format string, args ...any) error {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// WuKongIM's own messages; clients may show them, so they are kept word for word.
const (
	msgEmptyUID     = "UID cannot be empty"
	msgEmptyChannel = "channel_id or channel_type cannot be empty"
)

var (
	errUnauthorized     = &requestError{http.StatusUnauthorized, "missing or invalid bearer token"}
	errNotFound         = &requestError{http.StatusNotFound, "not found"}
	errMethodNotAllowed = &requestError{http.StatusMethodNotAllowed, "method not allowed"}
	errTooLarge         = &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is over %d bytes", maxBodyBytes)}
)

// Messages of server faults: they say what the caller should do, never what failed inside.
const (
	msgInternal    = "internal error"
	msgUnavailable = "service unavailable, retry later"
)

// statusOf is the one place that maps an error to an HTTP status and the message a client sees.
// Client errors keep their own status and message. A store that cannot be reached, a transaction that
// kept losing lock conflicts, or a deadline that ran out is 503, so callers know a retry may succeed;
// anything else is 500. Neither ever carries SQL, driver or stack text.
func statusOf(err error) (int, string) {
	var re *requestError
	switch {
	case errors.As(err, &re):
		return re.status, re.msg
	case errors.Is(err, conversation.ErrUnavailable), errors.Is(err, conversation.ErrConflict),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, msgUnavailable
	default:
		return http.StatusInternalServerError, msgInternal
	}
}
