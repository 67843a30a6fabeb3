package readcache

import "testing"

// The race guard the three caches share: a load keeps what it read only if its key was not announced
// after the load's mark, and forgetting (the bound) makes every load in flight suspect.
func TestAnnouncementsGuardLoads(t *testing.T) {
	a := newAnnouncements[string](3)
	a.announce("x")
	mark := a.mark()
	if a.since("x", mark) || a.since("y", mark) {
		t.Fatal("an announcement before the mark made a load suspect")
	}
	a.announce("y")
	if !a.since("y", mark) {
		t.Error("y announced after the mark: its load must not be kept")
	}
	if a.since("x", mark) {
		t.Error("x was announced only before the mark")
	}
	a.announce("z")
	mark = a.mark()
	a.announce("w") // a fourth key: everything is forgotten
	if len(a.latest) != 1 {
		t.Errorf("%d keys remembered, want 1 after forgetting", len(a.latest))
	}
	if !a.since("x", mark) {
		t.Error("forgotten while a load of x was in flight: the load must not be kept")
	}
	if a.since("x", a.mark()) {
		t.Error("a load started after forgetting is suspect")
	}
}

// Lists record users' versions: a cached version below the announced one is stale.
func TestAnnouncementsRecordVersions(t *testing.T) {
	a := newAnnouncements[string](2)
	if a.record("u", 5) || !a.newer("u", 4) || a.newer("u", 5) {
		t.Fatal("version 5 recorded: 4 is stale, 5 is not")
	}
	if a.record("u", 3); !a.newer("u", 4) {
		t.Error("an older version replaced a newer one")
	}
	a.record("v", 1)
	if !a.full() {
		t.Error("two users of two: full")
	}
	if !a.record("w", 1) || a.newer("u", 4) {
		t.Error("a third user: every user forgotten, and reported")
	}
}
