package policy

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"switchyard/config"
	"switchyard/verdict"
)

func TestOutcome(t *testing.T) {
	tests := []struct {
		o                           verdict.Outcome
		name                        string
		failsOver, breaker, charged bool
	}{
		{verdict.OK, "ok", false, false, true},
		{verdict.Failure, "error", true, true, false},
		{verdict.RateLimited, "rate_limited", true, false, false},
		{verdict.QuotaExhausted, "quota_exhausted", true, false, true},
		{verdict.KeyRejected, "key_rejected", true, true, true},
		{verdict.NotServed, "not_served", true, false, true},
		{verdict.ClientError, "client_error", false, false, true},
	}
	for _, tt := range tests {
		if got := tt.o.String(); got != tt.name {
			t.Errorf("%d.String() = %q, want %q", tt.o, got, tt.name)
		}
		if got := tt.o.FailsOver(); got != tt.failsOver {
			t.Errorf("%s.FailsOver() = %v", tt.o, got)
		}
		if got := tt.o.IsBreakerFailure(); got != tt.breaker {
			t.Errorf("%s.IsBreakerFailure() = %v", tt.o, got)
		}
		if got := charged(0, tt.o); got != tt.charged {
			t.Errorf("charged(0, %s) = %v", tt.o, got)
		}
	}
	if got := verdict.Outcome(42).String(); got != "Outcome(42)" {
		t.Errorf("unknown outcome String() = %q", got)
	}
}

func TestCharged(t *testing.T) {
	tests := []struct {
		status int
		o      verdict.Outcome
		want   bool
	}{
		{200, verdict.OK, true},
		{204, verdict.OK, true},
		{400, verdict.ClientError, true},
		{401, verdict.KeyRejected, true},
		{402, verdict.QuotaExhausted, true},
		{404, verdict.NotServed, true},
		{413, verdict.RateLimited, true}, // "tokens per minute": answered, 4xx
		{429, verdict.RateLimited, false},
		{498, verdict.Failure, true}, // Groq flex capacity: a 4xx the upstream answered
		{500, verdict.Failure, false},
		{503, verdict.Failure, false},
		{0, verdict.Failure, false},
		{0, verdict.OK, true}, // status unknown: by outcome
	}
	for _, tt := range tests {
		if got := charged(tt.status, tt.o); got != tt.want {
			t.Errorf("charged(%d, %s) = %v, want %v", tt.status, tt.o, got, tt.want)
		}
	}
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name  string
		specs []config.Upstream
		o     Options
		want  string // substring of the error
	}{
		{"no upstreams", nil, Options{}, "no upstreams"},
		{"negative tie band", specs("a"), Options{TieBand: -0.1}, "tie band"},
		{"negative pad", specs("a"), Options{LatencyPad: -1}, "latency pad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.specs, tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	// Members without a quota may join a group that has one.
	if _, err := New([]config.Upstream{
		{Name: "a", QuotaGroup: "g", Quota: config.Quota{Limit: 5}},
		{Name: "b", QuotaGroup: "g"},
	}, Options{}); err != nil {
		t.Fatalf("New with partial group quota: %v", err)
	}
}

// setup drives a policy into a state before ranking.
type setup func(p *Policy)

func observeN(name, model string, n int, ob Observation) setup {
	return func(p *Policy) {
		for range n {
			p.Observe(name, model, ob)
		}
	}
}

func TestRankOrder(t *testing.T) {
	headers := func(rem, lim int64) Observation {
		ob := ok(0)
		ob.RateLimit = verdict.RateLimit{LimitRequests: lim, RemainingRequests: rem, ResetRequests: time.Hour, Known: true}
		return ob
	}
	tests := []struct {
		name  string
		specs []config.Upstream
		setup []setup
		want  []string
	}{
		{
			name:  "priority beats score",
			specs: []config.Upstream{{Name: "a", Priority: 1}, {Name: "b", Priority: 0}},
			setup: []setup{observeN("b", "m", 5, fail()), observeN("b", "m", 5, ok(0))}, // b health 0.5
			want:  []string{"b", "a"},
		},
		{
			name:  "healthier wins",
			specs: specs("a", "b"),
			setup: []setup{observeN("a", "m", 5, fail()), observeN("a", "m", 5, ok(0)), observeN("b", "m", 10, ok(0))},
			want:  []string{"b", "a"},
		},
		{
			name:  "faster wins",
			specs: specs("a", "b"),
			setup: []setup{observeN("a", "m", 1, ok(time.Second)), observeN("b", "m", 1, ok(100*time.Millisecond))},
			want:  []string{"b", "a"},
		},
		{
			name:  "more quota left wins",
			specs: specs("a", "b"),
			setup: []setup{observeN("a", "m", 1, headers(50, 1000)), observeN("b", "m", 1, headers(900, 1000))},
			want:  []string{"b", "a"},
		},
		{
			name:  "lower priority kept after higher ones",
			specs: []config.Upstream{{Name: "a", Priority: 2}, {Name: "b", Priority: 1}, {Name: "c", Priority: 1}},
			setup: []setup{observeN("c", "m", 1, ok(time.Second)), observeN("b", "m", 1, ok(10*time.Millisecond))},
			want:  []string{"b", "c", "a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustNew(t, tt.specs, testOpts(newClock(t0), nil))
			for _, s := range tt.setup {
				s(p)
			}
			ts := make([]Target, len(tt.specs))
			for i, s := range tt.specs {
				ts[i] = Target{Name: s.Name, Model: "m"}
			}
			for i := range 10 { // the order must not depend on tie spreading
				ranked, skipped := p.Rank(ts)
				if got := names(ranked); !slices.Equal(got, tt.want) {
					t.Fatalf("Rank #%d = %v (%+v), want %v", i, got, ranked, tt.want)
				}
				if len(skipped) != 0 {
					t.Fatalf("skipped = %+v", skipped)
				}
			}
		})
	}
}

func TestScoreFormula(t *testing.T) {
	p := mustNew(t, specs("a", "b"), testOpts(newClock(t0), nil))
	observeN("a", "m", 3, fail())(p)
	observeN("a", "m", 1, ok(450*time.Millisecond))(p)
	p.Observe("b", "m", ok(50*time.Millisecond))
	ranked, _ := p.Rank(targets("m", "a", "b"))
	var a Candidate
	for _, c := range ranked {
		if c.Name == "a" {
			a = c
		}
	}
	const eps = 1e-9
	// health 1/4; latency (50+50)/(450+50) = 0.2; quota 1.
	if math.Abs(a.Health-0.25) > eps || math.Abs(a.Latency-0.2) > eps || a.Quota != 1 {
		t.Fatalf("sub-scores = %+v", a)
	}
	if want := 0.4*0.25 + 0.3*1 + 0.3*0.2; math.Abs(a.Score-want) > eps {
		t.Fatalf("score = %v, want %v", a.Score, want)
	}
	// EWMA with alpha 0.3.
	p.Observe("b", "m", ok(150*time.Millisecond))
	d := p.byName["b"].st.lookup("m")
	if got, want := loadFloat(&d.ewma), 0.3*150e6+0.7*50e6; math.Abs(got-want) > 1 {
		t.Fatalf("ewma = %v, want %v", got, want)
	}
}

func TestTies(t *testing.T) {
	tests := []struct {
		name     string
		lat      []time.Duration // per upstream a, b, c; 0 = no samples
		wantFrac []float64       // expected share of first places
		tol      float64
	}{
		{"three equal", []time.Duration{0, 0, 0}, []float64{1. / 3, 1. / 3, 1. / 3}, 0.1},
		{"three equal with samples", []time.Duration{200 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond}, []float64{1. / 3, 1. / 3, 1. / 3}, 0.1},
		{"sub-ms jitter is a tie", []time.Duration{time.Millisecond, 1400 * time.Microsecond}, []float64{0.5, 0.5}, 0.1},
		{"clearly faster wins", []time.Duration{100 * time.Millisecond, time.Second}, []float64{1, 0}, 0.01},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := []string{"a", "b", "c"}[:len(tt.lat)]
			p := mustNew(t, specs(ns...), testOpts(newClock(t0), nil))
			for i, l := range tt.lat {
				if l > 0 {
					p.Observe(ns[i], "m", ok(l))
				}
			}
			ts := targets("m", ns...)
			const n = 3000
			first := map[string]int{}
			for range n {
				ranked, _ := p.Rank(ts)
				first[ranked[0].Name]++
			}
			for i, name := range ns {
				got := float64(first[name]) / n
				if math.Abs(got-tt.wantFrac[i]) > tt.tol*max(tt.wantFrac[i], 0.1) {
					t.Errorf("%s first in %.3f of calls, want %.3f (%v)", name, got, tt.wantFrac[i], first)
				}
			}
		})
	}
}

// Interleaved requests for two models must spread each model over the tied
// upstreams (a shared round-robin counter would lock model X to one key).
func TestTiesInterleavedModels(t *testing.T) {
	p := mustNew(t, specs("a", "b"), testOpts(newClock(t0), nil))
	first := map[string]map[string]int{"x": {}, "y": {}}
	for range 1000 {
		for _, m := range []string{"x", "y"} {
			ranked, _ := p.Rank(targets(m, "a", "b"))
			first[m][ranked[0].Name]++
		}
	}
	for m, f := range first {
		if f["a"] < 450 || f["b"] < 450 {
			t.Errorf("model %s first places %v, want about 500 each", m, f)
		}
	}
}

func TestRankUnknownTarget(t *testing.T) {
	p := mustNew(t, specs("a"), testOpts(newClock(t0), nil))
	ranked, skipped := p.Rank([]Target{{Name: "zz", Model: "m"}, {Name: "a", Model: "m"}})
	if len(ranked) != 1 || ranked[0].Name != "a" {
		t.Fatalf("ranked = %+v", ranked)
	}
	if len(skipped) != 1 || skipped[0].Reason != ReasonUnknownUpstream {
		t.Fatalf("skipped = %+v", skipped)
	}
}

func TestRankAllocations(t *testing.T) {
	p := mustNew(t, specs("a", "b", "c"), testOpts(newClock(t0), nil))
	ts := targets("m", "a", "b", "c")
	for _, n := range []string{"a", "b", "c"} {
		p.Observe(n, "m", ok(100*time.Millisecond))
	}
	allocs := testing.AllocsPerRun(200, func() { p.Rank(ts) })
	if allocs > 1 {
		t.Fatalf("Rank allocates %.1f times per call, want at most 1 (the result)", allocs)
	}
}

// TestSkipped: Skipped reports what Rank leaves out, and asking does not
// count as a pick (the tie order stays).
func TestSkipped(t *testing.T) {
	c := newClock(t0)
	p := mustNew(t, specs("a", "b", "c"), testOpts(c, nil))
	ts := append(targets("m", "a", "b", "c"), Target{Name: "ghost", Model: "m"})
	p.Observe("c", "m", classified(Observation{Outcome: verdict.RateLimited, Status: 429, RateLimit: verdict.RateLimit{RetryAfter: 30 * time.Second, Known: true}}))
	_, rankSkipped := p.Rank(ts)
	got := p.Skipped(ts)
	if len(got) != len(rankSkipped) {
		t.Fatalf("Skipped = %+v, Rank skipped %+v", got, rankSkipped)
	}
	for i := range got {
		if got[i] != rankSkipped[i] {
			t.Errorf("Skipped[%d] = %+v, Rank skipped %+v", i, got[i], rankSkipped[i])
		}
	}
	if len(got) != 2 || got[0].Name != "c" || got[0].Reason != ReasonRateLimited || !got[0].Until.Equal(t0.Add(30*time.Second)) ||
		got[1].Name != "ghost" || got[1].Reason != ReasonUnknownUpstream {
		t.Errorf("Skipped = %+v", got)
	}
	// a and b tie: picks alternate; Skipped calls in between change nothing.
	first, _ := p.Rank(ts)
	for range 5 {
		p.Skipped(ts)
	}
	second, _ := p.Rank(ts)
	if first[0].Name == second[0].Name {
		t.Errorf("Rank picked %s twice in a row around Skipped calls; a tie should alternate", first[0].Name)
	}
}
