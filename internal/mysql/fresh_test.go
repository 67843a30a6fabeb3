package mysql

import (
	"errors"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

// A transaction that took its first version more than half the large-version slack before committing
// is a conflict, so that it is retried with new versions (contract §5: incremental syncs rely on it).
func TestVersionsFresh(t *testing.T) {
	half := conversation.LargeVersionSlackMS * time.Millisecond / 2
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
		if err := versionsFresh(tt.takenAt); errors.Is(err, conversation.ErrConflict) != tt.conflict {
			t.Errorf("%s: versionsFresh = %v, want conflict %v", tt.name, err, tt.conflict)
		}
	}
}
