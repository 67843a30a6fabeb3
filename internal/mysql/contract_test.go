package mysql_test

import (
	"testing"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/storetest"
	"github.com/convsync/conversations/internal/testenv"
)

// TestContract runs the store contract suite against MariaDB (internal/memstore runs it in memory).
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, o storetest.Options) storetest.Store {
		s, _ := testenv.Store(t, mysql.Options{RecentsWindow: o.Window, LargeChannelMembers: o.Large.Enter,
			LargeChannelLeave: o.Large.Leave, Now: o.Now})
		return s
	}, storetest.Config{Seeds: 1})
}
