package mysql

import (
	"fmt"
	"strings"

	"github.com/convsync/conversations/internal/conversation"
)

// convColumns maps each column of the conversations table to the conversation.Row field it holds, in
// table order. It is the one place a column is named: the select lists, scans and upserts of rows are
// built from it. (sqlx's struct scanning would need db tags on the domain's Row, putting column names in
// the domain, or a mirror struct that names every field again; this table names each once, and scans
// without reflection, which matters for the thousands of rows a batch locks.)
var convColumns = []struct {
	name  string
	field func(r *conversation.Row) any // a pointer to the field
	key   bool                          // part of the primary key: never updated
}{
	{"uid", func(r *conversation.Row) any { return &r.UID }, true},
	{"channel_id", func(r *conversation.Row) any { return &r.ChannelID }, true},
	{"channel_type", func(r *conversation.Row) any { return &r.ChannelType }, true},
	{"unread", func(r *conversation.Row) any { return &r.Unread }, false},
	{"readed_to_msg_seq", func(r *conversation.Row) any { return &r.ReadedToMsgSeq }, false},
	{"last_msg_seq", func(r *conversation.Row) any { return &r.LastMsgSeq }, false},
	{"last_client_msg_no", func(r *conversation.Row) any { return &r.LastClientMsgNo }, false},
	{"last_msg_at", func(r *conversation.Row) any { return &r.Timestamp }, false},
	{"is_deleted", func(r *conversation.Row) any { return &r.Deleted }, false},
	{"deleted_at_seq", func(r *conversation.Row) any { return &r.DeletedAtSeq }, false},
	{"deleted_at_ms", func(r *conversation.Row) any { return &r.DeletedAtMS }, false},
	{"version", func(r *conversation.Row) any { return &r.Version }, false},
	// Followers of large channels (contract §5): the row is the member's state at its base.
	{"follows", func(r *conversation.Row) any { return &r.Follows }, false},
	{"hidden", func(r *conversation.Row) any { return &r.Hidden }, false},
	{"base_arrivals", func(r *conversation.Row) any { return &r.Base.Arrivals }, false},
	{"base_red_dots", func(r *conversation.Row) any { return &r.Base.RedDots }, false},
	{"base_max_seq", func(r *conversation.Row) any { return &r.Base.MaxSeq }, false},
	{"base_floor", func(r *conversation.Row) any { return &r.Base.Floor }, false},
}

// rowColumnList is the columns, qualified by prefix ("c." or ""), for a select or insert list.
func rowColumnList(prefix string) string {
	names := make([]string, len(convColumns))
	for i, c := range convColumns {
		names[i] = prefix + c.name
	}
	return strings.Join(names, ", ")
}

// rowDest returns pointers to r's fields in column order, to scan a row into.
func rowDest(r *conversation.Row) []any {
	dest := make([]any, len(convColumns))
	for i, c := range convColumns {
		dest[i] = c.field(r)
	}
	return dest
}

// appendRowArgs appends r's field values in column order, for an insert.
func appendRowArgs(args []any, r *conversation.Row) []any {
	for _, c := range convColumns {
		switch p := c.field(r).(type) {
		case *string:
			args = append(args, *p)
		case *int64:
			args = append(args, *p)
		case *uint8:
			args = append(args, *p)
		case *bool:
			args = append(args, *p)
		default:
			panic(fmt.Sprintf("convColumns: column %s has a field of type %T", c.name, p)) // a programming error, caught by any test
		}
	}
	return args
}

type rowScanner interface{ Scan(dest ...any) error }

func scanRow(rows rowScanner) (conversation.Row, error) {
	var r conversation.Row
	if err := rows.Scan(rowDest(&r)...); err != nil {
		return r, fmt.Errorf("scan conversation: %w", err)
	}
	return r, nil
}

// selectRow reads whole rows of conversations; a WHERE clause follows.
var selectRow = `SELECT ` + rowColumnList("") + ` FROM conversations`

// upsertRows is the multi-row write of n whole conversation rows. VALUES() rather than a row alias:
// MariaDB has no "AS new" (contract §4).
func upsertRows(n int) string {
	return upsertHead + placeholders(n, rowTuple) + upsertTail
}

var (
	rowTuple   = "(" + strings.TrimSuffix(strings.Repeat("?,", len(convColumns)), ",") + ")"
	upsertHead = `INSERT INTO conversations (` + rowColumnList("") + `) VALUES `
	upsertTail = func() string {
		var updates []string
		for _, c := range convColumns {
			if !c.key {
				updates = append(updates, c.name+" = VALUES("+c.name+")")
			}
		}
		return ` ON DUPLICATE KEY UPDATE ` + strings.Join(updates, ", ")
	}()
)

// zeroColumns is each column's zero value as SQL, in column order.
var zeroColumns = func() []string {
	var zero conversation.Row
	cols := make([]string, len(convColumns))
	for i, c := range convColumns {
		cols[i] = "0"
		if _, ok := c.field(&zero).(*string); ok {
			cols[i] = "''"
		}
	}
	return cols
}()

// zeroRowColumns is a select list of every column's zero value: a line with no row.
var zeroRowColumns = strings.Join(zeroColumns, ", ")

// userRowsSQL reads the user's version and rows in one statement (one read view). The outer join keeps
// the version of a user whose rows were all purged; COALESCE keeps such a line scannable.
var userRowsSQL = func() string {
	cols := make([]string, len(convColumns))
	for i, c := range convColumns {
		cols[i] = "COALESCE(c." + c.name + ", " + zeroColumns[i] + ")"
	}
	return `SELECT v.version, c.uid IS NOT NULL, ` + strings.Join(cols, ", ") +
		` FROM user_versions v LEFT JOIN conversations c ON c.uid = v.uid WHERE v.uid = ?`
}()
