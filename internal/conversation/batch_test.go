package conversation

import (
	"errors"
	"testing"
	"time"
)

// A transaction that took its first version more than half the large-version slack before committing
// is a conflict, so that it is retried with new versions (contract §5: incremental syncs rely on it).
func TestVersionsFresh(t *testing.T) {
	half := LargeVersionSlackMS * time.Millisecond / 2
	for _, tt := range []struct {
		name     string
		takenAt  time.Time
		conflict bool
	}{
		{"no version taken", time.Time{}, false},
		{"taken just now", time.Now(), false},
		{"taken well within half the slack", time.Now().Add(-half / 2), false},
		{"taken past half the slack", time.Now().Add(-half - time.Second), true},
	} {
		if err := VersionsFresh(tt.takenAt); errors.Is(err, ErrConflict) != tt.conflict {
			t.Errorf("%s: VersionsFresh = %v, want conflict %v", tt.name, err, tt.conflict)
		}
	}
}
