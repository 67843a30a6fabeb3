package kafkaconn_test

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/topicadmin"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     kafkaconn.Config
		wantErr []string // variables the error must name; none: valid
	}{
		{"zero value is plaintext", kafkaconn.Config{}, nil},
		{"sasl_ssl with scram", kafkaconn.Config{SecurityProtocol: "SASL_SSL", SASLMechanism: "SCRAM-SHA-256",
			SASLUsername: "u", SASLPassword: "p", TLSCAFile: "/ca.pem"}, nil},
		{"lower case names", kafkaconn.Config{SecurityProtocol: "sasl_plaintext", SASLMechanism: "plain",
			SASLUsername: "u", SASLPassword: "p"}, nil},
		{"unknown protocol", kafkaconn.Config{SecurityProtocol: "TLS"}, []string{"KAFKA_SECURITY_PROTOCOL"}},
		{"sasl without credentials", kafkaconn.Config{SecurityProtocol: "SASL_SSL"},
			[]string{"KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"}},
		{"unknown mechanism, all errors at once", kafkaconn.Config{SecurityProtocol: "SASL_SSL", SASLMechanism: "GSSAPI"},
			[]string{"KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME"}},
		{"cert without key", kafkaconn.Config{SecurityProtocol: "SSL", TLSCertFile: "/c.pem"}, []string{"KAFKA_TLS_KEY_FILE"}},
		{"tls files on plaintext", kafkaconn.Config{TLSCAFile: "/ca.pem"}, []string{"KAFKA_TLS_*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: no error")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

func TestNewReportsUnreadableCA(t *testing.T) {
	_, err := kafkaconn.New(kafkaconn.Config{SecurityProtocol: "SSL", TLSCAFile: t.TempDir() + "/missing.pem"})
	if err == nil || !strings.Contains(err.Error(), "KAFKA_TLS_CA_FILE") {
		t.Fatalf("New with a missing CA file: %v, want an error naming KAFKA_TLS_CA_FILE", err)
	}
}

func TestConfigNeverPrintsPassword(t *testing.T) {
	c := kafkaconn.Config{SecurityProtocol: "SASL_SSL", SASLUsername: "svc", SASLPassword: "hunter2-secret"}
	for _, s := range []string{c.String(), fmt.Sprint(c), fmt.Sprintf("%+v", c), c.LogValue().String()} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("printed configuration holds the password: %s", s)
		}
	}
}

// TestSASLSSL produces and consumes through the broker's SASL_SSL listener with every mechanism, through
// a Transport (writers, admin clients) and a Dialer (consumer groups), and checks that a wrong password
// and an untrusted certificate are refused.
func TestSASLSSL(t *testing.T) {
	sec := testenv.SASLKafka(t)
	plainBrokers := sec.AdminBrokers
	topics := testenv.Topics(t, plainBrokers, 2)

	scramUser := func(algo kafkago.ScramMechanism, h func() hash.Hash, size int) (string, string) {
		user, pass := testenv.Name("convtest-scram-"), testenv.Name("pw-")
		salt := make([]byte, 16)
		_, _ = rand.Read(salt)
		const iterations = 4096
		salted, err := pbkdf2.Key(h, pass, salt, iterations, size)
		if err != nil {
			t.Fatal(err)
		}
		admin := &kafkago.Client{Addr: kafkago.TCP(plainBrokers...), Timeout: 10 * time.Second}
		res, err := admin.AlterUserScramCredentials(context.Background(), &kafkago.AlterUserScramCredentialsRequest{
			Upsertions: []kafkago.UserScramCredentialsUpsertion{{Name: user, Mechanism: algo, Iterations: iterations,
				Salt: salt, SaltedPassword: salted}}})
		if err != nil {
			t.Fatalf("create SCRAM user: %v", err)
		}
		for _, r := range res.Results {
			if r.Error != nil {
				t.Fatalf("create SCRAM user %s: %v", r.User, r.Error)
			}
		}
		t.Cleanup(func() {
			_, _ = admin.AlterUserScramCredentials(context.Background(), &kafkago.AlterUserScramCredentialsRequest{
				Deletions: []kafkago.UserScramCredentialsDeletion{{Name: user, Mechanism: algo}}})
		})
		return user, pass
	}
	u256, p256 := scramUser(kafkago.ScramMechanismSha256, sha256.New, sha256.Size)
	u512, p512 := scramUser(kafkago.ScramMechanismSha512, sha512.New, sha512.Size)

	secure := func(mech, user, pass string) kafkaconn.Config {
		return kafkaconn.Config{SecurityProtocol: "SASL_SSL", SASLMechanism: mech, SASLUsername: user,
			SASLPassword: pass, TLSCAFile: sec.CAFile}
	}
	for _, tc := range []struct {
		name string
		cfg  kafkaconn.Config
	}{
		{"PLAIN", secure("PLAIN", sec.PlainUser, sec.PlainPassword)},
		{"SCRAM-SHA-256", secure("SCRAM-SHA-256", u256, p256)},
		{"SCRAM-SHA-512", secure("SCRAM-SHA-512", u512, p512)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := kafkaconn.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// SCRAM credentials reach the listener shortly after they are created: retry the first write.
			tr := conn.Transport()
			defer tr.CloseIdleConnections()
			w := &kafkago.Writer{Addr: kafkago.TCP(sec.Brokers...), Topic: topics.Events, Transport: tr,
				RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, MaxAttempts: 1}
			defer w.Close()
			value := []byte(testenv.Name(tc.name + "-"))
			for attempt := 0; ; attempt++ {
				err = w.WriteMessages(ctx, kafkago.Message{Key: []byte(tc.name), Value: value})
				if err == nil {
					break
				}
				if attempt == 20 || ctx.Err() != nil {
					t.Fatalf("produce over SASL_SSL: %v", err)
				}
				time.Sleep(250 * time.Millisecond)
			}
			r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: sec.Brokers, Topic: topics.Events,
				GroupID: testenv.Name("convtest-sasl-"), Dialer: conn.Dialer(), StartOffset: kafkago.FirstOffset,
				MaxWait: 100 * time.Millisecond})
			defer r.Close()
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					t.Fatalf("consume over SASL_SSL in a group: %v", err)
				}
				if string(m.Value) == string(value) {
					if err := r.CommitMessages(ctx, m); err != nil {
						t.Fatalf("commit over SASL_SSL: %v", err)
					}
					break
				}
			}
		})
	}

	t.Run("topic creation", func(t *testing.T) { // what cmd/migrate does
		conn, err := kafkaconn.New(secure("SCRAM-SHA-256", u256, p256))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		name := testenv.Name("test.sasl.")
		testenv.DeleteTopicsAtCleanup(t, plainBrokers, name)
		if err := topicadmin.Ensure(ctx, conn, sec.Brokers, topicadmin.Topic{Name: name, Partitions: 2}); err != nil {
			t.Fatalf("create a topic over SASL_SSL: %v", err)
		}
	})
	t.Run("wrong password is refused", func(t *testing.T) {
		conn, err := kafkaconn.New(secure("SCRAM-SHA-512", u512, "not-"+p512))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err = conn.Dialer().DialContext(ctx, "tcp", sec.Brokers[0])
		if !errors.Is(err, kafkago.SASLAuthenticationFailed) {
			t.Fatalf("dial with a wrong password: %v, want SASLAuthenticationFailed", err)
		}
	})
	t.Run("untrusted certificate is refused", func(t *testing.T) {
		cfg := secure("PLAIN", sec.PlainUser, sec.PlainPassword)
		cfg.TLSCAFile = "" // the system's roots do not know the local CA
		conn, err := kafkaconn.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err = conn.Dialer().DialContext(ctx, "tcp", sec.Brokers[0])
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("dial without the CA: %v, want a certificate error", err)
		}
	})
}
