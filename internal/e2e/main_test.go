package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/trafficgen"
)

// This file builds the commands once for all tests and holds what every test shares (seeds, slots).
// The rest of the harness, one job per file: process_test.go runs and stops the commands and reads
// their metrics; stack_test.go gives a test its database, topics and projectors; kafka_test.go follows
// offsets and reads the dead-letter topic; dbdump_test.go dumps the database byte for byte.

// errNotInTree marks a command whose package does not exist (yet).
var errNotInTree = errors.New("not in the tree yet")

// commands are the binaries the tests run, built once by TestMain.
var commands = []string{"projector", "api", "migrate"}

var bin struct {
	dir    string
	errors map[string]error // why a command could not be built
}

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	integration := os.Getenv("TEST_MYSQL_DSN") != "" || os.Getenv("REQUIRE_INTEGRATION") == "1"
	bin.errors = map[string]error{}
	if integration {
		dir, err := os.MkdirTemp("", "conv-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin.dir = dir
		build(dir)
	}
	return m.Run()
}

// build compiles every command present in the tree with one `go build`; a command that does not exist or
// does not compile is recorded, and only the tests that need it fail.
func build(dir string) {
	root := filepath.Join("..", "..")
	var pkgs []string
	for _, c := range commands {
		if _, err := os.Stat(filepath.Join(root, "cmd", c)); err != nil {
			bin.errors[c] = fmt.Errorf("cmd/%s: %w", c, errNotInTree)
			continue
		}
		pkgs = append(pkgs, "./cmd/"+c)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if os.Getenv("E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	start := time.Now()
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		for _, p := range pkgs { // one broken command must not hide the others
			c := strings.TrimPrefix(p, "./cmd/")
			one := exec.Command("go", append(args, p)...)
			one.Dir = root
			if out1, err := one.CombinedOutput(); err != nil {
				bin.errors[c] = fmt.Errorf("go build %s: %v\n%s", p, err, out1)
			}
		}
		if len(bin.errors) == 0 {
			bin.errors["build"] = fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s in %s\n", strings.Join(pkgs, " "), time.Since(start).Round(time.Millisecond))
}

// need returns the path of a built command, or ends the test when it is missing: a command that is not
// in the tree yet skips the test; one that does not build fails it (skips it too without
// REQUIRE_INTEGRATION=1, like a missing database).
func need(t *testing.T, c string) string {
	t.Helper()
	err := bin.errors[c]
	if err == nil {
		err = bin.errors["build"]
	}
	if err == nil && bin.dir == "" {
		err = fmt.Errorf("integration environment not configured")
	}
	switch {
	case errors.Is(err, errNotInTree):
		t.Skipf("command %s: %v", c, err)
	case err != nil && os.Getenv("REQUIRE_INTEGRATION") == "1":
		t.Fatalf("command %s: %v", c, err)
	case err != nil:
		t.Skipf("command %s: %v", c, err)
	}
	return filepath.Join(bin.dir, c)
}

// applyAll feeds records to the model; with allowBad false every record must be valid.
func applyAll(t *testing.T, m *refmodel.Model, recs []trafficgen.Record, allowBad bool) {
	t.Helper()
	for _, r := range recs {
		if err := m.Apply(r.Value); err != nil && !allowBad {
			t.Fatalf("generator produced an invalid record %s: %v", r.Value, err)
		}
	}
}

// seed returns the seed of a randomised test: E2E_SEED when set, else a fresh one, logged either way so
// a failure can be replayed.
func seed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("E2E_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("E2E_SEED: %v", err)
		}
		return n
	}
	n := uint64(time.Now().UnixNano() % 1_000_000)
	t.Logf("seed %d (set E2E_SEED=%d to replay)", n, n)
	return n
}

// parallelism caps concurrent e2e tests: each runs MariaDB work and one or two projectors on a small
// machine, and timing-sensitive steps (kills mid-stream) need the CPU they expect.
var slots = make(chan struct{}, max(1, runtime.NumCPU()/2))

// parallel runs the test alongside the other e2e tests, in a bounded number of slots.
func parallel(t *testing.T) {
	t.Parallel()
	slots <- struct{}{}
	t.Cleanup(func() { <-slots })
}
