package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/readcache"
)

// versionedFake gives the fake store the source methods the caches read through.
type versionedFake struct{ *fakeStore }

func (v versionedFake) UserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error) {
	l, err := v.ReadList(ctx, conversation.Query{UID: uid})
	return l.Rows, l.Version, err
}

func (v versionedFake) Recents(ctx context.Context, ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error) {
	r, err := v.ReadRecents(ctx, "", ranges)
	return r.Messages, err
}

func (v versionedFake) UserVersion(context.Context, string) (int64, error) { return 0, v.err }

func (v versionedFake) UserVersions(context.Context, []string) (map[string]int64, error) {
	return nil, v.err
}

// While the database is unreachable, sync answers a user whose list and recents are cached from the
// caches, saying so in X-Conv-Outage, and 503 for a user whose list is not cached.
func TestSyncDuringADatabaseOutage(t *testing.T) {
	_, s := newFake(t, Options{})
	src := versionedFake{s}
	now := time.Unix(100, 0)
	clock := func() time.Time { return now }
	h, err := New(s, readcache.NewRows(src, readcache.RowsOptions{MaxAge: time.Second, Now: clock}),
		readcache.NewRecents(src, readcache.RecentsOptions{MaxAge: time.Second, Now: clock}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	sync := func(uid string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/conversation/sync", strings.NewReader(`{"uid":"`+uid+`","msg_count":2}`)))
		return w
	}
	before := sync("u1")
	if before.Code != 200 || before.Header().Get(HeaderOutage) != "" {
		t.Fatalf("before the outage: %d, %s=%q", before.Code, HeaderOutage, before.Header().Get(HeaderOutage))
	}
	now = now.Add(time.Minute) // past the caches' MaxAge: a sync must ask the database
	s.err = fmt.Errorf("dial: %w", conversation.ErrUnavailable)
	during := sync("u1")
	if during.Code != 200 || during.Header().Get(HeaderOutage) != "cached" || during.Body.String() != before.Body.String() {
		t.Errorf("during the outage: %d, %s=%q, body %s; want the cached answer, marked", during.Code, HeaderOutage,
			during.Header().Get(HeaderOutage), clip(during.Body.String()))
	}
	if uncached := sync("u9"); uncached.Code != 503 {
		t.Errorf("an uncached user during the outage: %d, want 503", uncached.Code)
	}
}
