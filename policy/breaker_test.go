package policy

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"switchyard/config"
	"switchyard/verdict"
)

const testDelay = 50 * time.Millisecond

func breakerOpts(c *clock, lb *logBuf) Options {
	o := testOpts(c, lb)
	o.Breaker = config.Breaker{FailureThreshold: 5, SuccessThreshold: 1, Delay: testDelay}
	return o
}

func TestBreakerOpensAndRecovers(t *testing.T) {
	c := newClock(t0)
	lb := &logBuf{}
	p := mustNew(t, specs("a", "b"), breakerOpts(c, lb))
	ts := targets("m", "a", "b")
	for i := range 5 {
		a, err := p.Do("a", "m", nil, run(verdict.Failure))
		if err != nil || a.Outcome != verdict.Failure {
			t.Fatalf("Do #%d = %+v, %v", i, a, err)
		}
		p.Observe("a", "m", fail())
	}
	ranked, skipped := p.Rank(ts)
	if len(ranked) != 1 || ranked[0].Name != "b" {
		t.Fatalf("ranked = %+v, want only b", ranked)
	}
	s, found := skippedFor(skipped, "a")
	if !found || s.Reason != ReasonBreakerOpen {
		t.Fatalf("skipped = %+v", skipped)
	}
	if d := s.Until.Sub(t0); d <= 0 || d > testDelay {
		t.Fatalf("Until = now+%v, want within the breaker delay", d)
	}
	called := false
	_, err := p.Do("a", "m", nil, func(*Reservation) (Attempt, error) { called = true; return Attempt{}, nil })
	if !errors.Is(err, ErrBreakerOpen) || called {
		t.Fatalf("Do on open breaker: err = %v, called = %v", err, called)
	}
	if st := p.Snapshot()[0]; st.Breaker != "open" || st.Breakers["m"] != "open" {
		t.Fatalf("snapshot = %+v", st)
	}

	time.Sleep(testDelay + 10*time.Millisecond)
	ranked, _ = p.Rank(ts)
	if len(ranked) != 2 {
		t.Fatalf("after the delay ranked = %+v, want a admitted", ranked)
	}
	if a, err := p.Do("a", "m", nil, run(verdict.OK)); err != nil || a.Outcome != verdict.OK {
		t.Fatalf("half-open trial: %+v, %v", a, err)
	}
	if st := p.Snapshot()[0]; st.Breaker != "closed" {
		t.Fatalf("after one verdict.OK breaker = %s, want closed", st.Breaker)
	}
	logs := lb.String()
	for _, want := range []string{"from=closed to=open", "from=open to=half-open", "from=half-open to=closed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestBreakerHalfOpenCapsHealth(t *testing.T) {
	o := breakerOpts(newClock(t0), nil)
	o.Breaker.SuccessThreshold = 3
	p := mustNew(t, specs("a"), o)
	for range 5 {
		p.Do("a", "m", nil, run(verdict.Failure))
	}
	observeN("a", "m", 50, ok(0))(p) // health 1
	time.Sleep(testDelay + 10*time.Millisecond)
	if _, err := p.Do("a", "m", nil, run(verdict.OK)); err != nil { // half-open, 1 of 3 successes
		t.Fatal(err)
	}
	ranked, _ := p.Rank(targets("m", "a"))
	if len(ranked) != 1 || ranked[0].Health != 0.5 {
		t.Fatalf("ranked = %+v, want health capped at 0.5", ranked)
	}
	if st := p.Snapshot()[0]; st.Breaker != "half-open" {
		t.Fatalf("breaker = %s", st.Breaker)
	}
	p.Do("a", "m", nil, run(verdict.OK))
	p.Do("a", "m", nil, run(verdict.OK))
	ranked, _ = p.Rank(targets("m", "a"))
	if ranked[0].Health != 1 {
		t.Fatalf("closed again: health = %v, want 1", ranked[0].Health)
	}
}

func TestBreakerIsolation(t *testing.T) {
	tests := []struct {
		name     string
		outcome  verdict.Outcome
		n        int
		m1, m2   bool // admitted afterwards
		otherUps bool // b admitted
	}{
		{"failures stay on their model", verdict.Failure, 5, false, true, true},
		{"rejected key blocks every model", verdict.KeyRejected, 5, false, false, true},
		{"rate limits do not open", verdict.RateLimited, 20, true, true, true},
		{"not served does not open", verdict.NotServed, 20, true, true, true},
		{"client errors do not open", verdict.ClientError, 20, true, true, true},
		{"quota exhausted does not open", verdict.QuotaExhausted, 20, true, true, true},
		{"four failures do not open", verdict.Failure, 4, true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustNew(t, specs("a", "b"), breakerOpts(newClock(t0), nil))
			for range tt.n {
				p.Do("a", "m1", nil, run(tt.outcome))
			}
			admitted := func(name, model string) bool {
				ranked, _ := p.Rank([]Target{{Name: name, Model: model}})
				return len(ranked) == 1
			}
			if got := admitted("a", "m1"); got != tt.m1 {
				t.Errorf("(a, m1) admitted = %v, want %v", got, tt.m1)
			}
			if got := admitted("a", "m2"); got != tt.m2 {
				t.Errorf("(a, m2) admitted = %v, want %v", got, tt.m2)
			}
			if got := admitted("b", "m1"); got != tt.otherUps {
				t.Errorf("(b, m1) admitted = %v, want %v", got, tt.otherUps)
			}
			// Only the key breaker concerns calls without a model.
			if _, open := p.KeyBreakerOpen("a"); open != !tt.m2 {
				t.Errorf("KeyBreakerOpen(a) = %v, want %v", open, !tt.m2)
			}
			if _, open := p.KeyBreakerOpen("b"); open {
				t.Error("KeyBreakerOpen(b) = true")
			}
			_, err := p.Do("a", "m2", nil, run(verdict.OK))
			if gotOpen := errors.Is(err, ErrBreakerOpen); gotOpen == tt.m2 {
				t.Errorf("Do(a, m2) err = %v", err)
			}
		})
	}
}

func TestDoErrorWithoutOutcomeIsFailure(t *testing.T) {
	p := mustNew(t, specs("a"), breakerOpts(newClock(t0), nil))
	boom := errors.New("connection reset")
	for range 5 {
		a, err := p.Do("a", "m", nil, func(*Reservation) (Attempt, error) { return Attempt{}, boom })
		if !errors.Is(err, boom) || a.Outcome != verdict.Failure {
			t.Fatalf("Do = %+v, %v", a, err)
		}
	}
	if _, err := p.Do("a", "m", nil, run(verdict.OK)); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("want the breaker open, got %v", err)
	}
	if _, err := p.Do("nope", "m", nil, run(verdict.OK)); !errors.Is(err, ErrUnknownUpstream) {
		t.Fatalf("unknown upstream: %v", err)
	}
}

func TestStreamFailed(t *testing.T) {
	p := mustNew(t, specs("a"), breakerOpts(newClock(t0), nil))
	// Five concurrent streams commit (the breaker records five successes),
	// then all five break.
	for range 5 {
		if _, err := p.Do("a", "m", nil, run(verdict.OK)); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		p.StreamFailed("a", "m", false, Observation{Status: 200, Err: "stream stalled"})
	}
	if _, err := p.Do("a", "m", nil, run(verdict.OK)); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("after 5 failures counted by StreamFailed: %v", err)
	}
	// Each stream is observed once, when it ends: as a failed request.
	st := p.Snapshot()[0]
	if st.Health != 0 || st.Failures != 5 || st.Requests != 5 || st.LastError != "stream stalled" {
		t.Fatalf("status = %+v", st)
	}
	p.StreamFailed("unknown", "m", false, Observation{Err: "x"}) // no panic
}

// TestDeferredStreams: a stream's breaker record waits for its end, so an
// upstream whose streams always die after the first event opens its breaker
// after FailureThreshold streams, where a success recorded at every commit
// point would have reset the count each time.
func TestDeferredStreams(t *testing.T) {
	p := mustNew(t, specs("a"), breakerOpts(newClock(t0), nil))
	pending := func(*Reservation) (Attempt, error) { return Attempt{Outcome: verdict.OK, Pending: true}, nil }
	for i := 0; i < 5; i++ {
		a, err := p.Do("a", "m", nil, pending)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if !a.Deferred {
			t.Fatalf("stream %d: not deferred", i)
		}
		p.StreamFailed("a", "m", a.Deferred, Observation{Status: 200, Err: "cut"})
	}
	if _, err := p.Do("a", "m", nil, pending); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("after 5 streams failed after commit: %v", err)
	}

	// A stream that ends well records one success, when it ends.
	q := mustNew(t, specs("b"), breakerOpts(newClock(t0), nil))
	a, err := q.Do("b", "m", nil, pending)
	if err != nil || !a.Deferred {
		t.Fatalf("Do = %+v, %v", a, err)
	}
	q.StreamDone("b", "m", a.Deferred)
	if st := q.Snapshot()[0]; st.Breaker != "closed" {
		t.Fatalf("breaker %q", st.Breaker)
	}
	// Not pending: recorded at once, nothing deferred.
	if a, err := q.Do("b", "m", nil, run(verdict.OK)); err != nil || a.Deferred {
		t.Fatalf("plain Do = %+v, %v", a, err)
	}
}

// TestBreakerStateReadsHalfOpenAfterDelay: failsafe-go half-opens a breaker
// only when a call asks for a permit, so its State stays open past the
// delay while no traffic comes. Snapshot and the breaker gauge report what
// the next call would find (half-open), and reading does not move the
// breaker.
func TestBreakerStateReadsHalfOpenAfterDelay(t *testing.T) {
	tests := []struct {
		name    string
		outcome verdict.Outcome
		breaker string // the Breakers key that opens
	}{
		{"deployment breaker", verdict.Failure, "m"},
		{"key breaker", verdict.KeyRejected, KeyBreaker},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lb := &logBuf{}
			o := breakerOpts(newClock(t0), lb)
			p := mustNew(t, specs("a"), o)
			gauge := func() string {
				var buf bytes.Buffer
				p.Gauges().WritePrometheus(&buf)
				for _, l := range strings.Split(buf.String(), "\n") {
					if v, found := strings.CutPrefix(l, `switchyard_upstream_breaker_state{upstream="a"} `); found {
						return v
					}
				}
				t.Fatalf("no breaker gauge:\n%s", buf.String())
				return ""
			}
			check := func(when, want, wantGauge string) {
				t.Helper()
				st := p.Snapshot()[0]
				if st.Breaker != want || st.Breakers[tt.breaker] != want {
					t.Errorf("%s: Breaker %q, Breakers %v; want %q", when, st.Breaker, st.Breakers, want)
				}
				if g := gauge(); g != wantGauge {
					t.Errorf("%s: gauge %s, want %s", when, g, wantGauge)
				}
			}
			for range 5 {
				p.Do("a", "m", nil, run(tt.outcome))
			}
			check("just opened", "open", "2")
			time.Sleep(testDelay + 10*time.Millisecond)
			check("delay passed, no traffic", "half-open", "1")
			if strings.Contains(lb.String(), "to=half-open") {
				t.Errorf("reading the state moved the breaker:\n%s", lb)
			}
			// The trial fails: open again, for a fresh delay.
			if _, err := p.Do("a", "m", nil, run(tt.outcome)); err != nil {
				t.Fatalf("trial: %v", err)
			}
			check("failed trial", "open", "2")
			time.Sleep(testDelay + 10*time.Millisecond)
			check("second delay passed", "half-open", "1")
			if _, err := p.Do("a", "m", nil, run(verdict.OK)); err != nil {
				t.Fatalf("trial: %v", err)
			}
			check("good trial", "closed", "0")
		})
	}
}
