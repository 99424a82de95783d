package policy

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"switchyard/config"
	"switchyard/verdict"
)

// clock is an injectable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// logBuf collects slog text output.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) Count(s string) int { return strings.Count(l.String(), s) }

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeCounter is a Counter with function fields; nil fields use an
// in-process counter of its own (newFakeCounter).
type fakeCounter struct {
	IncrFromFunc func(key string, delta, seed uint64, expireAt time.Time) (uint64, error)
	DecrFromFunc func(key string, delta, seed uint64, expireAt time.Time) (uint64, error)
	LookupFunc   func(key string) (uint64, bool, error)
	local        *localCounter
}

// newFakeCounter returns a fakeCounter backed by an in-process counter.
func newFakeCounter(now func() time.Time) *fakeCounter {
	return &fakeCounter{local: newLocalCounter(now)}
}

func (f *fakeCounter) IncrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error) {
	if f.IncrFromFunc != nil {
		return f.IncrFromFunc(key, delta, seed, expireAt)
	}
	return f.local.IncrFrom(key, delta, seed, expireAt)
}

func (f *fakeCounter) DecrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error) {
	if f.DecrFromFunc != nil {
		return f.DecrFromFunc(key, delta, seed, expireAt)
	}
	return f.local.DecrFrom(key, delta, seed, expireAt)
}

func (f *fakeCounter) Lookup(key string) (uint64, bool, error) {
	if f.LookupFunc != nil {
		return f.LookupFunc(key)
	}
	return f.local.Lookup(key)
}

// value is the counter's value of key, or 0.
func (f *fakeCounter) value(key string) uint64 {
	v, _, _ := f.Lookup(key)
	return v
}

// drop deletes key, as a memcached restart would.
func (f *fakeCounter) drop(key string) {
	f.local.mu.Lock()
	delete(f.local.m, key)
	f.local.mu.Unlock()
}

var errDown = errors.New("counter down")

// t0 is a Monday afternoon, UTC.
var t0 = time.Date(2025, 3, 10, 15, 0, 0, 0, time.UTC)

// testOpts returns options with an isolated metrics set, the clock and a log
// buffer.
func testOpts(c *clock, lb *logBuf) Options {
	o := Options{Now: c.Now, Metrics: metrics.NewSet()}
	if lb != nil {
		o.Logger = lb.logger()
	}
	return o
}

func mustNew(t *testing.T, specs []config.Upstream, o Options) *Policy {
	t.Helper()
	p, err := New(specs, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func specs(names ...string) []config.Upstream {
	out := make([]config.Upstream, len(names))
	for i, n := range names {
		out[i] = config.Upstream{Name: n}
	}
	return out
}

func targets(model string, names ...string) []Target {
	out := make([]Target, len(names))
	for i, n := range names {
		out[i] = Target{Name: n, Model: model}
	}
	return out
}

func names(cs []Candidate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

func ok(latency time.Duration) Observation {
	return Observation{Outcome: verdict.OK, Status: 200, Latency: latency}
}

func fail() Observation {
	return Observation{Outcome: verdict.Failure, Status: 502, Err: "bad gateway"}
}

func run(o verdict.Outcome) func(*Reservation) (Attempt, error) {
	return func(*Reservation) (Attempt, error) { return Attempt{Outcome: o}, nil }
}

// observed is a call that reports ob (with the call's reservation) to p,
// as the proxy does, and returns ob's outcome.
func observed(p *Policy, name, model string, ob Observation) func(*Reservation) (Attempt, error) {
	return func(r *Reservation) (Attempt, error) {
		ob.Reservation = r
		p.Observe(name, model, ob)
		return Attempt{Outcome: ob.Outcome}, nil
	}
}

func skippedFor(sk []Skipped, name string) (Skipped, bool) {
	for _, s := range sk {
		if s.Name == name {
			return s, true
		}
	}
	return Skipped{}, false
}

// classified sets ob.Cooldown as the proxy does, from the failure table's
// verdict on the answer ob describes.
func classified(ob Observation) Observation {
	ob.Cooldown = verdict.Classify(verdict.Answer{Status: ob.Status, RateLimit: ob.RateLimit}).Cooldown
	return ob
}
