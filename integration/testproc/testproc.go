// Package testproc runs the switchyard binary for black-box tests: it builds
// the binary once, starts it with a config file on a free 127.0.0.1 port,
// reads the listen addresses from its JSON "listening" log line, keeps its
// log, and stops it (SIGTERM, then SIGKILL). It is imported by test code
// only (integration/ and integration/sdk/).
package testproc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles the switchyard main package in pkgDir to out, with the race
// detector when race is set. Its output goes to stderr.
func Build(out, pkgDir string, race bool) error {
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, pkgDir)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building switchyard: %w", err)
	}
	return nil
}

// Proxy is a running switchyard process.
type Proxy struct {
	// URL is the API base, http://127.0.0.1:port.
	URL string
	// Admin is the admin listener's base URL (admin_listen), or URL.
	Admin string

	cmd    *exec.Cmd
	mu     sync.Mutex
	logs   bytes.Buffer
	exited chan struct{}
}

// Start runs bin with -config configPath -listen 127.0.0.1:0 and extra
// environment env, and waits up to timeout for its "listening" line. On
// failure the process is stopped and the error carries its log.
func Start(bin, configPath string, env []string, timeout time.Duration) (*Proxy, error) {
	p := &Proxy{exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "-config", configPath, "-listen", "127.0.0.1:0")
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Bytes()
			p.mu.Lock()
			p.logs.Write(line)
			p.logs.WriteByte('\n')
			p.mu.Unlock()
			if sent {
				continue
			}
			var m struct {
				Msg, Addr string
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal(line, &m) == nil && m.Msg == "listening" && m.Addr != "" {
				addrs <- [2]string{m.Addr, m.AdminAddr}
				sent = true
			}
		}
	}()
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	select {
	case a := <-addrs:
		p.URL = "http://" + a[0]
		p.Admin = p.URL
		if a[1] != "" {
			p.Admin = "http://" + a[1]
		}
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("switchyard exited at start:\n%s", p.Logs())
	case <-time.After(timeout):
		p.Stop()
		return nil, fmt.Errorf("switchyard did not log \"listening\" within %v:\n%s", timeout, p.Logs())
	}
}

// Logs returns everything the process wrote to stderr so far.
func (p *Proxy) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Signal sends sig to the process.
func (p *Proxy) Signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// Pid is the process id.
func (p *Proxy) Pid() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM, then SIGKILL after 10s, and waits for the exit.
func (p *Proxy) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// WaitExit waits up to d for the process to exit and returns its exit code;
// exited is false when it was still running.
func (p *Proxy) WaitExit(d time.Duration) (code int, exited bool) {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return 0, false
	}
}

// Main is a TestMain body: it builds the binary of pkgDir into a temporary
// directory, stores its path in *binary, runs the tests and removes the
// directory. It returns the exit code for os.Exit.
func Main(m *testing.M, pkgDir string, race bool, binary *string) int {
	dir, err := os.MkdirTemp("", "switchyard-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*binary = filepath.Join(dir, "switchyard")
	if err := Build(*binary, pkgDir, race); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// StartConfig writes cfg to config.yaml in the test's temporary directory
// and starts bin with it (see Start). The process is stopped when the test
// ends, and its log is printed if the test failed. It returns the config
// path too, for tests that rewrite it and send SIGHUP.
func StartConfig(t testing.TB, bin, cfg string, env ...string) (*Proxy, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Start(bin, path, env, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		// A -race binary reports a race on its stderr and goes on: any
		// report fails the test that ran it.
		if strings.Contains(p.Logs(), "WARNING: DATA RACE") {
			t.Errorf("the proxy's race detector reported a data race (see its log)")
		}
		if t.Failed() {
			t.Logf("switchyard log:\n%s", p.Logs())
		}
	})
	return p, path
}
