package readcache

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

var errDown = fmt.Errorf("store: %w", conversation.ErrUnavailable)

// downable is a rows source that answers from memory until err is set.
type downable struct {
	version map[string]int64
	err     error
}

func (d *downable) UserRows(_ context.Context, uid string) ([]conversation.Row, int64, error) {
	if d.err != nil {
		return nil, 0, d.err
	}
	v := d.version[uid]
	return []conversation.Row{{ConvKey: conversation.ConvKey{UID: uid, ChannelID: "g1", ChannelType: 2}, Version: v}}, v, nil
}

func (d *downable) UserVersion(_ context.Context, uid string) (int64, error) {
	if d.err != nil {
		return 0, d.err
	}
	return d.version[uid], nil
}

func (d *downable) UserVersions(context.Context, []string) (map[string]int64, error) {
	return nil, errors.New("unused")
}

func TestRowsOutagePath(t *testing.T) {
	for _, maxAge := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("max age %s", maxAge), func(t *testing.T) {
			src := &downable{version: map[string]int64{"alice": 5, "bob": 7, "carol": 9}}
			now := time.Unix(100, 0)
			c := NewRows(src, RowsOptions{MaxAge: maxAge, Now: func() time.Time { return now }})
			for _, uid := range []string{"alice", "bob"} {
				if _, _, err := rowsOf(c.ReadList(context.Background(), conversation.Query{UID: uid})); err != nil {
					t.Fatal(err)
				}
			}
			now = now.Add(time.Hour) // far past MaxAge: only the outage path may serve these lists now
			c.Notify("bob", 8)
			src.err = errDown

			list, err := c.ReadList(context.Background(), conversation.Query{UID: "alice"})
			if err != nil || list.Version != 5 || len(list.Rows) != 1 || !list.Served.Outage {
				t.Errorf("alice (cached, not announced since): %d rows, version %d, %v, noted %v; want her list, noted",
					len(list.Rows), list.Version, err, list.Served.Outage)
			}
			for _, uid := range []string{"bob", "carol"} { // bob's list is known stale; carol's was never cached
				if list, err := c.ReadList(context.Background(), conversation.Query{UID: uid}); !errors.Is(err, conversation.ErrUnavailable) || list.Served.Outage {
					t.Errorf("%s: %v, noted %v; want ErrUnavailable, not noted", uid, err, list.Served.Outage)
				}
			}
			src.err = errors.New("some other fault")
			if _, _, err := rowsOf(c.ReadList(context.Background(), conversation.Query{UID: "alice"})); err == nil {
				t.Error("a fault other than unavailability was hidden by the cache")
			}
		})
	}
}

func TestRecentsOutagePath(t *testing.T) {
	w := &window{msgs: map[conversation.ChannelKey]map[int64]conversation.Message{}}
	g2 := conversation.ChannelKey{Key: "g2", Type: 2}
	w.add(g1, 1, 2, 3)
	w.add(g2, 1, 2, 3)
	now := time.Unix(0, 0)
	src := &downWindow{window: w}
	c := NewRecents(src, RecentsOptions{MaxAge: time.Second, Now: func() time.Time { return now }})
	if _, err := messagesOf(c.ReadRecents(context.Background(), "u1", []conversation.SeqRange{{Channel: g1, UpTo: 3, Count: 3}})); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	src.err = errDown

	got, err := c.ReadRecents(context.Background(), "u1", []conversation.SeqRange{{Channel: g1, UpTo: 3, Count: 2}})
	if err != nil || seqs(got.Messages[g1]) != "[3 2]" || !got.Served.Outage {
		t.Errorf("cached channel: %s, %v, noted %v; want [3 2] from the outage path", seqs(got.Messages[g1]), err, got.Served.Outage)
	}
	_, err = messagesOf(c.ReadRecents(context.Background(), "u1", []conversation.SeqRange{{Channel: g1, UpTo: 3, Count: 2}, {Channel: g2, UpTo: 3, Count: 2}}))
	if !errors.Is(err, conversation.ErrUnavailable) {
		t.Errorf("with an uncached channel: %v, want ErrUnavailable", err)
	}
}

type downWindow struct {
	*window
	err error
}

func (d *downWindow) Recents(ctx context.Context, ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error) {
	if d.err != nil {
		return nil, d.err
	}
	return d.window.Recents(ctx, ranges)
}
