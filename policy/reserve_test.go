package policy

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"switchyard/config"
	"switchyard/verdict"
)

// opCounter is a fakeCounter that counts its operations (the round trips
// a real counter would make).
type opCounter struct {
	*fakeCounter
	incrs, decrs, lookups atomic.Int64
}

func newOpCounter(now func() time.Time) *opCounter {
	oc := &opCounter{fakeCounter: newFakeCounter(now)}
	local := oc.local
	oc.IncrFromFunc = func(k string, d, s uint64, e time.Time) (uint64, error) {
		oc.incrs.Add(1)
		return local.IncrFrom(k, d, s, e)
	}
	oc.DecrFromFunc = func(k string, d, s uint64, e time.Time) (uint64, error) {
		oc.decrs.Add(1)
		return local.DecrFrom(k, d, s, e)
	}
	oc.LookupFunc = func(k string) (uint64, bool, error) {
		oc.lookups.Add(1)
		return local.Lookup(k)
	}
	return oc
}

func (oc *opCounter) ops() int64 { return oc.incrs.Load() + oc.decrs.Load() }

const keyA = DefaultCounterPrefix + ":a:requests:20250310"

func TestReserveAmount(t *testing.T) {
	tests := []struct {
		name  string
		quota config.Quota
		est   Estimate
		want  int64
	}{
		{"requests: one", config.Quota{Limit: 100, Unit: "requests"}, Estimate{PromptChars: 4000, MaxTokens: 500}, 1},
		{"tokens: prompt/4 + max_tokens", config.Quota{Limit: 1e6, Unit: "tokens"}, Estimate{PromptChars: 401, MaxTokens: 100}, 101 + 100},
		{"tokens: default completion", config.Quota{Limit: 1e6, Unit: "tokens"}, Estimate{PromptChars: 40}, 10 + DefaultMaxTokens},
		{"tokens: configured default completion", config.Quota{Limit: 1e6, Unit: "tokens", DefaultMaxTokens: 64}, Estimate{PromptChars: 40}, 10 + 64},
		{"tokens: max_tokens wins over the default", config.Quota{Limit: 1e6, Unit: "tokens", DefaultMaxTokens: 64}, Estimate{MaxTokens: 7}, 7},
		{"chars: prompt + 4 per completion token", config.Quota{Limit: 1e6, Unit: "chars"}, Estimate{PromptChars: 30, MaxTokens: 10}, 70},
		{"chars: default completion", config.Quota{Limit: 1e6, Unit: "chars", DefaultMaxTokens: 5}, Estimate{}, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oc := newOpCounter(newClock(t0).Now)
			o := testOpts(newClock(t0), nil)
			o.Counter = oc
			p := mustNew(t, []config.Upstream{{Name: "a", Quota: tt.quota}}, o)
			var got int64
			_, err := p.Do("a", "m", func() Estimate { return tt.est }, func(r *Reservation) (Attempt, error) {
				got = r.Amount()
				return Attempt{Outcome: verdict.OK}, nil
			})
			if err != nil || got != tt.want {
				t.Fatalf("reserved %d (err %v), want %d", got, err, tt.want)
			}
			key := DefaultCounterPrefix + ":a:" + tt.quota.Unit + ":20250310"
			if v := oc.value(key); int64(v) != tt.want {
				t.Fatalf("counter %d before the answer, want the reservation %d", v, tt.want)
			}
		})
	}
	// Without a limit nothing is reserved and the estimate is not asked for.
	p := mustNew(t, specs("a"), testOpts(newClock(t0), nil))
	_, err := p.Do("a", "m", func() Estimate { t.Fatal("estimate asked for"); return Estimate{} }, func(r *Reservation) (Attempt, error) {
		if r != nil {
			t.Fatalf("reservation %+v without a limit", r)
		}
		return Attempt{Outcome: verdict.OK}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReserveSettle: what an attempt's observation leaves in the counter
// after its reservation, and the counter round trips it costs.
func TestReserveSettle(t *testing.T) {
	usage := func(p, c int64) Usage { return Usage{PromptTokens: p, CompletionTokens: c} }
	tests := []struct {
		name    string
		unit    string
		est     Estimate
		ob      Observation
		want    uint64
		wantOps int64 // incr + decr, the reservation's included
	}{
		{"requests: 200 keeps the one", "requests", Estimate{}, Observation{Outcome: verdict.OK, Status: 200}, 1, 1},
		{"requests: 400 is charged", "requests", Estimate{}, Observation{Outcome: verdict.ClientError, Status: 400}, 1, 1},
		{"requests: 401 is charged", "requests", Estimate{}, Observation{Outcome: verdict.KeyRejected, Status: 401}, 1, 1},
		{"requests: 429 is released", "requests", Estimate{}, Observation{Outcome: verdict.RateLimited, Status: 429}, 0, 2},
		{"requests: 503 is released", "requests", Estimate{}, Observation{Outcome: verdict.Failure, Status: 503}, 0, 2},
		{"requests: connection refused is released", "requests", Estimate{}, Observation{Outcome: verdict.Failure}, 0, 2},
		{"tokens: over-reserved, decr the excess", "tokens", Estimate{PromptChars: 400, MaxTokens: 100}, Observation{Outcome: verdict.OK, Status: 200, Usage: usage(90, 60)}, 150, 2},
		{"tokens: under-reserved, incr the rest", "tokens", Estimate{PromptChars: 400, MaxTokens: 100}, Observation{Outcome: verdict.OK, Status: 200, Usage: usage(120, 300)}, 420, 2},
		{"tokens: exact, no second trip", "tokens", Estimate{PromptChars: 400, MaxTokens: 100}, Observation{Outcome: verdict.OK, Status: 200, Usage: usage(100, 100)}, 200, 1},
		{"tokens: a 2xx without usage keeps the estimate", "tokens", Estimate{PromptChars: 400, MaxTokens: 100}, Observation{Outcome: verdict.Failure, Status: 200}, 200, 1},
		{"tokens: a 400 without usage costs nothing", "tokens", Estimate{PromptChars: 400, MaxTokens: 100}, Observation{Outcome: verdict.ClientError, Status: 400}, 0, 2},
		{"tokens: 502 is released", "tokens", Estimate{PromptChars: 400, MaxTokens: 100}, Observation{Outcome: verdict.Failure, Status: 502, Usage: usage(1000, 0)}, 0, 2},
		{"chars: reconciled to the count", "chars", Estimate{PromptChars: 10, MaxTokens: 10}, Observation{Outcome: verdict.OK, Status: 200, Chars: 35}, 35, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oc := newOpCounter(newClock(t0).Now)
			o := testOpts(newClock(t0), nil)
			o.Counter = oc
			p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 1 << 30, Unit: tt.unit}}}, o)
			if _, err := p.Do("a", "m", func() Estimate { return tt.est }, observed(p, "a", "m", tt.ob)); err != nil {
				t.Fatal(err)
			}
			key := DefaultCounterPrefix + ":a:" + tt.unit + ":20250310"
			if v := oc.value(key); v != tt.want {
				t.Errorf("counter = %d, want %d", v, tt.want)
			}
			if n := oc.ops(); n != tt.wantOps {
				t.Errorf("%d counter updates, want %d", n, tt.wantOps)
			}
			if u := p.Snapshot()[0].Quota.Used; u != int64(tt.want) {
				t.Errorf("/status used = %d, want %d", u, tt.want)
			}
		})
	}
}

// TestReserveSettlesOnce: a reservation observed twice (StreamFailed after
// an Observe, say) is settled by the first only; Observe without one
// charges directly.
func TestReserveSettlesOnce(t *testing.T) {
	oc := newOpCounter(newClock(t0).Now)
	o := testOpts(newClock(t0), nil)
	o.Counter = oc
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 10}}}, o)
	var res *Reservation
	p.Do("a", "m", nil, func(r *Reservation) (Attempt, error) { res = r; return Attempt{Outcome: verdict.OK}, nil })
	p.Observe("a", "m", Observation{Outcome: verdict.Failure, Status: 503, Reservation: res})
	p.Observe("a", "m", Observation{Outcome: verdict.Failure, Status: 503, Reservation: res})
	p.Observe("a", "m", Observation{Outcome: verdict.OK, Status: 200, Reservation: res})
	if v := oc.value(keyA); v != 0 {
		t.Fatalf("counter = %d after a released reservation observed again, want 0", v)
	}
	p.Observe("a", "m", ok(0))
	if v := oc.value(keyA); v != 1 {
		t.Fatalf("counter = %d after an Observe without reservation, want 1", v)
	}
}

func TestReserveRefusedOverLimit(t *testing.T) {
	c := newClock(t0)
	oc := newOpCounter(c.Now)
	oc.local.IncrFrom(keyA, 3, 0, t0.Add(time.Hour)) // another replica spent it all
	o := testOpts(c, nil)
	o.Counter = oc
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 3}}, {Name: "b"}}, o)
	// This replica has not read the counter yet: Rank admits a.
	if sk := mustAdmit(t, p, targets("m", "a"), "a"); sk != nil {
		t.Fatalf("skipped before any read: %+v", sk)
	}
	called := false
	_, err := p.Do("a", "m", nil, func(*Reservation) (Attempt, error) { called = true; return Attempt{}, nil })
	var qe *QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, ErrQuotaExhausted) || called {
		t.Fatalf("Do = %v (called %v), want a QuotaError without a call", err, called)
	}
	midnight := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	if qe.Skipped != (Skipped{Name: "a", Model: "m", Reason: ReasonQuotaExhausted, Until: midnight}) {
		t.Fatalf("Skipped = %+v", qe.Skipped)
	}
	if v := oc.value(keyA); v != 3 {
		t.Fatalf("counter = %d after a refused reservation, want 3 (given back)", v)
	}
	// Now Rank knows, without another round trip.
	before := oc.ops()
	if sk := mustAdmit(t, p, targets("m", "a", "b"), "a"); sk == nil || sk.Reason != ReasonQuotaExhausted || !sk.Until.Equal(midnight) {
		t.Fatalf("after the refusal Rank skipped %+v", sk)
	}
	if oc.ops() != before {
		t.Fatal("Rank updated the counter")
	}
}

// TestReserveWithRetry: every try of a retried attempt reserves and is
// settled; a retry the quota refuses ends the retries with the last result.
func TestReserveWithRetry(t *testing.T) {
	oc := newOpCounter(newClock(t0).Now)
	o := testOpts(newClock(t0), nil)
	o.Counter = oc
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 2}, Retry: config.Retry{Attempts: 5, Backoff: time.Millisecond}}}, o)
	calls := 0
	a, err := p.Do("a", "m", nil, func(r *Reservation) (Attempt, error) {
		calls++
		// Each try reserves one; the 400s stay charged (the upstream
		// answered), so the third try does not fit.
		p.Observe("a", "m", Observation{Outcome: verdict.Failure, Status: 400, Reservation: r})
		return Attempt{Outcome: verdict.Failure}, nil
	})
	if err != nil || a.Outcome != verdict.Failure || calls != 2 {
		t.Fatalf("Do = %+v, %v after %d calls; want the second call's failure", a, err, calls)
	}
	if v := oc.value(keyA); v != 2 {
		t.Fatalf("counter = %d, want 2", v)
	}
	// Refused at once: the error says so.
	if _, err := p.Do("a", "m", nil, run(verdict.OK)); !errors.Is(err, ErrQuotaExhausted) {
		t.Fatalf("Do with nothing left = %v", err)
	}
}

// TestReserveReleasedWhenBreakerRefuses: a half-open breaker whose one
// trial is running (a committed stream) refuses a second call after its
// reservation was taken: the reservation is given back.
func TestReserveReleasedWhenBreakerRefuses(t *testing.T) {
	oc := newOpCounter(newClock(t0).Now)
	o := testOpts(newClock(t0), nil)
	o.Counter = oc
	o.Breaker = config.Breaker{FailureThreshold: 1, SuccessThreshold: 1, Delay: 20 * time.Millisecond}
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 10}}}, o)
	p.Do("a", "m", nil, observed(p, "a", "m", fail())) // opens; the 502 is free
	time.Sleep(40 * time.Millisecond)                  // breakers run on real time
	a, err := p.Do("a", "m", nil, func(*Reservation) (Attempt, error) {
		return Attempt{Outcome: verdict.OK, Pending: true}, nil // the trial: a stream, still running
	})
	if err != nil || !a.Deferred {
		t.Fatalf("trial = %+v, %v", a, err)
	}
	if _, err := p.Do("a", "m", nil, run(verdict.OK)); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("second call during the trial = %v, want ErrBreakerOpen", err)
	}
	if v := oc.value(keyA); v != 1 {
		t.Fatalf("counter = %d, want 1 (the trial's; the refused call's given back)", v)
	}
}

// TestReserveExactAcrossReplicas: three policies (replicas) sharing one
// counter let exactly the limit through, whatever the concurrency.
func TestReserveExactAcrossReplicas(t *testing.T) {
	shared := newFakeCounter(time.Now)
	var replicas []*Policy
	for range 3 {
		o := testOpts(newClock(t0), nil)
		o.Counter = shared
		replicas = append(replicas, mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 30}}}, o))
	}
	var calls, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 120 {
		p := replicas[i%3]
		wg.Go(func() {
			_, err := p.Do("a", "m", nil, func(r *Reservation) (Attempt, error) {
				calls.Add(1)
				p.Observe("a", "m", Observation{Outcome: verdict.OK, Status: 200, Reservation: r})
				return Attempt{Outcome: verdict.OK}, nil
			})
			if errors.Is(err, ErrQuotaExhausted) {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if calls.Load() != 30 || refused.Load() != 90 {
		t.Fatalf("%d calls, %d refused; want 30 and 90", calls.Load(), refused.Load())
	}
	if v := shared.value(keyA); v != 30 {
		t.Fatalf("counter = %d, want 30", v)
	}
}

// TestReserveReseeds: a counter lost with memcached is re-created from
// this replica's count, by the next reservation, release or read.
func TestReserveReseeds(t *testing.T) {
	tests := []struct {
		name string
		op   func(t *testing.T, p *Policy)
		want uint64
	}{
		{"reservation seeds, then adds", func(t *testing.T, p *Policy) {
			p.Do("a", "m", nil, observed(p, "a", "m", ok(0)))
		}, 61},
		{"release seeds, then subtracts", func(t *testing.T, p *Policy) {
			var res *Reservation
			p.Do("a", "m", nil, func(r *Reservation) (Attempt, error) { res = r; return Attempt{Outcome: verdict.OK}, nil })
			p.env.counter.(*fakeCounter).drop(keyA) // restarted while the call ran
			p.Observe("a", "m", Observation{Outcome: verdict.Failure, Status: 503, Reservation: res})
		}, 60},
		{"Sync re-creates it", func(t *testing.T, p *Policy) {
			if err := p.Sync(time.Second); err != nil {
				t.Fatal(err)
			}
		}, 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock(t0)
			fc := newFakeCounter(c.Now)
			o := testOpts(c, nil)
			o.Counter = fc
			p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 100}}}, o)
			for range 60 {
				p.Do("a", "m", nil, observed(p, "a", "m", ok(0)))
			}
			fc.drop(keyA) // memcached restarted: the counter is gone
			tt.op(t, p)
			if v, found, _ := fc.Lookup(keyA); !found || v != tt.want {
				t.Fatalf("counter = %d (found %v), want %d", v, found, tt.want)
			}
		})
	}
}

// TestReserveCounterDown: while the counter fails, reservations count in
// process against this replica's count; what was counted reaches the
// counter with its next successful operation.
func TestReserveCounterDown(t *testing.T) {
	c := newClock(t0)
	fc := newFakeCounter(c.Now)
	var down atomic.Bool
	local := fc.local
	fc.IncrFromFunc = func(k string, d, s uint64, e time.Time) (uint64, error) {
		if down.Load() {
			return 0, errDown
		}
		return local.IncrFrom(k, d, s, e)
	}
	fc.DecrFromFunc = func(k string, d, s uint64, e time.Time) (uint64, error) {
		if down.Load() {
			return 0, errDown
		}
		return local.DecrFrom(k, d, s, e)
	}
	o := testOpts(c, nil)
	o.Counter = fc
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 5}}}, o)
	p.Do("a", "m", nil, observed(p, "a", "m", ok(0))) // 1, shared
	down.Store(true)
	for range 2 {
		if _, err := p.Do("a", "m", nil, observed(p, "a", "m", ok(0))); err != nil {
			t.Fatal(err)
		}
	}
	p.Do("a", "m", nil, observed(p, "a", "m", fail())) // reserved and released in process
	if u := p.Snapshot()[0].Quota.Used; u != 3 {
		t.Fatalf("used in process = %d, want 3", u)
	}
	down.Store(false)
	p.Do("a", "m", nil, observed(p, "a", "m", ok(0)))
	if v := fc.value(keyA); v != 4 {
		t.Fatalf("counter = %d after it came back, want 4 (1 + 2 counted in process + 1)", v)
	}
	// In process, the limit still holds.
	down.Store(true)
	p.Do("a", "m", nil, observed(p, "a", "m", ok(0)))
	if _, err := p.Do("a", "m", nil, run(verdict.OK)); !errors.Is(err, ErrQuotaExhausted) {
		t.Fatalf("over the limit in process: %v", err)
	}
}

// TestStatedResetWins: when the upstream states the reset of the very
// allowance the quota counts (same unit, same limit), a used-up quota is
// out until that reset, not the period's end, and then counts anew.
func TestStatedResetWins(t *testing.T) {
	midnight := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		rl        verdict.RateLimit
		wantUntil time.Time
	}{
		{"same allowance: its reset", verdict.RateLimit{LimitRequests: 3, RemainingRequests: 5, ResetRequests: 10 * time.Minute, Known: true}, t0.Add(10 * time.Minute)},
		{"another window size: the period", verdict.RateLimit{LimitRequests: 30, RemainingRequests: 5, ResetRequests: 10 * time.Minute, Known: true}, midnight},
		{"tokens window against a requests quota: the period", verdict.RateLimit{LimitTokens: 3, RemainingTokens: 2, ResetTokens: 10 * time.Minute, Known: true}, midnight},
		{"a reset past the period end: the period", verdict.RateLimit{LimitRequests: 3, RemainingRequests: 5, ResetRequests: 10 * time.Hour, Known: true}, midnight},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock(t0)
			oc := newOpCounter(c.Now)
			o := testOpts(c, nil)
			o.Counter = oc
			p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 3}}}, o)
			ob := ok(0)
			ob.RateLimit = tt.rl
			for range 3 {
				p.Do("a", "m", nil, observed(p, "a", "m", ob))
			}
			sk := mustAdmit(t, p, targets("m", "a"), "a")
			if sk == nil || sk.Reason != ReasonQuotaExhausted || !sk.Until.Equal(tt.wantUntil) {
				t.Fatalf("skipped %+v, want until %v", sk, tt.wantUntil)
			}
			if st := p.Snapshot()[0]; !st.Quota.ResetsAt.Equal(tt.wantUntil) {
				t.Fatalf("/status resets at %v, want %v", st.Quota.ResetsAt, tt.wantUntil)
			}
			c.Set(tt.wantUntil.Add(time.Second))
			if sk := mustAdmit(t, p, targets("m", "a"), "a"); sk != nil {
				t.Fatalf("still skipped after the reset: %+v", sk)
			}
			if _, err := p.Do("a", "m", nil, observed(p, "a", "m", ok(0))); err != nil {
				t.Fatalf("after the reset: %v", err)
			}
			key := keyA
			if tt.wantUntil.Equal(midnight) {
				key = DefaultCounterPrefix + ":a:requests:20250311"
			}
			if v := oc.value(key); v != 1 {
				t.Fatalf("counter = %d after the reset, want 1", v)
			}
		})
	}
}

// TestStatedResetStale: a stated reset that passed before the quota was
// used up renews nothing.
func TestStatedResetStale(t *testing.T) {
	c := newClock(t0)
	o := testOpts(c, nil)
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 3}}}, o)
	ob := ok(0)
	ob.RateLimit = verdict.RateLimit{LimitRequests: 3, RemainingRequests: 2, ResetRequests: time.Minute, Known: true}
	p.Do("a", "m", nil, observed(p, "a", "m", ob))
	c.Advance(2 * time.Minute) // that reset passed; later answers carry no headers
	for range 2 {
		p.Do("a", "m", nil, observed(p, "a", "m", ok(0)))
	}
	midnight := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	if sk := mustAdmit(t, p, targets("m", "a"), "a"); sk == nil || !sk.Until.Equal(midnight) {
		t.Fatalf("skipped %+v, want until midnight", sk)
	}
	if _, err := p.Do("a", "m", nil, run(verdict.OK)); !errors.Is(err, ErrQuotaExhausted) {
		t.Fatalf("Do = %v, want refused", err)
	}
}

// BenchmarkDo is one attempt through Do and Observe, without a quota and
// with a request or token quota on the in-process counter (the embedded
// default): what reserving and settling add besides memcached's round
// trips.
func BenchmarkDo(b *testing.B) {
	for _, q := range []config.Quota{{}, {Limit: 1 << 60, Unit: "requests"}, {Limit: 1 << 60, Unit: "tokens"}} {
		name := "no quota"
		if q.Limit > 0 {
			name = q.Unit
		}
		b.Run(name, func(b *testing.B) {
			o := testOpts(newClock(t0), nil)
			p, err := New([]config.Upstream{{Name: "a", Quota: q}}, o)
			if err != nil {
				b.Fatal(err)
			}
			est := func() Estimate { return Estimate{PromptChars: 400, MaxTokens: 100} }
			ob := Observation{Outcome: verdict.OK, Status: 200, Usage: Usage{PromptTokens: 90, CompletionTokens: 60}}
			call := func(r *Reservation) (Attempt, error) {
				ob := ob
				ob.Reservation = r
				p.Observe("a", "m", ob)
				return Attempt{Outcome: verdict.OK}, nil
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Do("a", "m", est, call); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestQuotaExhaustedRereadEverySecond: a replica that sees its group at
// the limit makes no counter operations, so it re-reads the counter every
// second rather than every 15s: room another replica gives back is seen
// within a second.
func TestQuotaExhaustedRereadEverySecond(t *testing.T) {
	c := newClock(t0)
	shared := newFakeCounter(c.Now)
	shared.local.IncrFrom(keyA, 3, 0, t0.Add(time.Hour))
	o := testOpts(c, nil)
	o.Counter = shared
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 3}}}, o)
	if err := p.Sync(time.Second); err != nil {
		t.Fatal(err)
	}
	ts := targets("m", "a")
	if sk := mustAdmit(t, p, ts, "a"); sk == nil {
		t.Fatal("not skipped at the limit")
	}
	shared.local.DecrFrom(keyA, 1, 0, time.Time{}) // another replica gave one back
	time.Sleep(5 * time.Millisecond)
	if sk := mustAdmit(t, p, ts, "a"); sk == nil {
		t.Fatal("re-read within the second")
	}
	c.Advance(time.Second)
	deadline := time.Now().Add(2 * time.Second)
	for mustAdmit(t, p, ts, "a") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the freed unit was never seen")
		}
		time.Sleep(time.Millisecond)
	}
}
