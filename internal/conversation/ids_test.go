package conversation

import (
	"errors"
	"strings"
	"testing"
)

func TestIdentifierRules(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantErr   string // "" for valid
		wantEmpty bool
	}{
		{"uid", CheckUID("alice"), "", false},
		{"uid at the limit", CheckUID(strings.Repeat("u", MaxUIDLen)), "", false},
		{"empty uid", CheckUID(""), "is empty", true},
		{"uid over the limit", CheckUID(strings.Repeat("u", MaxUIDLen+1)), "is longer than 64 bytes", false},
		{"group id at the limit", CheckChannelID(strings.Repeat("g", MaxChannelIDLen), 2), "", false},
		{"group id over the limit", CheckChannelID(strings.Repeat("g", MaxChannelIDLen+1), 2), "is longer than 128 bytes", false},
		{"person channel id is a uid", CheckChannelID(strings.Repeat("u", MaxUIDLen+1), ChannelTypePerson), "is longer than 64 bytes", false},
		{"empty channel id", CheckChannelID("", 2), "is empty", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.wantErr == "" {
				if tt.err != nil {
					t.Fatalf("err = %v, want valid", tt.err)
				}
				return
			}
			if tt.err == nil || tt.err.Error() != tt.wantErr || !errors.Is(tt.err, ErrInvalid) || IsEmptyID(tt.err) != tt.wantEmpty {
				t.Fatalf("err = %v (empty %v), want %q wrapping ErrInvalid (empty %v)", tt.err, IsEmptyID(tt.err), tt.wantErr, tt.wantEmpty)
			}
		})
	}
}

func TestValidChannelType(t *testing.T) {
	for typ, want := range map[int64]bool{0: false, 1: true, 255: true, 256: false, -1: false} {
		if got := ValidChannelType(typ); got != want {
			t.Errorf("ValidChannelType(%d) = %v, want %v", typ, got, want)
		}
	}
}
