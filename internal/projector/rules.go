package projector

import (
	"errors"
	"fmt"

	"github.com/convsync/conversations/internal/conversation"
)

// DefaultMaxEventBytes is the size above which a record is dead-lettered as too_large (1 MiB).
const DefaultMaxEventBytes = 1 << 20

// DefaultLargeChannelMembers is the stored membership at which a group-like channel fans out at read
// time (contract §5) unless LARGE_CHANNEL_MEMBERS says otherwise.
const DefaultLargeChannelMembers = 1000

// Rules are the settings that decide what a projection writes: two projectors with the same Rules build
// the same read model from the same events. cmd/projector and convctl's rebuild both read them from the
// environment through this struct (its env tags, then Defaults), so a rebuild cannot project with other
// rules than the live projector. A zero value is not usable: call Defaults.
type Rules struct {
	// RecentsWindow is how many of a channel's newest message seqs are kept for recents (RECENTS_WINDOW).
	// Default conversation.DefaultRecentsWindow (200).
	RecentsWindow int64 `env:"RECENTS_WINDOW"`
	// LargeChannelMembers is the stored membership at which a group-like channel fans out at read time
	// (contract §5): its messages write O(1) rows and members' conversations are derived at sync. It
	// stops below half of it (LARGE_CHANNEL_MEMBERS). Default DefaultLargeChannelMembers (1000); 0 turns
	// the mode off (large channels go back to per-member rows as batches reach them).
	LargeChannelMembers int `env:"LARGE_CHANNEL_MEMBERS"`
	// SkipChannelTypes lists channel types whose messages update no conversation (contract §3.2,
	// SKIP_CHANNEL_TYPES). Unset: conversation.DefaultSkippedChannelTypes (6,7,8,9); set but empty: none.
	SkipChannelTypes []int `env:"SKIP_CHANNEL_TYPES" envSeparator:","`
	// MaxEventBytes: a larger record is dead-lettered as too_large (MAX_EVENT_BYTES). Default
	// DefaultMaxEventBytes (1 MiB).
	MaxEventBytes int `env:"MAX_EVENT_BYTES"`
}

// Defaults gives every setting that environ does not set (or sets empty) its default; SKIP_CHANNEL_TYPES
// set but empty means no type is skipped. (No envDefault tags: each default has one home, here or in
// the domain, and the env library would apply one to SKIP_CHANNEL_TYPES set but empty as well.)
func (r *Rules) Defaults(environ map[string]string) {
	unset := func(name string) bool { return environ[name] == "" }
	if unset("RECENTS_WINDOW") {
		r.RecentsWindow = conversation.DefaultRecentsWindow
	}
	if unset("LARGE_CHANNEL_MEMBERS") {
		r.LargeChannelMembers = DefaultLargeChannelMembers
	}
	if _, set := environ["SKIP_CHANNEL_TYPES"]; !set {
		r.SkipChannelTypes = r.SkipChannelTypes[:0]
		for _, t := range conversation.DefaultSkippedChannelTypes() {
			r.SkipChannelTypes = append(r.SkipChannelTypes, int(t))
		}
	}
	if unset("MAX_EVENT_BYTES") {
		r.MaxEventBytes = DefaultMaxEventBytes
	}
}

// Validate reports every invalid setting at once, each error naming its variable.
func (r Rules) Validate() error {
	var errs []error
	if r.RecentsWindow < 1 {
		errs = append(errs, fmt.Errorf("RECENTS_WINDOW: %d, want > 0", r.RecentsWindow))
	}
	if r.LargeChannelMembers < 0 {
		errs = append(errs, fmt.Errorf("LARGE_CHANNEL_MEMBERS: %d, want >= 0 (0: off)", r.LargeChannelMembers))
	}
	for _, t := range r.SkipChannelTypes {
		if !conversation.ValidChannelType(int64(t)) {
			errs = append(errs, fmt.Errorf("SKIP_CHANNEL_TYPES: %d is outside 1..255", t))
		}
	}
	if r.MaxEventBytes < 1 {
		errs = append(errs, fmt.Errorf("MAX_EVENT_BYTES: %d, want > 0", r.MaxEventBytes))
	}
	return errors.Join(errs...)
}

// Skip is the SkipSet of SkipChannelTypes (valid ones: Validate first).
func (r Rules) Skip() conversation.SkipSet {
	skip := make([]uint8, len(r.SkipChannelTypes))
	for i, t := range r.SkipChannelTypes {
		skip[i] = uint8(t)
	}
	return conversation.NewSkipSet(skip...)
}
