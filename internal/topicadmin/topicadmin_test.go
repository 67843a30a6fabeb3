package topicadmin_test

import (
	"testing"

	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/topicadmin"
)

func TestEnsureTopicsSetsAndRaisesButNeverLowersTheSizeLimit(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	name := testenv.Name("test.limit.")
	testenv.DeleteTopicsAtCleanup(t, brokers, name)
	for _, step := range []struct {
		name      string
		set, want int
	}{
		{"created with the limit", 100_000, 100_000},
		{"an existing topic's lower limit is raised", 200_000, 200_000},
		{"a higher limit is left alone", 50_000, 200_000},
	} {
		if err := topicadmin.Ensure(t.Context(), nil, brokers, topicadmin.Topic{Name: name, Partitions: 1, MaxMessageBytes: step.set}); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got, err := topicadmin.MaxMessageBytes(t.Context(), nil, brokers, name)
		if err != nil || got != step.want {
			t.Errorf("%s: max.message.bytes %d, %v; want %d", step.name, got, err, step.want)
		}
	}
}
