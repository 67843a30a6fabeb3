package refmodel

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/convsync/conversations/internal/conversation"
)

// UserRowsFunc reads one user's rows as sync sees them (mysql.Store.UserRows is one): with large
// channels (contract §5) the tables hold followers' bases, not conversations, so what matters is what
// sync derives.
type UserRowsFunc func(ctx context.Context, uid string) ([]conversation.Row, int64, error)

// CompareSync compares every user's conversations as userRows reads them (hidden rows left out) with
// the model's rows, every field but versions and delete times; it also requires each returned version
// to be > 0. The users are those of db's user_versions. It returns an error only when reading fails.
func CompareSync(ctx context.Context, db *sql.DB, userRows UserRowsFunc, m *Model) (Report, error) {
	var rep Report
	want := map[Key]Row{}
	for _, r := range m.Rows() {
		want[r.Key] = fields(r)
	}
	rs, err := db.QueryContext(ctx, `SELECT uid FROM user_versions`)
	if err != nil {
		return rep, fmt.Errorf("read user_versions: %w", err)
	}
	var users []string
	for rs.Next() {
		var u string
		if err := rs.Scan(&u); err != nil {
			rs.Close()
			return rep, err
		}
		users = append(users, u)
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return rep, fmt.Errorf("read user_versions: %w", err)
	}
	seen := 0
	for _, uid := range users {
		rows, _, err := userRows(ctx, uid)
		if err != nil {
			return rep, err
		}
		for _, g := range rows {
			if g.Hidden {
				continue
			}
			rep.Rows++
			k := Key{UID: g.UID, ChannelID: g.ChannelID, ChannelType: g.ChannelType}
			got := Row{Key: k, Unread: g.Unread, ReadedToMsgSeq: g.ReadedToMsgSeq, DeletedAtSeq: g.DeletedAtSeq,
				IsDeleted: g.Deleted, LastMsgSeq: g.LastMsgSeq, LastClientMsgNo: g.LastClientMsgNo, Timestamp: g.Timestamp}
			w, ok := want[k]
			switch {
			case !ok:
				rep.bad("row %v: unexpected %+v", k, got)
			case got != w:
				rep.bad("row %v: got %+v (follows %v), want %+v", k, got, g.Follows, w)
			default:
				seen++
			}
			if g.Version <= 0 {
				rep.bad("row %v: version %d, want > 0", k, g.Version)
			}
		}
	}
	if seen != len(want) {
		rep.bad("sync shows %d of the model's %d conversations as the model has them", seen, len(want))
	}
	return rep, nil
}
