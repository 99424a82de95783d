package policy

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/budget"

	"switchyard/config"
	"switchyard/verdict"
)

func TestRetry(t *testing.T) {
	tests := []struct {
		name      string
		attempts  int
		threshold int       // breaker failure threshold; 0 = 5
		script    []Attempt // what successive calls return; the last repeats
		wantCalls int
		want      verdict.Outcome
		minTime   time.Duration
	}{
		{"failure retried twice then returned", 2, 0, []Attempt{{Outcome: verdict.Failure}}, 3, verdict.Failure, 0},
		{"failure then ok", 2, 0, []Attempt{{Outcome: verdict.Failure}, {Outcome: verdict.OK}}, 2, verdict.OK, 0},
		{"client error not retried", 2, 0, []Attempt{{Outcome: verdict.ClientError}}, 1, verdict.ClientError, 0},
		{"rate limit not retried", 2, 0, []Attempt{{Outcome: verdict.RateLimited}}, 1, verdict.RateLimited, 0},
		{"key rejected not retried", 2, 0, []Attempt{{Outcome: verdict.KeyRejected}}, 1, verdict.KeyRejected, 0},
		{"no retry configured", 0, 0, []Attempt{{Outcome: verdict.Failure}}, 1, verdict.Failure, 0},
		{"short retry-after honoured", 1, 0, []Attempt{{Outcome: verdict.Failure, RetryAfter: 30 * time.Millisecond}, {Outcome: verdict.OK}}, 2, verdict.OK, 30 * time.Millisecond},
		{"long retry-after fails over instead", 2, 0, []Attempt{{Outcome: verdict.Failure, RetryAfter: 5 * time.Second}}, 1, verdict.Failure, 0},
		{"opening breaker stops retries", 5, 2, []Attempt{{Outcome: verdict.Failure}}, 2, verdict.Failure, 0},
		{"timeout not retried: fail over at once", 2, 0, []Attempt{{Outcome: verdict.Failure, NoRetry: true}}, 1, verdict.Failure, 0},
		{"429 within max_retry_after waits and retries", 2, 0, []Attempt{{Outcome: verdict.RateLimited, RetryAfter: 30 * time.Millisecond}, {Outcome: verdict.OK}}, 2, verdict.OK, 30 * time.Millisecond},
		{"429 beyond max_retry_after fails over", 2, 0, []Attempt{{Outcome: verdict.RateLimited, RetryAfter: 2 * time.Second}}, 1, verdict.RateLimited, 0},
		{"429 without retry-after fails over", 2, 0, []Attempt{{Outcome: verdict.RateLimited}}, 1, verdict.RateLimited, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOpts(newClock(t0), nil)
			o.Breaker = config.Breaker{FailureThreshold: tt.threshold, Delay: time.Minute}
			p := mustNew(t, []config.Upstream{{Name: "a", Retry: config.Retry{Attempts: tt.attempts, Backoff: time.Millisecond, MaxRetryAfter: time.Second}}}, o)
			calls := 0
			start := time.Now()
			a, err := p.Do("a", "m", nil, func(*Reservation) (Attempt, error) {
				r := tt.script[min(calls, len(tt.script)-1)]
				calls++
				return r, nil
			})
			if err != nil {
				t.Fatalf("Do error: %v", err)
			}
			if calls != tt.wantCalls || a.Outcome != tt.want {
				t.Fatalf("calls = %d outcome = %s, want %d %s", calls, a.Outcome, tt.wantCalls, tt.want)
			}
			if el := time.Since(start); el < tt.minTime || el > 2*time.Second {
				t.Fatalf("took %v", el)
			}
			// Health and counters are Observe's job.
			if st := p.Snapshot()[0]; st.Requests != 0 || st.Failures != 0 {
				t.Fatalf("Do recorded requests %d failures %d", st.Requests, st.Failures)
			}
		})
	}
}

// TestRetryDefersCommittedStream: with a retry policy too, a committed
// stream (Pending) keeps its breaker permits and is recorded when it ends,
// so streams that die after their first event open the breaker.
func TestRetryDefersCommittedStream(t *testing.T) {
	o := testOpts(newClock(t0), nil)
	o.Breaker = config.Breaker{FailureThreshold: 2, Delay: time.Minute}
	p := mustNew(t, []config.Upstream{{Name: "a", Retry: config.Retry{Attempts: 2, Backoff: time.Millisecond}}}, o)
	pending := func(*Reservation) (Attempt, error) { return Attempt{Outcome: verdict.OK, Pending: true}, nil }
	for i := range 2 {
		a, err := p.Do("a", "m", nil, pending)
		if err != nil || !a.Deferred {
			t.Fatalf("stream %d: Deferred %v, err %v; want a deferred record", i, a.Deferred, err)
		}
		p.StreamFailed("a", "m", a.Deferred, Observation{Status: 200, Err: "cut"})
	}
	if _, err := p.Do("a", "m", nil, pending); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("after 2 streams failed after commit: err %v, want the breaker open", err)
	}
}

func TestRetryKeepsCallError(t *testing.T) {
	p := mustNew(t, []config.Upstream{{Name: "a", Retry: config.Retry{Attempts: 1, Backoff: time.Millisecond}}}, testOpts(newClock(t0), nil))
	boom := errors.New("dial tcp: connection refused")
	calls := 0
	a, err := p.Do("a", "m", nil, func(*Reservation) (Attempt, error) { calls++; return Attempt{}, boom })
	if !errors.Is(err, boom) || a.Outcome != verdict.Failure || calls != 2 {
		t.Fatalf("Do = %+v, %v after %d calls", a, err, calls)
	}
}

// Five requests fail at once; the shared budget (at least 3, at most 20% of
// executions) lets only three of them retry while those retries are in flight.
func TestRetryBudget(t *testing.T) {
	o := testOpts(newClock(t0), nil)
	o.Breaker.FailureThreshold = 100
	p := mustNew(t, []config.Upstream{
		{Name: "a", Retry: config.Retry{Attempts: 1, Backoff: time.Millisecond}},
		{Name: "b", Retry: config.Retry{Attempts: 1, Backoff: time.Millisecond}},
	}, o)
	const n = 5
	var (
		firstDone sync.WaitGroup
		retrying  atomic.Int32
		release   = make(chan struct{})
		results   = make(chan int, n) // calls per Do
	)
	firstDone.Add(n)
	for i := range n {
		name := []string{"a", "b"}[i%2]
		go func() {
			calls := 0
			p.Do(name, "m", nil, func(*Reservation) (Attempt, error) {
				calls++
				if calls == 1 {
					firstDone.Done()
					firstDone.Wait() // all five executions are in flight
					return Attempt{Outcome: verdict.Failure}, nil
				}
				retrying.Add(1)
				select {
				case <-release:
				case <-time.After(5 * time.Second):
				}
				return Attempt{Outcome: verdict.Failure}, nil
			})
			results <- calls
		}()
	}
	// The two denied Do calls return on their own.
	got := map[int]int{}
	for range n - 3 {
		select {
		case c := <-results:
			got[c]++
		case <-time.After(3 * time.Second):
			t.Fatal("denied retries did not return")
		}
	}
	close(release)
	for range 3 {
		select {
		case c := <-results:
			got[c]++
		case <-time.After(3 * time.Second):
			t.Fatal("retries did not finish")
		}
	}
	if got[1] != 2 || got[2] != 3 || retrying.Load() != 3 {
		t.Fatalf("calls per Do %v (retrying %d), want two without retry and three with", got, retrying.Load())
	}
}

func TestRetryAbortsOnOpenBreaker(t *testing.T) {
	o := testOpts(newClock(t0), nil)
	o.Breaker = config.Breaker{FailureThreshold: 1, Delay: time.Minute}
	p := mustNew(t, []config.Upstream{{Name: "a", Retry: config.Retry{Attempts: 3, Backoff: time.Millisecond}}}, o)
	if a, err := p.Do("a", "m", nil, run(verdict.Failure)); err != nil || a.Outcome != verdict.Failure {
		t.Fatalf("first Do = %+v, %v", a, err)
	}
	if _, err := p.Do("a", "m", nil, run(verdict.OK)); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("second Do err = %v", err)
	}
	if _, err := New(specs("a"), Options{RetryBudget: fakeBudget{}}); err == nil {
		t.Fatal("a foreign budget implementation must be rejected")
	}
}

type fakeBudget struct{}

func (fakeBudget) Rate() float64 { return 0 }

var _ budget.Budget = fakeBudget{}

func TestRetryDelay(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		backoff    time.Duration
		n          int
		retryAfter time.Duration
		random     float64
		want       time.Duration
	}{
		{100 * ms, 1, 0, 0.5, 100 * ms},
		{100 * ms, 2, 0, 0.5, 200 * ms},
		{100 * ms, 3, 0, 0.5, 400 * ms},
		{100 * ms, 10, 0, 0.5, 2000 * ms}, // capped
		{100 * ms, 1, 0, 0, 75 * ms},      // -25%
		{100 * ms, 1, 0, 1, 125 * ms},     // +25% (random < 1 in practice)
		{100 * ms, 1, 800 * ms, 0, 800 * ms},
		{100 * ms, 1, 800 * ms, 0.5, 900 * ms},
	}
	for _, tt := range tests {
		if got := retryDelay(tt.backoff, tt.n, tt.retryAfter, tt.random); got != tt.want {
			t.Errorf("retryDelay(%v, %d, %v, %v) = %v, want %v", tt.backoff, tt.n, tt.retryAfter, tt.random, got, tt.want)
		}
	}
}
