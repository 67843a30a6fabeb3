package memstore_test

import (
	"testing"

	"github.com/convsync/conversations/internal/memstore"
	"github.com/convsync/conversations/internal/storetest"
)

// TestContract runs the store contract suite against the store in memory, with the differential
// test's full set of seeds (it costs no database).
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, o storetest.Options) storetest.Store {
		return memstore.New(memstore.Options{RecentsWindow: o.Window, Large: o.Large, Now: o.Now})
	}, storetest.Config{Seeds: 6})
}
