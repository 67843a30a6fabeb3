package conversation

import (
	"errors"
	"fmt"
)

// The identifier rules, in one place for events and API requests alike. A valid identifier always fits
// its column: the widths in migrations/ match the limits.

// IDError says what is wrong with an identifier, as words that follow the field's name ("uid" + " " +
// "is longer than 64 bytes"): only the caller knows which field it checked. It wraps ErrInvalid.
type IDError struct {
	Problem string
	// Empty is set when the identifier is empty: WuKongIM's API answers that case with its own words.
	Empty bool
}

func (e *IDError) Error() string { return e.Problem }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *IDError) Unwrap() error { return ErrInvalid }

// IsEmptyID reports whether err is an IDError for an empty identifier.
func IsEmptyID(err error) bool {
	ie, ok := errors.AsType[*IDError](err)
	return ok && ie.Empty
}

// CheckUID returns nil when uid is a valid user id: not empty, at most MaxUIDLen bytes. Otherwise it
// returns an *IDError.
func CheckUID(uid string) error {
	return checkID(uid, MaxUIDLen)
}

// CheckChannelID returns nil when id is a valid id for a channel of type typ: not empty, at most
// MaxChannelIDLen bytes, or MaxUIDLen for person channels, whose id is the peer's uid. Otherwise it
// returns an *IDError.
func CheckChannelID(id string, typ uint8) error {
	if typ == ChannelTypePerson {
		return checkID(id, MaxUIDLen)
	}
	return checkID(id, MaxChannelIDLen)
}

func checkID(id string, limit int) error {
	switch {
	case id == "":
		return &IDError{Problem: "is empty", Empty: true}
	case len(id) > limit:
		return &IDError{Problem: fmt.Sprintf("is longer than %d bytes", limit)}
	}
	return nil
}

// ValidChannelType reports whether t, read as a wider integer, is a channel type: 1..255.
func ValidChannelType(t int64) bool { return t >= 1 && t <= 255 }
