package cache

import (
	"bytes"
	"errors"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/bradfitz/gomemcache/memcache"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

func TestExpiration(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	const day = 24 * time.Hour
	tests := []struct {
		ttl  time.Duration
		want int32
	}{
		{0, 0},
		{-time.Second, 0},
		{time.Nanosecond, 1},
		{time.Second, 1},
		{1500 * time.Millisecond, 2},
		{time.Hour, 3600},
		{30*day - time.Second, 2591999},
		{30 * day, 2592000}, // the largest relative value
		{30*day + time.Millisecond, 1_750_000_000 + 2592001}, // absolute from here on
		{31 * day, 1_750_000_000 + 31*86400},
		{365 * day, 1_750_000_000 + 365*86400},
		{100 * 365 * day, math.MaxInt32}, // past 2038: clamped
		{math.MaxInt64, math.MaxInt32},
	}
	for _, tt := range tests {
		if got := expiration(tt.ttl, now); got != tt.want {
			t.Errorf("expiration(%v) = %d, want %d", tt.ttl, got, tt.want)
		}
	}
}

func TestNewMemcachedOptions(t *testing.T) {
	m, err := NewMemcached(MemcachedOptions{Servers: []string{"127.0.0.1:11211"}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.shards[0].client
	if c.Timeout != 100*time.Millisecond || c.MaxIdleConns != 64 || m.maxItem != 1<<20 {
		t.Fatalf("defaults: timeout %v, idle conns %d, max item %d", c.Timeout, c.MaxIdleConns, m.maxItem)
	}
	// Oversize values are refused before any network I/O.
	if err := m.Set("k", make([]byte, 1<<20), 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Set(1 MiB) err = %v, want ErrTooLarge", err)
	}
	if m.shards[0].breaker.Metrics().Executions() != 0 {
		t.Fatal("an oversize Set reached the breaker")
	}
}

func TestNewMemcachedErrors(t *testing.T) {
	for _, servers := range [][]string{nil, {"127.0.0.1:99999"}, {"127.0.0.1:11211", "no-port"}} {
		if m, err := NewMemcached(MemcachedOptions{Servers: servers}); err == nil {
			m.Close()
			t.Errorf("NewMemcached(%q) succeeded, want an error", servers)
		}
	}
}

// memcachedServer is a memcached process owned by one test.
type memcachedServer struct {
	t      *testing.T
	port   string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has been reaped
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// startMemcached runs memcached on a free port until the test ends.
func startMemcached(t *testing.T) *memcachedServer {
	t.Helper()
	s := &memcachedServer{t: t, port: freePort(t)}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *memcachedServer) addr() string { return "127.0.0.1:" + s.port }

// start runs memcached on s.port and waits (at most 5s) until it accepts
// connections.
func (s *memcachedServer) start() {
	t := s.t
	t.Helper()
	bin, err := exec.LookPath("memcached")
	if err != nil {
		t.Fatal("memcached not found: install it with `apt-get install -y memcached`")
	}
	args := []string{"-p", s.port, "-l", "127.0.0.1", "-U", "0"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses to run as root without -u
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting memcached: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr(), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("memcached on port %s exited: %v: %s", s.port, waitErr, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			t.Fatalf("memcached on port %s did not accept connections within 5s: %s", s.port, stderr.String())
		}
	}
}

// stop kills memcached and waits until it is gone. It is idempotent.
func (s *memcachedServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// newTestMemcached is NewMemcached with a 1s timeout unless o sets one: the
// 100ms default is for production, and a loaded CI machine running -race
// can miss it.
func newTestMemcached(t *testing.T, o MemcachedOptions) *Memcached {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	m, err := NewMemcached(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// directClient talks to one server, bypassing Memcached.
func directClient(addr string) *memcache.Client {
	c := memcache.New(addr)
	c.Timeout = time.Second
	return c
}

func TestMemcachedSetGet(t *testing.T) {
	srv := startMemcached(t)
	m := newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}})

	if _, err := m.Get("absent"); !errors.Is(err, ErrMiss) {
		t.Fatalf("Get(absent) err = %v, want ErrMiss", err)
	}
	entry := EncodeEntry(nil, Entry{Stream: true, Body: []byte("data: [DONE]\n\n"), Upstream: "groq", StoredAt: time.Now()})
	for _, v := range [][]byte{entry, []byte("second value"), {}} {
		if err := m.Set("switchyard:v1:k", v, time.Minute); err != nil {
			t.Fatal(err)
		}
		got, err := m.Get("switchyard:v1:k")
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("Get = %q, %v; want %q", got, err, v)
		}
	}
	// Client-side key validation is not a server failure.
	if _, err := m.Get("has space"); err == nil || errors.Is(err, ErrMiss) {
		t.Fatalf("Get(malformed key) err = %v, want a wrapped ErrMalformedKey", err)
	} else if !errors.Is(err, memcache.ErrMalformedKey) || !strings.HasPrefix(err.Error(), "memcached get: ") {
		t.Fatalf("Get(malformed key) err = %v", err)
	}
	if m.shards[0].breaker.Metrics().Failures() != 0 {
		t.Fatalf("breaker counted %d failures for misses and bad keys", m.shards[0].breaker.Metrics().Failures())
	}
}

func TestMemcachedTwoServersShardKeys(t *testing.T) {
	a, b := startMemcached(t), startMemcached(t)
	m := newTestMemcached(t, MemcachedOptions{Servers: []string{a.addr(), b.addr()}})
	const n = 40
	for i := range n {
		if err := m.Set("key-"+strconv.Itoa(i), []byte{byte(i)}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	onA, onB := 0, 0
	for _, s := range []struct {
		srv   *memcachedServer
		count *int
	}{{a, &onA}, {b, &onB}} {
		direct := directClient(s.srv.addr())
		for i := range n {
			if _, err := direct.Get("key-" + strconv.Itoa(i)); err == nil {
				*s.count++
			}
		}
		direct.Close()
	}
	if onA == 0 || onB == 0 || onA+onB != n {
		t.Fatalf("keys on servers: %d and %d, want both > 0 and %d in total", onA, onB, n)
	}
	for i := range n {
		if v, err := m.Get("key-" + strconv.Itoa(i)); err != nil || v[0] != byte(i) {
			t.Fatalf("Get(key-%d) = %v, %v", i, v, err)
		}
	}
}

func TestMemcachedExpiration(t *testing.T) {
	srv := startMemcached(t)
	m := newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}})

	// A TTL over 30 days must be sent as an absolute time. Sent as relative
	// seconds, memcached reads it as a 1970 timestamp: the item is gone at once.
	direct := directClient(srv.addr())
	defer direct.Close()
	if err := direct.Set(&memcache.Item{Key: "naive", Value: []byte("v"), Expiration: 31 * 86400}); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Get("naive"); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("naive 31-day expiration: err = %v; the test premise (memcached treats it as absolute) does not hold", err)
	}
	if err := m.Set("long", []byte("v"), 31*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("long"); err != nil {
		t.Fatalf("31-day TTL item not retrievable: %v", err)
	}

	if err := m.Set("short", []byte("v"), time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Incr("short-ctr", 3, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("short"); err != nil {
		t.Fatalf("1s TTL item missing right away: %v", err)
	}
	// memcached's clock ticks once a second: allow up to ~3s.
	deadline := time.Now().Add(4 * time.Second)
	for {
		_, err := m.Get("short")
		v, verr := m.Value("short-ctr")
		if errors.Is(err, ErrMiss) && v == 0 && verr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("1s TTL: item err=%v, counter=%d (%v) after 4s", err, v, verr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := m.Get("long"); err != nil {
		t.Fatalf("31-day TTL item gone after a few seconds: %v", err)
	}
}

func TestMemcachedTooLarge(t *testing.T) {
	srv := startMemcached(t) // default item size limit -I 1m
	m := newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}})
	over := oversizeTotal.Get()
	key := strings.Repeat("k", 250) // the longest legal key
	limit := (1 << 20) - memcachedItemOverhead - len(key)
	if err := m.Set(key, make([]byte, limit), 0); err != nil {
		t.Fatalf("largest allowed value (%d bytes) rejected by memcached: %v", limit, err)
	}
	if got, err := m.Get(key); err != nil || len(got) != limit {
		t.Fatalf("Get largest value: %d bytes, %v", len(got), err)
	}
	if err := m.Set(key, make([]byte, limit+1), 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Set over the limit: err = %v, want ErrTooLarge", err)
	}
	if got := oversizeTotal.Get() - over; got != 1 {
		t.Fatalf("oversize counted %d, want 1", got)
	}
	if m.shards[0].breaker.Metrics().Failures() != 0 {
		t.Fatal("an oversize value reached the breaker")
	}
}

func TestMemcachedCounters(t *testing.T) {
	srv := startMemcached(t)
	m1 := newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}})
	m2 := newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}})
	exp := time.Now().Add(time.Hour)

	if v, err := m1.Value("quota:a"); v != 0 || err != nil {
		t.Fatalf("Value(missing) = %d, %v; want 0, nil", v, err)
	}
	for i, want := range []uint64{5, 6, 16} {
		if v, err := m1.Incr("quota:a", []uint64{5, 1, 10}[i], exp); v != want || err != nil {
			t.Fatalf("Incr #%d = %d, %v; want %d", i, v, err, want)
		}
	}
	if v, err := m2.Value("quota:a"); v != 16 || err != nil {
		t.Fatalf("Value from the other client = %d, %v; want 16", v, err)
	}

	// Two clients racing to create and bump the same counter.
	const perGoroutine, goroutines = 100, 4
	var wg sync.WaitGroup
	for _, m := range []*Memcached{m1, m2} {
		for range goroutines {
			wg.Go(func() {
				for range perGoroutine {
					if _, err := m.Incr("quota:race", 2, exp); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	want := uint64(2 * 2 * goroutines * perGoroutine)
	if v, err := m1.Value("quota:race"); v != want || err != nil {
		t.Fatalf("after concurrent Incr: %d, %v; want %d", v, err, want)
	}

	// memcached pads a counter that shrank in place ("9 " after decr from 10).
	direct := directClient(srv.addr())
	defer direct.Close()
	if err := direct.Set(&memcache.Item{Key: "quota:pad", Value: []byte("10")}); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Decrement("quota:pad", 1); err != nil {
		t.Fatal(err)
	}
	if v, err := m1.Value("quota:pad"); v != 9 || err != nil {
		t.Fatalf("Value of shrunk counter = %d, %v; want 9", v, err)
	}
	if err := direct.Set(&memcache.Item{Key: "quota:text", Value: []byte("abc")}); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Value("quota:text"); err == nil {
		t.Fatal("Value of a non-numeric item: want an error")
	}
}

func TestMemcachedBreaker(t *testing.T) {
	srv := startMemcached(t)
	m := newTestMemcached(t, MemcachedOptions{
		Servers:      []string{srv.addr()},
		BreakerDelay: 200 * time.Millisecond,
	})
	gauge := func() string {
		var b bytes.Buffer
		metrics.WritePrometheus(&b, false)
		for line := range strings.Lines(b.String()) {
			if v, ok := strings.CutPrefix(line, "switchyard_cache_breaker_state "); ok {
				return strings.TrimSpace(v)
			}
		}
		return "missing"
	}
	getErrors := memcachedGetErrors.Get()
	if err := m.Set("k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if g := gauge(); g != "0" {
		t.Fatalf("breaker gauge = %s, want 0 (closed)", g)
	}

	srv.stop()
	// Until the breaker opens, operations reach the (dead) network.
	failures := 0
	for i := 0; i < 10 && !m.shards[0].breaker.IsOpen(); i++ {
		_, err := m.Get("k")
		if err == nil || errors.Is(err, ErrMiss) {
			t.Fatalf("Get with memcached down: err = %v", err)
		}
		if errors.Is(err, circuitbreaker.ErrOpen) {
			t.Fatalf("breaker open after %d failures, want 5", failures)
		}
		failures++
	}
	if failures != 5 || !m.shards[0].breaker.IsOpen() {
		t.Fatalf("breaker open=%v after %d failures, want open after 5", m.shards[0].breaker.IsOpen(), failures)
	}
	if g := gauge(); g != "2" {
		t.Fatalf("breaker gauge = %s, want 2 (open)", g)
	}
	// Open: every operation fails at once without touching the network.
	start := time.Now()
	fast := 0
	for i := range 100 {
		var err error
		switch i % 3 {
		case 0:
			_, err = m.Get("k")
		case 1:
			err = m.Set("k", []byte("v"), time.Minute)
		case 2:
			_, err = m.Incr("c", 1, time.Time{})
		}
		if err == nil {
			t.Fatal("operation succeeded with memcached down")
		}
		if errors.Is(err, circuitbreaker.ErrOpen) {
			fast++
		}
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("100 operations against an open breaker took %v", elapsed)
	}
	if fast < 90 {
		t.Fatalf("only %d of 100 operations were refused by the open breaker", fast)
	}
	if got := memcachedGetErrors.Get() - getErrors; got < 5 {
		t.Fatalf("get errors counted %d, want at least 5", got)
	}

	// memcached comes back on the same port: after the breaker delay a probe
	// goes through and caching resumes by itself.
	srv.start()
	deadline := time.Now().Add(5 * time.Second)
	for m.Set("k", []byte("back"), time.Minute) != nil {
		if time.Now().After(deadline) {
			t.Fatal("Set still failing 5s after memcached restarted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, err := m.Get("k"); err != nil || string(got) != "back" {
		t.Fatalf("Get after recovery = %q, %v", got, err)
	}
	if !m.shards[0].breaker.IsClosed() {
		t.Fatalf("breaker %v after recovery, want closed", m.shards[0].breaker.State())
	}
	if g := gauge(); g != "0" {
		t.Fatalf("breaker gauge = %s after recovery, want 0", g)
	}
}

func TestMemcachedAddDelete(t *testing.T) {
	srv := startMemcached(t)
	m := newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}})
	if err := m.Add("lock", []byte("a"), time.Minute); err != nil {
		t.Fatalf("first Add: %v", err)
	}
	if err := m.Add("lock", []byte("b"), time.Minute); !errors.Is(err, ErrNotStored) {
		t.Fatalf("second Add err = %v, want ErrNotStored", err)
	}
	if got, err := m.Get("lock"); err != nil || string(got) != "a" {
		t.Fatalf("Get = %q, %v; want the first Add's value", got, err)
	}
	for range 2 { // deleting a missing key is not an error
		if err := m.Delete("lock"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	if err := m.Add("lock", []byte("c"), time.Minute); err != nil {
		t.Fatalf("Add after Delete: %v", err)
	}
}

// TestMemcachedTouch: Touch extends an item's life; a missing one is
// ErrNotStored.
func TestMemcachedTouch(t *testing.T) {
	srv := startMemcached(t)
	m := newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}})
	if err := m.Touch("lease", 3*time.Second); !errors.Is(err, ErrNotStored) {
		t.Fatalf("Touch of a missing key: %v, want ErrNotStored", err)
	}
	if err := m.Add("lease", []byte("holder"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	// Renewed every second, it outlives its first 2 s.
	for range 3 {
		time.Sleep(time.Second)
		if err := m.Touch("lease", 2*time.Second); err != nil {
			t.Fatalf("Touch: %v", err)
		}
	}
	if got, err := m.Get("lease"); err != nil || string(got) != "holder" {
		t.Fatalf("after 3 s of renewals: %q, %v", got, err)
	}
}

// keysOn returns n keys ("key-<i>") that m places on its shard i.
func keysOn(t *testing.T, m *Memcached, i, n int) []string {
	t.Helper()
	var keys []string
	for k := 0; len(keys) < n && k < 100*n; k++ {
		key := "key-" + strconv.Itoa(k)
		s, err := m.shard(key)
		if err != nil {
			t.Fatal(err)
		}
		if s == m.shards[i] {
			keys = append(keys, key)
		}
	}
	if len(keys) < n {
		t.Fatalf("only %d keys map to server %d", len(keys), i)
	}
	return keys
}

// metricValue returns the value of one series in the default metrics
// output, or "missing".
func metricValue(series string) string {
	var b bytes.Buffer
	metrics.WritePrometheus(&b, false)
	for line := range strings.Lines(b.String()) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "missing"
}

// TestMemcachedPlacement: keys land on the server a plain gomemcache client
// over the same list picks, duplicates included (a server listed twice has
// one breaker and twice the keys).
func TestMemcachedPlacement(t *testing.T) {
	a, b := startMemcached(t), startMemcached(t)
	for _, servers := range [][]string{{a.addr(), b.addr()}, {b.addr(), a.addr()}, {a.addr(), b.addr(), a.addr()}} {
		m := newTestMemcached(t, MemcachedOptions{Servers: servers})
		if len(m.shards) != 2 {
			t.Fatalf("%q: %d shards, want 2", servers, len(m.shards))
		}
		ref := memcache.New(servers...)
		ref.Timeout = time.Second
		tag := strings.Join(servers, ",")
		for i := range 200 {
			key := "place-" + strconv.Itoa(i)
			if err := ref.Set(&memcache.Item{Key: key, Value: []byte(tag)}); err != nil {
				t.Fatal(err)
			}
			if got, err := m.Get(key); err != nil || string(got) != tag {
				t.Fatalf("%q: Get(%s) = %q, %v: not where gomemcache put it", servers, key, got, err)
			}
		}
		ref.Close()
	}
}

// TestMemcachedOneServerDown: with one of two servers dead, keys on the
// live one still hit, keys on the dead one fail fast (a miss for the
// proxy), and only the dead server's breaker opens.
func TestMemcachedOneServerDown(t *testing.T) {
	a, b := startMemcached(t), startMemcached(t)
	m := newTestMemcached(t, MemcachedOptions{Servers: []string{a.addr(), b.addr()}, BreakerDelay: time.Minute})
	onA, onB := keysOn(t, m, 0, 20), keysOn(t, m, 1, 20)
	for _, k := range append(append([]string{}, onA...), onB...) {
		if err := m.Set(k, []byte(k), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	serverGauge := func(s *memcachedServer) string {
		return metricValue(`switchyard_cache_server_breaker_state{server="` + s.addr() + `"}`)
	}
	if g, ga, gb := metricValue("switchyard_cache_breaker_state"), serverGauge(a), serverGauge(b); g != "0" || ga != "0" || gb != "0" {
		t.Fatalf("gauges before: overall %s, a %s, b %s; want 0 0 0", g, ga, gb)
	}

	a.stop()
	start := time.Now()
	for round := range 3 {
		for i := range onA {
			if _, err := m.Get(onA[i]); err == nil || errors.Is(err, ErrMiss) {
				t.Fatalf("round %d: Get(%s) on the dead server: err = %v", round, onA[i], err)
			} else if !strings.Contains(err.Error(), a.addr()) {
				t.Fatalf("error does not name the server: %v", err)
			}
			if got, err := m.Get(onB[i]); err != nil || string(got) != onB[i] {
				t.Fatalf("round %d: Get(%s) on the live server = %q, %v", round, onB[i], got, err)
			}
			if _, err := m.Incr("ctr-"+onB[i], 1, time.Time{}); err != nil {
				t.Fatalf("Incr on the live server: %v", err)
			}
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("60 operations on the dead server's keys took %v", d)
	}
	if !m.shards[0].breaker.IsOpen() || !m.shards[1].breaker.IsClosed() {
		t.Fatalf("breakers: dead %v, live %v; want open, closed", m.shards[0].breaker.State(), m.shards[1].breaker.State())
	}
	if _, err := m.Get(onA[0]); !errors.Is(err, circuitbreaker.ErrOpen) {
		t.Fatalf("Get on the dead server after its breaker opened: %v, want ErrOpen", err)
	}
	if _, err := m.Incr(onA[0], 1, time.Time{}); err == nil {
		t.Fatal("Incr of a counter on the dead server succeeded")
	}
	if g, ga, gb := metricValue("switchyard_cache_breaker_state"), serverGauge(a), serverGauge(b); g != "2" || ga != "2" || gb != "0" {
		t.Fatalf("gauges with a down: overall %s, a %s, b %s; want 2 2 0", g, ga, gb)
	}
}

// warmPool leaves many idle connections in m's pools: n operations at once
// on each key list.
func warmPool(t *testing.T, m *Memcached, keys []string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			k := keys[g%len(keys)]
			if err := m.Set(k, []byte("warm"), time.Minute); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// currConnections is memcached's count of open connections (it includes
// the one asking, and the listener).
func currConnections(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("stats\r\n")); err != nil {
		t.Fatal(err)
	}
	var all []byte
	buf := make([]byte, 4096)
	for !bytes.HasSuffix(all, []byte("END\r\n")) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		all = append(all, buf[:n]...)
	}
	for line := range strings.Lines(string(all)) {
		if v, ok := strings.CutPrefix(line, "STAT curr_connections "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no curr_connections in stats")
	return 0
}

// TestMemcachedBreakerOpenDropsIdleConns: the connections pooled for a
// server are closed when its breaker opens, so a probe after the delay
// dials instead of taking a connection from before the failure.
func TestMemcachedBreakerOpenDropsIdleConns(t *testing.T) {
	a, b := startMemcached(t), startMemcached(t)
	m := newTestMemcached(t, MemcachedOptions{Servers: []string{a.addr(), b.addr()}})
	warmPool(t, m, keysOn(t, m, 0, 4), 48)
	warmPool(t, m, keysOn(t, m, 1, 4), 48)
	base := currConnections(t, a.addr())
	if base < 10 {
		t.Fatalf("only %d connections to a after warming the pool", base)
	}
	m.shards[0].breaker.Open()
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := currConnections(t, a.addr())
		if n <= base-10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections to a: %d before its breaker opened, %d 3s after", base, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := currConnections(t, b.addr()); n < 10 {
		t.Fatalf("b's pool went too (%d connections): only a's breaker opened", n)
	}
}

// TestMemcachedRestartWarmPool: a server restarted while its connection
// pool is warm is used again within BreakerDelay + 1s, whether the
// restart was quick (no operation saw it down) or operations failed long
// enough to open its breaker.
func TestMemcachedRestartWarmPool(t *testing.T) {
	const delay = 2 * time.Second
	for _, tc := range []struct {
		name      string
		whileDown func(t *testing.T, m *Memcached, keys []string)
	}{
		{"quick restart", func(*testing.T, *Memcached, []string) {}},
		{"down until its breaker opened", func(t *testing.T, m *Memcached, keys []string) {
			for i := 0; i < 100 && !m.shards[0].breaker.IsOpen(); i++ {
				_, _ = m.Get(keys[i%len(keys)])
			}
			if !m.shards[0].breaker.IsOpen() {
				t.Fatal("breaker not open after 100 failed operations")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startMemcached(t), startMemcached(t)
			m := newTestMemcached(t, MemcachedOptions{Servers: []string{a.addr(), b.addr()}, BreakerDelay: delay})
			keys := keysOn(t, m, 0, 8)
			warmPool(t, m, keys, 64)
			retries := memcachedStaleRetries.Get()

			a.stop()
			tc.whileDown(t, m, keys)
			a.start()
			back := time.Now()
			deadline := back.Add(delay + time.Second)
			failed := 0
			for i := 0; ; i++ {
				k := keys[i%len(keys)]
				err := m.Set(k, []byte("again"), time.Minute)
				if err == nil {
					var got []byte
					got, err = m.Get(k)
					if err == nil && string(got) != "again" {
						t.Fatalf("Get(%s) = %q after Set", k, got)
					}
				}
				if err == nil {
					break
				}
				failed++
				if time.Now().After(deadline) {
					t.Fatalf("Set/Get still failing %v after the restart (breaker delay %v): %v", time.Since(back), delay, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("%s: Set and Get work %v after the restart (%d failed tries, %d stale-connection retries)",
				tc.name, time.Since(back).Round(time.Millisecond), failed, memcachedStaleRetries.Get()-retries)
			// And every key of the server works, not just one.
			for _, k := range keys {
				if err := m.Set(k, []byte("v"), time.Minute); err != nil {
					t.Fatalf("Set(%s) after recovery: %v", k, err)
				}
			}
		})
	}
}

// TestMemcachedOpsCounted: every request sent is counted by command,
// including the add of an Incr that creates its counter.
func TestMemcachedOpsCounted(t *testing.T) {
	srv := startMemcached(t)
	m := newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}})
	counters := map[string]*metrics.Counter{"get": memcachedOpsGet, "set": memcachedOpsSet, "add": memcachedOpsAdd,
		"delete": memcachedOpsDelete, "incr": memcachedOpsIncr, "decr": memcachedOpsDecr, "other": memcachedOpsOther}
	snapshot := func() map[string]uint64 {
		out := map[string]uint64{}
		for op, c := range counters {
			out[op] = c.Get()
		}
		return out
	}
	big := make([]byte, 300<<10) // written in several pieces
	for i := range big {
		big[i] = "get x\r\n"[i%7]
	}
	steps := []struct {
		name string
		do   func() error
		want map[string]uint64
	}{
		{"Get miss", func() error { _, err := m.Get("absent"); return ignoreMiss(err) }, map[string]uint64{"get": 1}},
		{"Set", func() error { return m.Set("k", []byte("v"), time.Minute) }, map[string]uint64{"set": 1}},
		{"Set of a large value", func() error { return m.Set("big", big, time.Minute) }, map[string]uint64{"set": 1}},
		{"Get hit", func() error { _, err := m.Get("big"); return err }, map[string]uint64{"get": 1}},
		{"Incr creating the counter", func() error { _, err := m.Incr("c", 1, time.Time{}); return err }, map[string]uint64{"incr": 1, "add": 1}},
		{"Incr", func() error { _, err := m.Incr("c", 1, time.Time{}); return err }, map[string]uint64{"incr": 1}},
		{"Value", func() error { _, err := m.Value("c"); return err }, map[string]uint64{"get": 1}},
		{"Add", func() error { return m.Add("lock", []byte("x"), time.Minute) }, map[string]uint64{"add": 1}},
		{"Delete", func() error { return m.Delete("lock") }, map[string]uint64{"delete": 1}},
		{"refused as too large", func() error { return ignoreTooLarge(m.Set("k", make([]byte, 2<<20), 0)) }, map[string]uint64{}},
	}
	for _, st := range steps {
		before := snapshot()
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		after := snapshot()
		for op := range counters {
			if got := after[op] - before[op]; got != st.want[op] {
				t.Errorf("%s: %d %s requests counted, want %d", st.name, got, op, st.want[op])
			}
		}
	}
}

func ignoreTooLarge(err error) error {
	if errors.Is(err, ErrTooLarge) {
		return nil
	}
	return err
}
