package readcache

import "github.com/convsync/conversations/internal/conversation"

// rowsOf, messagesOf and derived unpack what the caches return, for tests that look only at the rows
// or messages.
func rowsOf(l conversation.ListRead, err error) ([]conversation.Row, int64, error) {
	return l.Rows, l.Version, err
}

func messagesOf(r conversation.RecentsRead, err error) (map[conversation.ChannelKey][]conversation.Message, error) {
	return r.Messages, err
}

func derived(l conversation.ListRead, err error) ([]conversation.Row, error) { return l.Rows, err }

// RowsOf and MessagesOf serve the external tests (rows_test.go).
var (
	RowsOf     = rowsOf
	MessagesOf = messagesOf
)
