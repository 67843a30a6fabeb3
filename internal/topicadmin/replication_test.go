package topicadmin_test

import (
	"errors"
	"net"
	"strconv"
	"testing"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/topicadmin"
)

func TestReplicationValidate(t *testing.T) {
	for _, c := range []struct {
		name       string
		r          topicadmin.Replication
		notDurable bool
		invalid    bool
	}{
		{"the defaults", topicadmin.Replication{Factor: 3, MinInSync: 2}, false, false},
		{"one in sync: an acknowledged record on one broker", topicadmin.Replication{Factor: 3, MinInSync: 1}, true, false},
		{"as many in sync as replicas: one broker down stops writes", topicadmin.Replication{Factor: 2, MinInSync: 2}, true, false},
		{"one broker, allowed for development", topicadmin.Replication{Factor: 1, MinInSync: 1, AllowUnreplicated: true}, false, false},
		{"more in sync than replicas", topicadmin.Replication{Factor: 2, MinInSync: 3, AllowUnreplicated: true}, false, true},
		{"no replica", topicadmin.Replication{Factor: 0, MinInSync: 0, AllowUnreplicated: true}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.r.Validate()
			if got := errors.Is(err, topicadmin.ErrNotDurable); got != c.notDurable {
				t.Errorf("Validate = %v: ErrNotDurable %v, want %v", err, got, c.notDurable)
			}
			if (err != nil) != (c.notDurable || c.invalid) {
				t.Errorf("Validate = %v, want an error: %v", err, c.notDurable || c.invalid)
			}
		})
	}
}

// On the test broker (one broker unless the test cluster has three): the service's defaults are
// refused with ErrNotDurable, the development flag accepts the topic, and a topic created with unclean
// leader election on gets it turned off.
func TestEnsureReplicatedRefusesWhatOneBrokerCannotKeep(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	name := testenv.Name("test.repl.")
	testenv.DeleteTopicsAtCleanup(t, brokers, name)
	conn, err := kafkago.Dial("tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	all, err := conn.Brokers()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) >= 3 {
		t.Skipf("the test cluster has %d brokers", len(all))
	}
	controller, err := conn.Controller()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := kafkago.Dial("tcp", net.JoinHostPort(controller.Host, strconv.Itoa(controller.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := cc.CreateTopics(kafkago.TopicConfig{Topic: name, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafkago.ConfigEntry{{ConfigName: "unclean.leader.election.enable", ConfigValue: "true"}}}); err != nil {
		t.Fatal(err)
	}
	topic := topicadmin.Topic{Name: name, Partitions: 1}
	err = topicadmin.EnsureReplicated(t.Context(), nil, brokers, topicadmin.Replication{Factor: 3, MinInSync: 2}, nil, topic)
	if !errors.Is(err, topicadmin.ErrNotDurable) {
		t.Fatalf("defaults on %d broker(s): %v, want ErrNotDurable", len(all), err)
	}
	if err := topicadmin.Check(t.Context(), nil, brokers, topicadmin.Replication{Factor: 3, MinInSync: 2}, nil, name); !errors.Is(err, topicadmin.ErrNotDurable) {
		t.Fatalf("Check with the defaults: %v, want ErrNotDurable", err)
	}
	dev := topicadmin.Replication{Factor: 3, MinInSync: 2, AllowUnreplicated: true}
	if err := topicadmin.EnsureReplicated(t.Context(), nil, brokers, dev, nil, topic); err != nil {
		t.Fatalf("allowed for development: %v", err)
	}
	// EnsureReplicated turned unclean election off: Check passes even without a logger to warn on.
	if err := topicadmin.Check(t.Context(), nil, brokers, dev, nil, name); err != nil {
		t.Fatalf("Check after EnsureReplicated: %v", err)
	}
}
