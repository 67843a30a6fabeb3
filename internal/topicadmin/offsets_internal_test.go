package topicadmin

import (
	"errors"
	"fmt"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
)

func TestCoordinatorBusy(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{kafkago.NotCoordinatorForGroup, true},
		{fmt.Errorf("fetch: %w", kafkago.GroupLoadInProgress), true},
		{kafkago.GroupCoordinatorNotAvailable, true},
		{kafkago.GroupAuthorizationFailed, false},
		{errors.New("connection refused"), false},
		{nil, false},
	} {
		if got := coordinatorBusy(tt.err); got != tt.want {
			t.Errorf("coordinatorBusy(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
