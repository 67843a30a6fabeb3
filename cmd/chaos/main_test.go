package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestShortChaos is make chaos's short variant, in make test: a few kills of each kind of replica, one
// database outage (through chaos's proxy: the shared server is never restarted), a small fuzz round,
// and the verdict against the model. The shared broker is not restarted: make chaos restarts a private
// one.
func TestShortChaos(t *testing.T) {
	dsn, brokers := os.Getenv("TEST_MYSQL_DSN"), os.Getenv("TEST_KAFKA_BROKERS")
	if dsn == "" || brokers == "" {
		if os.Getenv("REQUIRE_INTEGRATION") == "1" {
			t.Fatal("TEST_MYSQL_DSN and TEST_KAFKA_BROKERS are required (run the tests with make test)")
		}
		t.Skip("no TEST_MYSQL_DSN / TEST_KAFKA_BROKERS")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/convsync/conversations/cmd/projector", "github.com/convsync/conversations/cmd/api")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the replicas: %v\n%s", err, out)
	}
	var out bytes.Buffer
	err := run(t.Context(), []string{"-mysql", dsn, "-brokers", brokers, "-bin", bin, "-logs", t.TempDir(),
		"-messages", "2000", "-rounds", "3", "-kills", "4", "-followers", "4", "-mutations", "20",
		"-fuzz-api", "500", "-fuzz-events", "200", "-outage", "2s"}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, figure := range []string{"lost               0", "double-counted     0", "missed             0", "5xx                0", "stalls             0", "PASS"} {
		if !strings.Contains(out.String(), figure) {
			t.Errorf("the report lacks %q", figure)
		}
	}
}
