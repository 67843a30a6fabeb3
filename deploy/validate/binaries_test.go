package validate

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	corev1 "k8s.io/api/core/v1"
)

// binDir holds the binaries built once by TestMain from the repository's cmd/.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "validate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/api", "./cmd/projector", "./cmd/migrate", "./cmd/convctl")
	build.Dir = filepath.Join("..", "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var caOnce sync.Once
var caFile string

// testCA is a PEM CA file, standing in for the CA files the manifests mount.
func testCA(t *testing.T) string {
	caOnce.Do(func() {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "validate"}, IsCA: true,
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		caFile = filepath.Join(binDir, "ca.pem")
		if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			panic(err)
		}
	})
	return caFile
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// localize points a manifest's environment at nothing real: the database and brokers at a closed port,
// CA files at a test CA, the HTTP listener at a free loopback port (returned as addr). Everything else,
// the SASL mechanism, topics, timeouts, is what the manifest sets.
func localize(t *testing.T, env map[string]string) (map[string]string, string) {
	out := map[string]string{}
	addr := freeAddr(t)
	for k, v := range env {
		switch {
		case k == "MYSQL_DSN" || k == "MYSQL_READ_DSNS":
			cfg, err := gomysql.ParseDSN(v)
			if err != nil && !strings.HasPrefix(v, "placeholder-") {
				t.Errorf("MYSQL_DSN does not parse: %v", err)
			}
			if err != nil {
				cfg = gomysql.NewConfig()
				cfg.User, cfg.Passwd, cfg.Net, cfg.DBName = "u", "p", "tcp", "conversations"
			}
			cfg.Addr = "127.0.0.1:1"
			v = cfg.FormatDSN()
		case k == "KAFKA_BROKERS":
			v = "127.0.0.1:1"
		case strings.HasSuffix(k, "_CA_FILE") && v != "":
			v = testCA(t)
		case k == "API_HTTP_ADDR" || k == "PROJECTOR_HTTP_ADDR":
			v = addr
		}
		out[k] = v
	}
	return out, addr
}

// proc is a binary running with a given environment.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuf
	addr string
	done chan struct{} // closed when the process has exited; err is then set
	err  error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// start runs bin with exactly env (no inherited variables, so defaults apply where the manifest sets
// nothing) and waits until addr answers /healthz, failing with the binary's output if it exits first.
func start(t *testing.T, bin string, env map[string]string, addr string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(filepath.Join(binDir, bin)), out: &syncBuf{}, addr: addr, done: make(chan struct{})}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("%s exited with the manifest's environment (%v):\n%s", bin, p.err, p.out.String())
		default:
		}
		if code, _ := p.get(t, "/healthz"); code == http.StatusOK {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /healthz not 200 after 20s:\n%s", bin, p.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *proc) get(t *testing.T, path string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+path, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestBinariesAcceptTheirManifests starts each Deployment's binary with the environment its manifest
// gives it (addresses pointed at nothing): the configuration must be accepted, and every probe path
// must be one the binary serves. The migrate Job's environment must pass migrate's configuration checks
// (it then fails to reach the database, which is expected here).
func TestBinariesAcceptTheirManifests(t *testing.T) {
	for _, overlay := range overlays {
		r := render(t, overlay)
		for _, w := range r.workloads() {
			c := w.tmpl.Spec.Containers[0]
			t.Run(overlay+"/"+w.name, func(t *testing.T) {
				env, addr := localize(t, envOf(t, r, c))
				if w.kind == "Job" {
					env["MIGRATE_WAIT"] = "1s"
					out, err := runToEnd(t, binaryOf(c), env)
					if err == nil || strings.Contains(out, "config") {
						t.Fatalf("migrate with the Job's environment: err %v, want a connection failure, not a config error:\n%s", err, out)
					}
					return
				}
				p := start(t, binaryOf(c), env, addr)
				for name, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
					if probe == nil || probe.HTTPGet == nil {
						continue
					}
					code, body := p.get(t, probe.HTTPGet.Path)
					if code == 0 || code == http.StatusNotFound {
						t.Errorf("%s probe %s: status %d: the binary does not serve it (%s)", name, probe.HTTPGet.Path, code, body)
					}
				}
			})
		}
	}
}

func runToEnd(t *testing.T, bin string, env map[string]string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, bin), args...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("%s did not exit within 60s", bin)
	}
}
