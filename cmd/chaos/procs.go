package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// replica is one projector or API process that chaos kills and starts again, always with the same
// configuration and HTTP address.
type replica struct {
	name, bin, addr, logPath string
	env                      []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newReplica(name, bin, logDir string, env map[string]string, addr string) *replica {
	r := &replica{name: name, bin: bin, addr: addr, logPath: filepath.Join(logDir, name+".log")}
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			r.env = append(r.env, k+"="+v)
		}
	}
	for k, v := range env {
		r.env = append(r.env, k+"="+v)
	}
	return r
}

// start runs the process, its output appended to its log file.
func (r *replica) start() error {
	out, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(r.bin)
	cmd.Env, cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = r.env, out, out, childAttr()
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", r.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(done)
	}()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	return nil
}

// kill is kill -9, and waits for the process to be gone.
func (r *replica) kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// stop sends SIGTERM and waits up to grace, then kills.
func (r *replica) stop(grace time.Duration) {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(grace):
		r.kill()
	}
}

// waitOK polls GET path until it answers 200 and returns how long that took.
func (r *replica) waitOK(ctx context.Context, path string, timeout time.Duration) (time.Duration, error) {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+path, nil)
		if res, err := client.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return time.Since(begin), nil
			}
		}
		select {
		case <-ctx.Done():
			return time.Since(begin), fmt.Errorf("%s: %s not 200 after %s (log %s)", r.name, path, timeout, r.logPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
