package replica_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/replica"
)

// fakeDB is a database whose every read of any user answers version, counting the reads.
type fakeDB struct {
	version        int64
	pos            mysql.Position
	lists, checked atomic.Int64
}

func (f *fakeDB) UserRows(context.Context, string) ([]conversation.Row, int64, error) {
	f.lists.Add(1)
	return nil, f.version, nil
}

func (f *fakeDB) RawUserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error) {
	return f.UserRows(ctx, uid)
}

func (f *fakeDB) UserRowsPage(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error) {
	return f.UserRows(ctx, q.UID)
}

func (f *fakeDB) RawUserRowsPage(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error) {
	return f.UserRows(ctx, q.UID)
}

func (f *fakeDB) UserVersion(context.Context, string) (int64, error) {
	f.checked.Add(1)
	return f.version, nil
}

func (f *fakeDB) UserVersions(context.Context, []string) (map[string]int64, error) { return nil, nil }

func (f *fakeDB) DeriveLarge(_ context.Context, rows []conversation.Row) ([]conversation.Row, error) {
	return rows, nil
}

func (f *fakeDB) PrimaryPosition(context.Context) (mysql.Position, error) { return f.pos, nil }
func (f *fakeDB) AppliedPosition(context.Context) (mysql.Position, error) { return f.pos, nil }

// A floor no replica reaches (here a device's version above anything stored) is waited for by watching
// the user's version, one primary-key read at a time: the replica's list is read once, not every 10 ms
// for the whole wait, and then the primary answers.
func TestAFloorNoReplicaReachesCostsOneListRead(t *testing.T) {
	pos, err := mysql.ParseMariaDBPosition("0-1-10")
	if err != nil {
		t.Fatal(err)
	}
	primary := &fakeDB{version: 100, pos: pos}
	rep := &fakeDB{version: 5, pos: pos}
	// One check at start makes the replica usable; the next is an hour away, so no floor is forgotten.
	r, err := replica.New(primary, []replica.Named{{Name: "r1", DB: rep}},
		replica.Options{Wait: 150 * time.Millisecond, CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		// A new user each time: an answer of the primary is a floor for the user it answered.
		if _, v, err := r.UserRows(ctx, fmt.Sprintf("probe%d", i)); err != nil {
			t.Fatal(err)
		} else if v == rep.version {
			break // the replica answers a user without a floor
		}
		if time.Now().After(deadline) {
			t.Fatal("the replica never became usable")
		}
		time.Sleep(10 * time.Millisecond)
	}

	r.Notify("u1", 50) // what the device says it has: more than the replica will ever have
	lists := rep.lists.Load()
	_, v, err := r.UserRows(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if v != primary.version {
		t.Fatalf("answered version %d, want the primary's %d (the replica is below the floor)", v, primary.version)
	}
	if n := rep.lists.Load() - lists; n != 1 {
		t.Errorf("the replica's list was read %d times while waiting for the floor, want once", n)
	}
	if rep.checked.Load() < 2 {
		t.Errorf("the replica's version was checked %d times during a 150 ms wait, want several", rep.checked.Load())
	}
}
