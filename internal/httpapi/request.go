package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/convsync/conversations/internal/conversation"
)

// maxBodyBytes bounds a request body (contract §2: over 1 MiB is 413).
const maxBodyBytes = 1 << 20

// decodeJSON reads the request body, at most maxBodyBytes, into dst. Unknown fields are ignored and
// null leaves a field at its zero value, as real clients need; a value of the wrong JSON type, and a
// uid, channel_id or last_msg_seqs that is not valid UTF-8, is a 400 that names the field.
func decodeJSON(r *http.Request, dst any) error {
	if r.ContentLength > maxBodyBytes {
		return errTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return badRequest("cannot read the request body")
	}
	if len(body) > maxBodyBytes {
		return errTooLarge
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("the request body must be a JSON object")
	}
	if err := json.Unmarshal(body, dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		if !errors.As(err, &typeErr) {
			return badRequest("the request body is not valid JSON: %v", err)
		}
		if typeErr.Field == "" {
			return badRequest("the request body must be a JSON object")
		}
		// The path names embedded structs too ("convRequest.channel_id"); clients know only the JSON name.
		name := typeErr.Field[strings.LastIndexByte(typeErr.Field, '.')+1:]
		want := typeErr.Type
		if f, ok := jsonField(reflect.TypeOf(dst).Elem(), name); ok {
			want = f.Type // for an array element, the array
		}
		return badRequest("%s must be %s", name, jsonKind(want))
	}
	// Ids are the bytes the client sent: the decoder would have turned invalid UTF-8 into U+FFFD and
	// looked up (or written) another conversation.
	if field, err := conversation.CheckRawIDs(body, "uid", "channel_id", "last_msg_seqs"); err != nil {
		return badRequest("%s %v", field, err)
	}
	return nil
}

// jsonField finds the field of struct type t (or of a struct it embeds) whose JSON name is name.
func jsonField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			if sub, ok := jsonField(f.Type, name); ok {
				return sub, true
			}
			continue
		}
		if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// jsonKind names the JSON type a Go field wants, for error messages.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Slice, reflect.Array:
		return "an array of " + jsonKindPlural(t.Elem())
	default:
		return "a JSON " + t.Kind().String()
	}
}

func jsonKindPlural(t reflect.Type) string {
	if t.Kind() == reflect.String {
		return "strings"
	}
	return "integers"
}

// checkUID applies the domain's uid rules (conversation.CheckUID), in WuKongIM's words when it is empty.
func checkUID(uid string) error {
	if err := conversation.CheckUID(uid); err != nil {
		if conversation.IsEmptyID(err) {
			return badRequest(msgEmptyUID)
		}
		return badRequest("uid %v", err)
	}
	return nil
}

// convRequest is the body of setUnread, delete and clearUnread. message_seq, which some clients send,
// is not decoded at all: it is accepted and ignored whatever its type.
type convRequest struct {
	UID         string `json:"uid"`
	ChannelID   string `json:"channel_id"`
	ChannelType int64  `json:"channel_type"`
}

// key validates the request and returns the conversation it names.
func (r *convRequest) key() (conversation.ConvKey, error) {
	if err := checkUID(r.UID); err != nil {
		return conversation.ConvKey{}, err
	}
	if r.ChannelID == "" || r.ChannelType == 0 {
		return conversation.ConvKey{}, badRequest(msgEmptyChannel)
	}
	if !conversation.ValidChannelType(r.ChannelType) {
		return conversation.ConvKey{}, badRequest("channel_type must be 1..255")
	}
	if err := conversation.CheckChannelID(r.ChannelID, uint8(r.ChannelType)); err != nil {
		return conversation.ConvKey{}, badRequest("channel_id %v", err)
	}
	return conversation.ConvKey{UID: r.UID, ChannelID: r.ChannelID, ChannelType: uint8(r.ChannelType)}, nil
}
