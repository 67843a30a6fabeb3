package mysql_test

import (
	"testing"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/storetest"
	"github.com/convsync/conversations/internal/testenv"
)

// TestContract runs the store contract suite against MariaDB (internal/memstore runs it in memory): by
// default (a batch's writes sharing round trips), with one statement per round trip, with optimistic
// row writes, and with those and the row cache (mutations between batches make cached rows stale).
func TestContract(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts mysql.Options
	}{
		{"several statements per round trip", mysql.Options{}},
		{"one statement per round trip", mysql.Options{OneStatementPerTrip: true}},
		{"optimistic row writes", mysql.Options{OptimisticRowWrites: true}},
		{"row cache", mysql.Options{OptimisticRowWrites: true, RowCacheRows: 1000}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T, o storetest.Options) storetest.Store {
				opts := tt.opts
				opts.RecentsWindow, opts.LargeChannelMembers, opts.LargeChannelLeave, opts.Now = o.Window, o.Large.Enter, o.Large.Leave, o.Now
				s, _ := testenv.Store(t, opts)
				return s
			}, storetest.Config{Seeds: 1})
		})
	}
}
