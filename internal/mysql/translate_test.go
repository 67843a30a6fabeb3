package mysql

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/conversation"
)

// translate decides which failures are retried whole (conflicts) and which mean "the database is not
// there" (the API's 503, the projector's readiness): a wrong answer here turns a retry into a 500.
func TestTranslate(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want error // nil: neither sentinel
	}{
		{"deadlock", &mysql.MySQLError{Number: 1213}, conversation.ErrConflict},
		{"lock wait timeout", &mysql.MySQLError{Number: 1205}, conversation.ErrConflict},
		{"deadlock wrapped by a caller", fmt.Errorf("write conversations: %w", &mysql.MySQLError{Number: 1213}), conversation.ErrConflict},
		{"too many connections", &mysql.MySQLError{Number: 1040}, conversation.ErrUnavailable},
		{"server gone away", &mysql.MySQLError{Number: 2006}, conversation.ErrUnavailable},
		{"bad connection", driver.ErrBadConn, conversation.ErrUnavailable},
		{"invalid connection", mysql.ErrInvalidConn, conversation.ErrUnavailable},
		{"refused dial", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, conversation.ErrUnavailable},
		{"duplicate key is a bug, not a retry", &mysql.MySQLError{Number: 1062}, nil},
		{"syntax error", &mysql.MySQLError{Number: 1064}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := translate(tt.err)
			if !errors.Is(got, tt.err) {
				t.Errorf("translate(%v) = %v lost the original error", tt.err, got)
			}
			for _, s := range []error{conversation.ErrConflict, conversation.ErrUnavailable} {
				if errors.Is(got, s) != (s == tt.want) {
					t.Errorf("errors.Is(translate(%v), %v) = %v, want %v", tt.err, s, errors.Is(got, s), s == tt.want)
				}
			}
		})
	}
	if translate(nil) != nil {
		t.Error("translate(nil) is not nil")
	}
}

func TestTranslateHidesQuotedValues(t *testing.T) {
	dup := &mysql.MySQLError{Number: 1062, Message: "Duplicate entry 'alice-g1-2' for key 'PRIMARY'"}
	got := translate(fmt.Errorf("write conversations: %w", dup))
	if s := got.Error(); strings.Contains(s, "alice") || !strings.Contains(s, "Error 1062") || !strings.Contains(s, "write conversations") {
		t.Fatalf("translate = %q, want the statement and the error number without the entry", s)
	}
	if !errors.Is(got, dup) {
		t.Fatal("the driver's error is no longer in the chain")
	}
}
