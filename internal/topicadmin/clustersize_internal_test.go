package topicadmin

import (
	"errors"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
)

// A three-broker cluster with one broker down answers metadata with two brokers, while the topics'
// partitions still name three replicas: the replication (3, 2 in sync) fits the cluster, and a process
// starting during the outage must not be refused as if the cluster had two brokers.
func TestClusterSizeCountsBrokersThatAreDown(t *testing.T) {
	up := []kafkago.Broker{{ID: 1}, {ID: 2}}
	replicas := []kafkago.Broker{{ID: 1}, {ID: 2}, {}} // the down broker: no host known, a zero Broker
	meta := &kafkago.MetadataResponse{Brokers: up, Topics: []kafkago.Topic{{Name: "events",
		Partitions: []kafkago.Partition{{ID: 0, Replicas: replicas}, {ID: 1, Replicas: replicas}}}}}
	if n := clusterSize(meta); n != 3 {
		t.Fatalf("clusterSize = %d, want 3", n)
	}
	r := Replication{Factor: 3, MinInSync: 2}
	if _, _, err := r.effective(clusterSize(meta)); err != nil {
		t.Fatalf("a cluster of three with one broker down refused: %v", err)
	}

	// A cluster that is too small still is: one broker, topics with one replica.
	small := &kafkago.MetadataResponse{Brokers: up[:1], Topics: []kafkago.Topic{{Name: "events",
		Partitions: []kafkago.Partition{{ID: 0, Replicas: up[:1]}}}}}
	if _, _, err := r.effective(clusterSize(small)); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("one broker: effective = %v, want ErrNotDurable", err)
	}
}
