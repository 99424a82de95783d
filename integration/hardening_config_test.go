package integration

// Issue 15's configuration row, against the binary: a configuration that
// cannot work is refused by -check and at start with the YAML path of the
// problem, and a key written in the file is warned about without being
// printed. The rules themselves are covered in config's failure-closure
// test; these check that main reports them where an operator looks.

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unusedUpstream is an upstream base URL nothing in these tests calls: they
// only load the configuration.
const unusedUpstream = "http://127.0.0.1:9/v1"

// switchyardRun is one finished run of the binary.
type switchyardRun struct {
	code           int // -1: still running after the deadline, killed
	stdout, stderr string
}

// runSwitchyard runs the binary with args until it exits, for at most d. Its
// environment is the test's without any SWITCHYARD_TEST_* variable, plus env.
func runSwitchyard(t *testing.T, d time.Duration, env []string, args ...string) switchyardRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHYARD_TEST_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	r := switchyardRun{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.code = -1
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running switchyard %v: %v", args, err)
	}
	return r
}

// writeConfig writes cfg to a file in the test's temporary directory.
func writeConfig(t *testing.T, cfg string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantRefused checks that a run exited 1 before listening, with want in its
// error output.
func wantRefused(t *testing.T, r switchyardRun, want string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("exit code %d, want 1 (-1: still running)\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr does not name the problem %q:\n%s", want, r.stderr)
	}
	if strings.Contains(r.stdout, "config ok") || strings.Contains(r.stderr, `"listening"`) {
		t.Errorf("the configuration was accepted:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
}

// checkAndStart runs -check and a plain start (no -listen: the file's own
// addresses) on the config at path, and wants both refused naming want.
func checkAndStart(t *testing.T, path, want string, env ...string) {
	t.Helper()
	t.Run("check", func(t *testing.T) {
		wantRefused(t, runSwitchyard(t, 10*time.Second, env, "-check", "-config", path), want)
	})
	t.Run("start", func(t *testing.T) {
		wantRefused(t, runSwitchyard(t, 5*time.Second, env, "-config", path), want)
	})
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestUnsetListenVariableRejected: `listen: ${VAR}` with VAR unset (or
// empty) used to fall back to 127.0.0.1:8080 in silence. A reference
// without a default is now required, except in api_key, where an unset
// variable keeps meaning "upstream not configured".
func TestUnsetListenVariableRejected(t *testing.T) {
	path := writeConfig(t, "log_level: debug\nlisten: ${SWITCHYARD_TEST_UNSET_LISTEN}\nupstreams:\n"+
		upstreamYAML("one", unusedUpstream, "${SWITCHYARD_TEST_UNSET_KEY}", 1, ""))
	t.Run("unset", func(t *testing.T) {
		checkAndStart(t, path, "listen: ${SWITCHYARD_TEST_UNSET_LISTEN} is not set in the environment and has no default (line 2)")
	})
	t.Run("empty", func(t *testing.T) {
		checkAndStart(t, path, "listen: ${SWITCHYARD_TEST_UNSET_LISTEN} is empty in the environment", "SWITCHYARD_TEST_UNSET_LISTEN=")
	})
	t.Run("set", func(t *testing.T) {
		r := runSwitchyard(t, 10*time.Second, []string{"SWITCHYARD_TEST_UNSET_LISTEN=127.0.0.1:0"}, "-check", "-config", path)
		if r.code != 0 || !strings.Contains(r.stdout, "config ok: listen 127.0.0.1:0, 1 upstreams (0 with keys)") {
			t.Errorf("exit code %d, stdout %q, stderr %q; want the summary with the unset api_key accepted", r.code, r.stdout, r.stderr)
		}
	})
}

// TestMalformedVariableNamesItsPath: an unclosed `${VAR` used to be
// reported with a line number and the value quoted, a key written in the
// file included. The error now names the YAML path and quotes nothing.
func TestMalformedVariableNamesItsPath(t *testing.T) {
	path := writeConfig(t, "log_level: debug\nupstreams:\n"+
		upstreamYAML("one", unusedUpstream, "${SWITCHYARD_TEST_KEY_1}", 1, "")+
		upstreamYAML("two", unusedUpstream, "gsk_PARTLY_IN_FILE_${SWITCHYARD_TEST_KEY_2", 2, ""))
	for _, name := range []string{"check", "start"} {
		t.Run(name, func(t *testing.T) {
			args := []string{"-config", path}
			if name == "check" {
				args = append(args, "-check")
			}
			r := runSwitchyard(t, 10*time.Second, nil, args...)
			wantRefused(t, r, "upstreams[1].api_key: malformed variable reference")
			if !strings.Contains(r.stderr, "(line 14)") {
				t.Errorf("stderr does not give the line (14):\n%s", r.stderr)
			}
			if strings.Contains(r.stderr+r.stdout, "PARTLY_IN_FILE") {
				t.Errorf("the error quotes the key written in the file:\n%s", r.stderr)
			}
		})
	}
}

// TestAdminListenEqualToListenRejected: admin_listen on listen's address
// passed -check and only failed at bind, after the API listener was up.
// Now both -check and start refuse it naming both keys, and so does a
// -listen flag that lands on admin_listen.
func TestAdminListenEqualToListenRejected(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	body := "log_level: debug\nupstreams:\n" + upstreamYAML("one", unusedUpstream, "${SWITCHYARD_TEST_KEY}", 1, "")
	t.Run("same address", func(t *testing.T) {
		path := writeConfig(t, "listen: "+addr+"\nadmin_listen: "+addr+"\n"+body)
		checkAndStart(t, path, "admin_listen: "+addr+" collides with listen "+addr)
	})
	t.Run("wildcard admin_listen", func(t *testing.T) {
		port := addr[strings.LastIndexByte(addr, ':'):]
		path := writeConfig(t, "listen: "+addr+"\nadmin_listen: 0.0.0.0"+port+"\n"+body)
		wantRefused(t, runSwitchyard(t, 10*time.Second, nil, "-check", "-config", path), "admin_listen: 0.0.0.0"+port+" collides with listen "+addr)
	})
	t.Run("-listen on admin_listen", func(t *testing.T) {
		path := writeConfig(t, "admin_listen: "+addr+"\n"+body)
		wantRefused(t, runSwitchyard(t, 10*time.Second, nil, "-check", "-listen", addr, "-config", path),
			"-listen: admin_listen: "+addr+" collides with listen "+addr)
	})
}

// TestTinyTimeoutsRejected: read_timeout: 1ns was accepted, and the proxy
// then answered every request 408; the same typo in cache.timeout or an
// upstream's timeouts failed every memcached operation or upstream call.
// Each now has a minimum, named in the error.
func TestTinyTimeoutsRejected(t *testing.T) {
	up := func(extra string) string {
		return "log_level: debug\nupstreams:\n" + upstreamYAML("one", unusedUpstream, "${SWITCHYARD_TEST_KEY}", 1, extra)
	}
	path := writeConfig(t, "read_timeout: 1ns\n"+up(""))
	t.Run("read_timeout", func(t *testing.T) { checkAndStart(t, path, "read_timeout: must be at least 100ms") })
	for _, tc := range []struct{ name, cfg, bad, want string }{
		{"cache.timeout", "cache: {timeout: 1ns}\n" + up(""), "timeout: 1ns", "cache.timeout: must be at least 10ms"},
		// upstreamYAML sets the three timeouts: edit them in place.
		{"upstream timeout", strings.Replace(up(""), " timeout: 5s", " timeout: 1ns", 1), " timeout: 1ns", "upstreams[0].timeout: must be at least 100ms"},
		{"first_token_timeout", strings.Replace(up(""), "first_token_timeout: 2s", "first_token_timeout: 50ms", 1), "first_token_timeout: 50ms", "upstreams[0].first_token_timeout: must be at least 100ms"},
		{"idle_timeout", strings.Replace(up(""), "idle_timeout: 2s", "idle_timeout: 1us", 1), "idle_timeout: 1us", "upstreams[0].idle_timeout: must be at least 100ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(tc.cfg, tc.bad) {
				t.Fatalf("the config does not set %q:\n%s", tc.bad, tc.cfg)
			}
			wantRefused(t, runSwitchyard(t, 10*time.Second, nil, "-check", "-config", writeConfig(t, tc.cfg)), tc.want)
		})
	}
}

// TestLiteralAPIKeyWarns: a key written in the config file (where anyone
// who reads the file, or the ConfigMap, has it) was accepted in silence.
// It now gets a warning naming its path, from -check (which still exits 0)
// and in the log at start and on reload, and the key is never printed.
func TestLiteralAPIKeyWarns(t *testing.T) {
	const (
		literal = "sk-literal-SECRET-4f9a"
		fromEnv = "sk-env-SECRET-77c1"
	)
	cfg := testConfig("", upstreamYAML("lit", unusedUpstream, literal, 1, ""),
		upstreamYAML("env", unusedUpstream, "${SWITCHYARD_TEST_KEY_ENV}", 2, ""))
	env := []string{"SWITCHYARD_TEST_KEY_ENV=" + fromEnv}

	t.Run("check", func(t *testing.T) {
		r := runSwitchyard(t, 10*time.Second, env, "-check", "-config", writeConfig(t, cfg))
		if r.code != 0 || !strings.Contains(r.stdout, "config ok:") {
			t.Fatalf("exit code %d, stdout %q, stderr %q; want 0 and the summary", r.code, r.stdout, r.stderr)
		}
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "warning: upstreams[0].api_key: ") || !strings.Contains(lines[0], "(line 9)") {
			t.Errorf("stderr = %q, want one warning for upstreams[0].api_key (line 9)", r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, "SECRET") {
			t.Errorf("-check prints a key:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
		}
	})

	t.Run("start and reload", func(t *testing.T) {
		p := startProxy(t, cfg, env...)
		countWarnings := func() int {
			n := 0
			for _, l := range strings.Split(p.Logs(), "\n") {
				if strings.Contains(l, `"msg":"config warning"`) {
					n++
					if !strings.Contains(l, `"level":"WARN"`) || !strings.Contains(l, "upstreams[0].api_key: ") {
						t.Errorf("warning line %s: want level WARN naming upstreams[0].api_key", l)
					}
				}
			}
			return n
		}
		waitWarnings := func(want int) {
			t.Helper()
			deadline := time.Now().Add(3 * time.Second)
			for countWarnings() < want && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := countWarnings(); n != want {
				t.Errorf("%d config warnings logged, want %d", n, want)
			}
		}
		waitWarnings(1)
		// main logs "listening" just before it handles SIGHUP (whose
		// default action ends the process): let it answer a request first.
		if r, err := httpClient.Get(p.URL + "/healthz"); err != nil {
			t.Fatal(err)
		} else {
			r.Body.Close()
		}
		p.Signal(syscall.SIGHUP)
		if !p.WaitLog(`"msg":"reloaded"`) {
			t.Fatal("no reload logged after SIGHUP")
		}
		waitWarnings(2)
		if strings.Contains(p.Logs(), "SECRET") {
			t.Errorf("the log contains a key")
		}
	})
}
