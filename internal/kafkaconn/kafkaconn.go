// Package kafkaconn turns the Kafka connection settings (security protocol, SASL mechanism and
// credentials, TLS files) into the kafka-go values that open connections: a Dialer for readers and
// raw connections, a Transport for writers and admin clients. Every Kafka client of the service is
// built from one Conn, so a broker that requires SASL_SSL is reached the same way by the projector,
// the API's change-feed follower and the operator commands.
package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Security protocols, named as Kafka's own clients name them (security.protocol).
const (
	Plaintext     = "PLAINTEXT"
	SSL           = "SSL"
	SASLPlaintext = "SASL_PLAINTEXT"
	SASLSSL       = "SASL_SSL"
)

// SASL mechanisms (sasl.mechanism).
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// Config is how to connect to the brokers. Binaries embed it in their own configuration, so the same
// variables mean the same thing everywhere. The zero value is PLAINTEXT without authentication.
type Config struct {
	// SecurityProtocol is PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. Default PLAINTEXT.
	SecurityProtocol string `env:"KAFKA_SECURITY_PROTOCOL" envDefault:"PLAINTEXT"`
	// SASLMechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; used with the SASL_* protocols only.
	// Default SCRAM-SHA-512.
	SASLMechanism string `env:"KAFKA_SASL_MECHANISM" envDefault:"SCRAM-SHA-512"`
	// SASLUsername is the SASL user (required with SASL_*).
	SASLUsername string `env:"KAFKA_SASL_USERNAME"`
	// SASLPassword is the SASL password (required with SASL_*). It is never logged.
	SASLPassword string `env:"KAFKA_SASL_PASSWORD"`
	// TLSCAFile is a PEM file of the CAs that sign the brokers' certificates (SSL, SASL_SSL). Default:
	// the system's roots.
	TLSCAFile string `env:"KAFKA_TLS_CA_FILE"`
	// TLSCertFile and TLSKeyFile are a PEM client certificate and key, for brokers that require mutual
	// TLS. Default none; set both or neither.
	TLSCertFile string `env:"KAFKA_TLS_CERT_FILE"`
	TLSKeyFile  string `env:"KAFKA_TLS_KEY_FILE"`
	// TLSServerName overrides the host name checked against the brokers' certificates. Default: the
	// host of each broker address.
	TLSServerName string `env:"KAFKA_TLS_SERVER_NAME"`
}

// Variables are the names of the environment variables Config reads, for commands that take the rest
// of their configuration from flags.
func Variables() []string {
	t := reflect.TypeFor[Config]()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		if n, ok := t.Field(i).Tag.Lookup("env"); ok {
			names = append(names, n)
		}
	}
	return names
}

// Validate reports every invalid field at once, naming the variables.
func (c Config) Validate() error {
	var errs []error
	proto := c.protocol()
	switch proto {
	case Plaintext, SSL, SASLPlaintext, SASLSSL:
	default:
		errs = append(errs, fmt.Errorf("KAFKA_SECURITY_PROTOCOL: %q is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL", c.SecurityProtocol))
	}
	if c.usesSASL() {
		switch c.mechanism() {
		case Plain, ScramSHA256, ScramSHA512:
		default:
			errs = append(errs, fmt.Errorf("KAFKA_SASL_MECHANISM: %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", c.SASLMechanism))
		}
		if c.SASLUsername == "" || c.SASLPassword == "" {
			errs = append(errs, fmt.Errorf("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: both required with %s", proto))
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE: set both or neither"))
	}
	if !c.usesTLS() && (c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSServerName != "") {
		errs = append(errs, fmt.Errorf("KAFKA_TLS_*: set, but KAFKA_SECURITY_PROTOCOL is %s (use SSL or SASL_SSL)", proto))
	}
	return errors.Join(errs...)
}

func (c Config) protocol() string {
	if c.SecurityProtocol == "" {
		return Plaintext
	}
	return strings.ToUpper(c.SecurityProtocol)
}

func (c Config) mechanism() string {
	if c.SASLMechanism == "" {
		return ScramSHA512
	}
	return strings.ToUpper(c.SASLMechanism)
}

func (c Config) usesSASL() bool { p := c.protocol(); return p == SASLPlaintext || p == SASLSSL }
func (c Config) usesTLS() bool  { p := c.protocol(); return p == SSL || p == SASLSSL }

// LogValue is the configuration as logged: the password never, only whether it is set.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("security_protocol", c.protocol())}
	if c.usesSASL() {
		attrs = append(attrs, slog.String("sasl_mechanism", c.mechanism()), slog.String("sasl_username", c.SASLUsername),
			slog.Bool("sasl_password_set", c.SASLPassword != ""))
	}
	if c.usesTLS() {
		attrs = append(attrs, slog.String("tls_ca_file", c.TLSCAFile), slog.String("tls_cert_file", c.TLSCertFile),
			slog.String("tls_server_name", c.TLSServerName))
	}
	return slog.GroupValue(attrs...)
}

// String keeps fmt from printing the password.
func (c Config) String() string { return c.LogValue().String() }

// Conn holds what every connection to the brokers needs: the TLS configuration and the SASL
// mechanism, built once. A nil *Conn connects in plaintext without authentication.
type Conn struct {
	tls  *tls.Config
	sasl sasl.Mechanism
}

// New validates c, reads its certificate files and builds the SASL mechanism. It returns an error
// naming the variable when the configuration is invalid or a file cannot be read or parsed.
func New(c Config) (*Conn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	conn := &Conn{}
	if c.usesTLS() {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName}
		if c.TLSCAFile != "" {
			pem, err := os.ReadFile(c.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("KAFKA_TLS_CA_FILE: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("KAFKA_TLS_CA_FILE: %s holds no PEM certificate", c.TLSCAFile)
			}
			tc.RootCAs = pool
		}
		if c.TLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
			if err != nil {
				return nil, fmt.Errorf("KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		conn.tls = tc
	}
	if c.usesSASL() {
		switch c.mechanism() {
		case Plain:
			conn.sasl = plain.Mechanism{Username: c.SASLUsername, Password: c.SASLPassword}
		case ScramSHA256, ScramSHA512:
			algo := scram.SHA512
			if c.mechanism() == ScramSHA256 {
				algo = scram.SHA256
			}
			m, err := scram.Mechanism(algo, c.SASLUsername, c.SASLPassword)
			if err != nil {
				return nil, fmt.Errorf("KAFKA_SASL_MECHANISM %s: %w", c.mechanism(), err)
			}
			conn.sasl = m
		}
	}
	return conn, nil
}

// dialTimeout bounds connecting and authenticating to one broker.
const dialTimeout = 10 * time.Second

// Dialer returns a new Dialer for kafka-go readers and raw connections. A nil c gives a plaintext one.
func (c *Conn) Dialer() *kafkago.Dialer {
	d := &kafkago.Dialer{Timeout: dialTimeout, DualStack: true}
	if c != nil {
		d.TLS = c.tlsConfig()
		d.SASLMechanism = c.sasl
	}
	return d
}

// Transport returns a new Transport for kafka-go writers and clients. Each call returns its own
// connection pool; close it with CloseIdleConnections when done. A nil c gives a plaintext one.
func (c *Conn) Transport() *kafkago.Transport {
	t := &kafkago.Transport{DialTimeout: dialTimeout}
	if c != nil {
		t.TLS = c.tlsConfig()
		t.SASL = c.sasl
	}
	return t
}

// tlsConfig is a copy of the TLS configuration, since kafka-go may set ServerName on what it gets.
func (c *Conn) tlsConfig() *tls.Config {
	if c.tls == nil {
		return nil
	}
	return c.tls.Clone()
}
