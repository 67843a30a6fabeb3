package deploy_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMakeRunIgnoresAnUnrelatedDB: `make run` picks the read model from DB (mariadb, or vitess for the
// sharded one). DB is a common variable name: a value the environment holds for something else must
// leave make run on MariaDB rather than make run.sh refuse to start; DB=vitess, from the environment or
// the command line, still picks Vitess, and a wrong value on the command line still reaches run.sh's
// refusal. make -n only prints the recipe: nothing starts.
func TestMakeRunIgnoresAnUnrelatedDB(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make on this machine")
	}
	for _, c := range []struct {
		env, arg, want string
	}{
		{"", "", "DB=mariadb "},
		{"DB=postgres", "", "DB=mariadb "},
		{"DB=vitess", "", "DB=vitess "},
		{"", "DB=vitess", "DB=vitess "},
		{"DB=postgres", "DB=vitesss", "DB=vitesss "},
	} {
		args := []string{"-n", "-C", "..", "run"}
		if c.arg != "" {
			args = append(args, c.arg)
		}
		cmd := exec.Command("make", args...)
		cmd.Env = os.Environ()
		for i, kv := range cmd.Env {
			if strings.HasPrefix(kv, "DB=") || strings.HasPrefix(kv, "MAKEFLAGS=") {
				cmd.Env[i] = "CONV_UNSET=1"
			}
		}
		if c.env != "" {
			cmd.Env = append(cmd.Env, c.env)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %v: %v\n%s", args, err, out)
		}
		if !strings.Contains(string(out), c.want+"deploy/local/run.sh") {
			t.Errorf("env %q, make %q: recipe %q, want %srun.sh", c.env, c.arg, strings.TrimSpace(string(out)), c.want)
		}
	}
}
