package conversation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
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

// CheckUID returns nil when uid is a valid user id: not empty, at most MaxUIDLen bytes, valid UTF-8 (ids
// decoded from JSON need CheckRawIDs too, since the decoder hides invalid UTF-8). Otherwise it
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
	case !utf8.ValidString(id):
		return &IDError{Problem: "is not valid UTF-8"}
	}
	return nil
}

// ValidChannelType reports whether t, read as a wider integer, is a channel type: 1..255.
func ValidChannelType(t int64) bool { return t >= 1 && t <= 255 }

// CheckRawIDs finds the first of fields, in a JSON object's text, whose string value (or one of the
// strings of its array value) is not valid UTF-8: invalid bytes, or an escaped lone surrogate such as
// "\udc00". encoding/json silently turns both into U+FFFD, which would store or look up an id the sender
// never sent, so callers check the raw text before trusting decoded ids. It returns the field's name
// ("uids[2]" for an array element) and an *IDError, or "" and nil when every such field is valid UTF-8 or
// absent. value must already be known to be valid JSON; fields that are not strings or arrays of strings
// are left to the decoder.
func CheckRawIDs(value []byte, fields ...string) (string, error) {
	if !mayHoldInvalidUTF8(value) {
		return "", nil // the common case: nothing to look at
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(value, &obj) != nil {
		return "", nil
	}
	notUTF8 := &IDError{Problem: "is not valid UTF-8"}
	for _, f := range fields {
		raw := bytes.TrimSpace(obj[f])
		switch {
		case len(raw) == 0:
		case raw[0] == '"':
			if !validJSONString(raw) {
				return f, notUTF8
			}
		case raw[0] == '[':
			var elems []json.RawMessage
			if json.Unmarshal(raw, &elems) != nil {
				continue
			}
			for i, e := range elems {
				if e = bytes.TrimSpace(e); len(e) > 0 && e[0] == '"' && !validJSONString(e) {
					return fmt.Sprintf("%s[%d]", f, i), notUTF8
				}
			}
		}
	}
	return "", nil
}

// mayHoldInvalidUTF8 is a cheap test that rules out most JSON texts: valid UTF-8 without \u escapes
// (JSON has no other escape that can spell a surrogate: \U is not one).
func mayHoldInvalidUTF8(value []byte) bool {
	return !utf8.Valid(value) || bytes.Contains(value, []byte(`\u`))
}

// validJSONString reports whether a JSON string literal (quotes included, syntax already checked)
// decodes to valid UTF-8: its bytes are UTF-8 and every \u escape of a surrogate is part of a pair.
func validJSONString(raw []byte) bool {
	if !utf8.Valid(raw) {
		return false
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if i+4 >= len(raw) || raw[i] != 'u' {
			continue
		}
		r := hex4(raw[i+1 : i+5])
		i += 4
		switch {
		case utf16.IsSurrogate(r) && r < 0xdc00: // high: a low one must follow at once
			if i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
				return false
			}
			low := hex4(raw[i+3 : i+7])
			if low < 0xdc00 || low > 0xdfff {
				return false
			}
			i += 6
		case utf16.IsSurrogate(r): // a low one alone
			return false
		}
	}
	return true
}

func hex4(b []byte) rune {
	n, err := strconv.ParseUint(string(b), 16, 32)
	if err != nil {
		return utf8.RuneError
	}
	return rune(n)
}
