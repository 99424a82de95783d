package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// proc is a child process the harness started and stops.
type proc struct {
	name   string
	cmd    *exec.Cmd
	addr   string // host:port it serves on
	pprof  string // host:port of its net/http/pprof listener ("": none)
	logs   *tail
	exited chan struct{}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, then SIGKILL after 5 s, and waits for the exit.
func (p *proc) stop() {
	if p == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// tail keeps the last bytes a process wrote to stderr.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// children is every process started, stopped on exit or interrupt.
var children struct {
	mu sync.Mutex
	ps []*proc
}

func stopChildren() {
	children.mu.Lock()
	ps := children.ps
	children.ps = nil
	children.mu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		ps[i].stop()
	}
}

func start(name string, cmd *exec.Cmd) (*proc, error) {
	p := &proc{name: name, cmd: cmd, logs: &tail{max: 64 << 10}, exited: make(chan struct{})}
	if cmd.Stderr == nil {
		cmd.Stderr = p.logs
	}
	// Children die with the harness even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	children.mu.Lock()
	children.ps = append(children.ps, p)
	children.mu.Unlock()
	return p, nil
}

// startRole re-executes the harness binary in a role and waits for the
// "LISTEN addr" line it prints.
func startRole(role string, args ...string) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, append([]string{"-role", role}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p, err := start(role, cmd)
	if err != nil {
		return nil, err
	}
	addrc := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		addrc <- strings.TrimSpace(strings.TrimPrefix(line, "LISTEN "))
		_, _ = io.Copy(io.Discard, br)
	}()
	select {
	case a := <-addrc:
		if a == "" {
			p.stop()
			return nil, fmt.Errorf("%s: no listen address; stderr:\n%s", role, p.logs)
		}
		p.addr = a
		return p, nil
	case <-time.After(10 * time.Second):
		p.stop()
		return nil, fmt.Errorf("%s did not start within 10s; stderr:\n%s", role, p.logs)
	}
}

// freePort returns a port that was free a moment ago on 127.0.0.1.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// profileDir is -profile: when set, every switchyard the harness starts
// serves net/http/pprof (SWITCHYARD_PPROF, main_pprof.go), measure writes a
// CPU profile of each run through switchyard into it, and scenario (e) the
// heap at the streams' peak.
var profileDir string

// buildSwitchyard builds the binary from the tree into dir, with -tags
// pprof when pprof is set.
func buildSwitchyard(dir string, pprof bool) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "switchyard")
	args := []string{"build", "-o", bin}
	if pprof {
		args = append(args, "-tags", "pprof")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build switchyard in %s: %w", root, err)
	}
	return bin, nil
}

// switchyardConfig is the bench configuration: one pass-through upstream
// (any model, unchanged) pointing at the fake. logLevel is warn for every
// instance but one, so that the per-request info lines do not dominate the
// measurement; the info instance measures what they cost. With
// memcachedAddr, the near cache keeps its default size unless nearOff
// (cache.near_max_bytes: 0: every hit is a memcached round trip); without
// it, nearOff changes nothing.
func switchyardConfig(upstreamAddr, memcachedAddr, logLevel string, nearOff bool) string {
	mc := "[]"
	if memcachedAddr != "" {
		mc = `["` + memcachedAddr + `"]`
	}
	near := ""
	if nearOff {
		near = "\n  near_max_bytes: 0"
	}
	return fmt.Sprintf(`# generated by integration/bench
log_level: %s
shutdown_grace: 2s
cache:
  memcached: %s%s
upstreams:
  - name: fake
    provider: openai
    base_url: http://%s/v1
    api_key: bench-key
    timeout: 30s
    first_token_timeout: 10s
    idle_timeout: 10s
`, logLevel, mc, near, upstreamAddr)
}

// startSwitchyard writes cfg into dir and runs bin on a free port until
// /healthz answers 200. Its stderr goes to stderr, or (nil) to a tail
// buffer. With -profile it also gets SWITCHYARD_PPROF on a second free
// port; p.pprof is set only if pprof answers there (a binary built
// without -tags pprof ignores the variable).
func startSwitchyard(name, bin, dir, cfg string, stderr *os.File) (*proc, error) {
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "-config", path, "-listen", addr)
	if stderr != nil {
		cmd.Stderr = stderr
	}
	pprofAddr := ""
	if profileDir != "" {
		if pprofAddr, err = pprofPort(port); err != nil {
			return nil, err
		}
		cmd.Env = append(os.Environ(), "SWITCHYARD_PPROF="+pprofAddr)
	}
	p, err := start(name, cmd)
	if err != nil {
		return nil, err
	}
	p.addr = addr
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return nil, fmt.Errorf("%s exited at start:\n%s", name, p.logs)
		}
		status, _, err := fasthttp.GetTimeout(nil, "http://"+addr+"/healthz", time.Second)
		if err == nil && status == fasthttp.StatusOK {
			if pprofAddr != "" && servesPprof(pprofAddr) {
				p.pprof = pprofAddr
			}
			return p, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("%s: /healthz not 200 within 15s:\n%s", name, p.logs)
}

// pprofPort returns a free 127.0.0.1 address for SWITCHYARD_PPROF other
// than the proxy's port.
func pprofPort(proxyPort int) (string, error) {
	for range 10 {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		if port != proxyPort {
			return "127.0.0.1:" + strconv.Itoa(port), nil
		}
	}
	return "", errors.New("no free port for SWITCHYARD_PPROF")
}

// servesPprof reports whether net/http/pprof answers on addr. The
// listener starts in an init goroutine, before switchyard's /healthz can
// answer, so a short retry only covers scheduling.
func servesPprof(addr string) bool {
	for range 10 {
		status, _, err := fasthttp.GetTimeout(nil, "http://"+addr+"/debug/pprof/cmdline", time.Second)
		if err == nil {
			return status == fasthttp.StatusOK
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// fetchProfile GETs http://addr/debug/pprof/<query> (a profile name and
// its parameters, e.g. "profile?seconds=10") and writes the answer, a
// gzipped profile.proto, to file.
func fetchProfile(addr, query, file string, timeout time.Duration) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/debug/pprof/" + query)
	// A client of its own: fasthttp's default client keeps a 10 s read
	// timeout per host, too short for a long CPU profile.
	c := &fasthttp.Client{ReadTimeout: timeout, NoDefaultUserAgentHeader: true}
	defer c.CloseIdleConnections()
	if err := c.DoTimeout(req, resp, timeout); err != nil {
		return fmt.Errorf("GET /debug/pprof/%s: %w", query, err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("GET /debug/pprof/%s: HTTP %d: %.200s", query, resp.StatusCode(), bytes.TrimSpace(resp.Body()))
	}
	if err := os.WriteFile(file, resp.Body(), 0o644); err != nil {
		return fmt.Errorf("writing the %s profile: %w", query, err)
	}
	return nil
}

// profileNote is the line printed for a profile fetchProfile wrote to
// file, or the error why not.
func profileNote(file string, err error) string {
	if err != nil {
		return "not written: " + err.Error()
	}
	return "written to " + file + " (go tool pprof -top " + file + ")"
}

// slug turns a run's label into a file name part: lower case, every run of
// other characters than letters and digits one '-', none at the ends.
func slug(label string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(label) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
			continue
		}
		dash = true
	}
	return b.String()
}

// startMemcached runs the binary on a free 127.0.0.1 port.
func startMemcached(bin string) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64", "-c", "4096", "-t", "2"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	p, err := start("memcached", exec.Command(bin, args...))
	if err != nil {
		return nil, err
	}
	p.addr = "127.0.0.1:" + strconv.Itoa(port)
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", p.addr, 100*time.Millisecond); err == nil {
			c.Close()
			return p, nil
		}
		if !p.alive() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("memcached did not start:\n%s", p.logs)
}

// cpuSeconds returns utime+stime of pid from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("stat: no comm")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is the state (field 3); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("stat: short")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("stat: bad utime/stime")
	}
	return float64(ut+st) / clockTicks, nil
}

// memKB returns VmRSS and VmHWM of pid, in KiB.
func memKB(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// resetHWM resets pid's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0,
// clear_refs value 5), so each scenario reports its own peak.
func resetHWM(pid int) bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

// scrapeMetrics returns the go_goroutines and go_memstats_* series of
// switchyard's /metrics.
func scrapeMetrics(addr string) (map[string]float64, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/metrics")
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range bytes.Split(resp.Body(), []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("go_goroutines ")) && !bytes.HasPrefix(line, []byte("go_memstats_")) {
			continue
		}
		name, v, ok := bytes.Cut(line, []byte(" "))
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64); err == nil {
			out[string(name)] = f
		}
	}
	if _, ok := out["go_goroutines"]; !ok {
		return nil, errors.New("no go_goroutines in /metrics")
	}
	return out, nil
}

// raiseNofile lifts the soft open-files limit to the hard one and returns
// the new soft limit. The Go runtime raises its own soft limit at start but
// gives exec'd children the original one back unless the program calls
// Setrlimit itself, so this always calls it: the children (switchyard, the
// fake upstream, memcached) inherit the raised limit.
func raiseNofile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	rl.Cur = rl.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return rl.Cur
}

// hostCPU returns, in seconds summed over all CPUs from /proc/stat, the
// time spent in user and system mode by processes (user+nice+system), the
// busy time (everything but idle and iowait, so interrupts too) and the
// total.
func hostCPU() (procs, busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, 0
	}
	for i, v := range f[1:] {
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		n, _ := strconv.ParseFloat(v, 64)
		n /= clockTicks
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
		if i <= 2 {
			procs += n
		}
	}
	return procs, busy, total
}

// upstreamConns returns how many connections the fake upstream has
// accepted so far (-1 if unknown).
func upstreamConns(fakeAddr string) int64 {
	status, body, err := fasthttp.GetTimeout(nil, "http://"+fakeAddr+"/bench/conns", 5*time.Second)
	if err != nil || status != fasthttp.StatusOK {
		return -1
	}
	n, err := strconv.ParseInt(string(body), 10, 64)
	if err != nil {
		return -1
	}
	return n
}
