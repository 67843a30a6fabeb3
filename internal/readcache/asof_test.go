package readcache

import (
	"context"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

// A list served from memory says when it was last known current (Served.AsOf); one read or checked
// during the request says nothing (the request's own time stands).

func TestListAsOf(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	src := &fakeRows{version: 1}
	c := NewRows(src, RowsOptions{MaxAge: 5 * time.Second, Now: func() time.Time { return now }})
	serve := func() (time.Time, bool) {
		t.Helper()
		list, err := c.ReadList(context.Background(), conversation.Query{UID: "u"})
		if err != nil {
			t.Fatal(err)
		}
		return list.Served.AsOf, !list.Served.AsOf.IsZero()
	}
	if at, ok := serve(); ok {
		t.Errorf("loaded during the request: noted %v, want no note", at)
	}
	loadedAt := now
	now = now.Add(3 * time.Second)
	if at, ok := serve(); !ok || !at.Equal(loadedAt) || src.loads != 1 {
		t.Errorf("served from memory: noted %v %v after %d loads, want the load's time %v after 1", at, ok, src.loads, loadedAt)
	}
	now = now.Add(3 * time.Second) // past MaxAge: the version is checked again, now
	if at, ok := serve(); ok || src.versionReads != 2 {
		t.Errorf("checked during the request: noted %v %v after %d version reads, want no note after 2", at, ok, src.versionReads)
	}
}
