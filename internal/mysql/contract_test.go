package mysql_test

import (
	"testing"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/storetest"
	"github.com/convsync/conversations/internal/testenv"
)

// TestContract runs the store contract suite against MariaDB (internal/memstore runs it in memory), with
// a batch's writes sharing round trips (the default) and with one statement per round trip.
func TestContract(t *testing.T) {
	for _, tt := range []struct {
		name   string
		single bool
	}{{"several statements per round trip", false}, {"one statement per round trip", true}} {
		t.Run(tt.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T, o storetest.Options) storetest.Store {
				s, _ := testenv.Store(t, mysql.Options{RecentsWindow: o.Window, LargeChannelMembers: o.Large.Enter,
					LargeChannelLeave: o.Large.Leave, Now: o.Now, OneStatementPerTrip: tt.single})
				return s
			}, storetest.Config{Seeds: 1})
		})
	}
}
