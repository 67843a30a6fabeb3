package projector

import (
	"fmt"
	"strings"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
)

// The projection settings have one home: every default comes from here or the domain, and a variable
// set (or set but empty) means what it means for the projector and convctl alike, both reading Rules.
func TestRulesDefaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ map[string]string
		parsed  Rules // what the env tags read
		want    Rules
	}{
		{"nothing set", map[string]string{}, Rules{},
			Rules{RecentsWindow: conversation.DefaultRecentsWindow, LargeChannelMembers: DefaultLargeChannelMembers,
				SkipChannelTypes: []int{6, 7, 8, 9}, MaxEventBytes: DefaultMaxEventBytes}},
		{"set empty: defaults, and no type skipped",
			map[string]string{"RECENTS_WINDOW": "", "LARGE_CHANNEL_MEMBERS": "", "MAX_EVENT_BYTES": "", "SKIP_CHANNEL_TYPES": ""}, Rules{},
			Rules{RecentsWindow: 200, LargeChannelMembers: 1000, MaxEventBytes: 1 << 20}},
		{"set", map[string]string{"RECENTS_WINDOW": "50", "LARGE_CHANNEL_MEMBERS": "0", "MAX_EVENT_BYTES": "10", "SKIP_CHANNEL_TYPES": "3"},
			Rules{RecentsWindow: 50, SkipChannelTypes: []int{3}, MaxEventBytes: 10},
			Rules{RecentsWindow: 50, LargeChannelMembers: 0, SkipChannelTypes: []int{3}, MaxEventBytes: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.parsed
			got.Defaults(tc.environ)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Defaults = %+v, want %+v", got, tc.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestRulesValidate(t *testing.T) {
	err := Rules{RecentsWindow: 0, LargeChannelMembers: -1, SkipChannelTypes: []int{0, 256}, MaxEventBytes: 0}.Validate()
	for _, v := range []string{"RECENTS_WINDOW", "LARGE_CHANNEL_MEMBERS", "SKIP_CHANNEL_TYPES: 0", "SKIP_CHANNEL_TYPES: 256", "MAX_EVENT_BYTES"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("Validate: %v, want an error naming %s", err, v)
		}
	}
	if s := (Rules{SkipChannelTypes: []int{6, 9}}).Skip(); !s[6] || !s[9] || s[7] {
		t.Errorf("Skip() = %v, want 6 and 9 only", s)
	}
}
