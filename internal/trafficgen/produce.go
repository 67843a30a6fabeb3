package trafficgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/kafkaconn"

	"github.com/convsync/conversations/internal/topicadmin"
)

// ProducerConfig says where and how records are written.
type ProducerConfig struct {
	Brokers []string
	// Kafka is how to connect (TLS, SASL); nil connects in plaintext.
	Kafka *kafkaconn.Conn
	Topic string
	// ChunkSize is how many records one synchronous write carries (default 2,000).
	ChunkSize int
	// Progress, when set, receives a line every ProgressEvery (default 2 s) on long runs: records sent,
	// the total when known, and the rate.
	Progress      io.Writer
	ProgressEvery time.Duration
}

// Produce writes records to the topic and returns how many were written. Records are partitioned by a
// hash of their key (kafka.Hash), so one channel's records stay in one partition in stream order, and
// each write waits for all in-sync replicas (acks=all) before the next starts: when Produce returns nil,
// every record is durably in the topic, in order per key. total (0 if unknown) is only for the progress
// line. It fails when the topic does not exist (auto-creation is off) or the brokers cannot be reached;
// records written before the failure stay written.
func Produce(ctx context.Context, cfg ProducerConfig, records iter.Seq[Record], total int) (int, error) {
	if len(cfg.Brokers) == 0 || cfg.Topic == "" {
		return 0, errors.New("produce: brokers and topic are required")
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 2_000
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = 2 * time.Second
	}
	// A transport of its own: kafka-go's shared default caches cluster metadata for seconds, long enough
	// to miss a topic created a moment ago (tests create one per run).
	transport := cfg.Kafka.Transport()
	transport.MetadataTopics = []string{cfg.Topic}
	defer transport.CloseIdleConnections()
	if err := waitForTopic(ctx, cfg, transport); err != nil {
		return 0, err
	}
	w := &kafkago.Writer{
		Addr:         kafkago.TCP(cfg.Brokers...),
		Transport:    transport,
		Topic:        cfg.Topic,
		Balancer:     &kafkago.Hash{},
		RequiredAcks: kafkago.RequireAll,
		BatchSize:    cfg.ChunkSize,
		BatchBytes:   16 << 20,
		// A synchronous write of a whole chunk must not wait for partly filled partition batches.
		BatchTimeout: 5 * time.Millisecond,
		MaxAttempts:  5,
	}
	sent := 0
	start, lastReport := time.Now(), time.Now()
	chunk := make([]kafkago.Message, 0, cfg.ChunkSize)
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		if err := w.WriteMessages(ctx, chunk...); err != nil {
			return fmt.Errorf("write to topic %s: %w", cfg.Topic, err)
		}
		sent += len(chunk)
		chunk = chunk[:0]
		if cfg.Progress != nil && time.Since(lastReport) >= cfg.ProgressEvery {
			lastReport = time.Now()
			reportProgress(cfg.Progress, sent, total, time.Since(start))
		}
		return nil
	}
	var err error
	for r := range records {
		chunk = append(chunk, kafkago.Message{Key: r.Key, Value: r.Value})
		if len(chunk) == cfg.ChunkSize {
			if err = flush(); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = flush()
	}
	if cerr := w.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close writer: %w", cerr)
	}
	return sent, err
}

// waitForTopic waits a few seconds for the topic to show up with leaders for all partitions: a topic
// just created is not known to every broker at once. It fails when the topic does not exist.
func waitForTopic(ctx context.Context, cfg ProducerConfig, transport *kafkago.Transport) error {
	client := &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: transport, Timeout: 10 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		md, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{cfg.Topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) > 0 {
			ready := true
			for _, p := range md.Topics[0].Partitions {
				ready = ready && p.Error == nil && p.Leader.Host != ""
			}
			if ready {
				return nil
			}
		}
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error != nil {
			err = md.Topics[0].Error
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("topic %s is not available (it must exist: auto-creation is off): %w", cfg.Topic, errors.Join(err, ctx.Err()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func reportProgress(out io.Writer, sent, total int, elapsed time.Duration) {
	rate := float64(sent) / elapsed.Seconds()
	if total > 0 {
		fmt.Fprintf(out, "trafficgen: sent %d/%d records (%.0f%%), %.0f records/s\n", sent, total, 100*float64(sent)/float64(total), rate)
		return
	}
	fmt.Fprintf(out, "trafficgen: sent %d records, %.0f records/s\n", sent, rate)
}

// TopicRecords returns how many records were ever written to the topic: the sum of its partitions' end
// offsets. A stream whose SeqBase is at least this number continues the sequences of every stream
// written to the topic before (each used fewer seqs per channel than it wrote records). It fails when the
// topic does not exist or the brokers cannot be reached.
func TopicRecords(ctx context.Context, kc *kafkaconn.Conn, brokers []string, topic string) (int64, error) {
	transport := kc.Transport()
	transport.MetadataTopics = []string{topic}
	defer transport.CloseIdleConnections()
	cfg := ProducerConfig{Brokers: brokers, Topic: topic, Kafka: kc}
	if err := waitForTopic(ctx, cfg, transport); err != nil {
		return 0, err
	}
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: transport, Timeout: 10 * time.Second}
	// A partition created a moment ago may answer "not leader" for a little while.
	deadline := time.Now().Add(10 * time.Second)
	for {
		end, err := topicadmin.EndOffsets(ctx, client, topic)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			var n int64
			for _, o := range end {
				n += o
			}
			return n, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
