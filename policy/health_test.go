package policy

import (
	"math"
	"testing"
	"time"

	"switchyard/config"
)

// TestHealthDecay drives the health sub-score with the injected clock: a
// failure counts in full while it is at most Breaker.Delay old, then its
// weight halves every half-life, the rest of it counting as the "no
// history" value 1.
func TestHealthDecay(t *testing.T) {
	const (
		delay = time.Minute
		half  = 30 * time.Second // DefaultHealthHalfLife(delay)
	)
	type step struct {
		at   time.Duration // clock offset from t0 when observing or reading
		obs  *Observation  // nil: read health
		want float64
	}
	f, o := fail(), ok(0)
	tests := []struct {
		name     string
		halfLife time.Duration // Options.HealthHalfLife
		steps    []step
	}{
		{"no history", 0, []step{{at: time.Hour, want: 1}}},
		{"two failures, then time", 0, []step{
			{at: 0, obs: &f}, {at: 0, obs: &f},
			{at: 0, want: 0},
			{at: delay, want: 0}, // in full for the breaker delay
			{at: delay + half, want: 0.5},
			{at: delay + 2*half, want: 0.75},
			{at: delay + 3*half, want: 0.875}, // within the default tie band of a healthy peer
			{at: delay + 10*half, want: 1 - 1.0/1024},
		}},
		{"failures of different ages", 0, []step{
			{at: 0, obs: &f}, {at: delay, obs: &f}, {at: delay, obs: &o}, {at: delay, obs: &o},
			{at: delay, want: 0.5},
			{at: delay + half, want: 1 - 1.5/4},
			{at: 2 * delay, want: 1 - 1.25/4}, // the first has aged 2 half-lives past its hold
		}},
		{"oks do not fade the failures' share", 0, []step{
			{at: 0, obs: &o}, {at: 0, obs: &o}, {at: 0, obs: &o}, {at: 0, obs: &f},
			{at: 0, want: 0.75},
			{at: delay + half, want: 1 - 0.5/4},
		}},
		{"configured half-life", 10 * time.Second, []step{
			{at: 0, obs: &f},
			{at: delay, want: 0},
			{at: delay + 10*time.Second, want: 0.5},
			{at: delay + 30*time.Second, want: 0.875},
		}},
		{"clock stepping back counts the failure in full", 0, []step{
			{at: delay, obs: &f},
			{at: 0, want: 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock(t0)
			opts := testOpts(c, nil)
			opts.Breaker = config.Breaker{FailureThreshold: 1000, SuccessThreshold: 1, Delay: delay}
			opts.HealthHalfLife = tt.halfLife
			p := mustNew(t, specs("a"), opts)
			for i, s := range tt.steps {
				c.Set(t0.Add(s.at))
				if s.obs != nil {
					p.Observe("a", "m", *s.obs)
					continue
				}
				ranked, _ := p.Rank(targets("m", "a"))
				snap := p.Snapshot()[0]
				if math.Abs(ranked[0].Health-s.want) > 1e-9 || math.Abs(snap.Health-s.want) > 1e-9 {
					t.Errorf("step %d (t0+%v): Rank health %v, Snapshot health %v, want %v", i, s.at, ranked[0].Health, snap.Health, s.want)
				}
			}
		})
	}
}

// TestHealthWindowEvicts: the window holds the last 100 attempts; failures
// that left it no longer count, however young.
func TestHealthWindowEvicts(t *testing.T) {
	p := mustNew(t, specs("a"), testOpts(newClock(t0), nil))
	observeN("a", "m", 100, fail())(p)
	observeN("a", "m", 60, ok(0))(p)
	if h := p.Snapshot()[0].Health; math.Abs(h-0.6) > 1e-9 {
		t.Fatalf("health %v, want 0.6", h)
	}
	observeN("a", "m", 40, ok(0))(p)
	if h := p.Snapshot()[0].Health; h != 1 {
		t.Fatalf("health %v, want 1", h)
	}
}

// TestFailedUpstreamRejoinsTies: an upstream that failed twice next to a
// healthy peer of the same priority is ranked behind it for the breaker
// delay plus three half-lives (150s at the defaults), then comes back
// within the tie band and takes its turns again. Unmodified, it never came
// back: its health changed only on attempts, and it got none.
func TestFailedUpstreamRejoinsTies(t *testing.T) {
	c := newClock(t0)
	p := mustNew(t, specs("a", "b"), testOpts(c, nil))
	ts := targets("m", "a", "b")
	observeN("a", "m", 2, fail())(p)
	observeN("b", "m", 10, ok(100*time.Millisecond))(p)
	back := DefaultBreakerDelay + 3*DefaultHealthHalfLife(DefaultBreakerDelay)
	if back != 150*time.Second {
		t.Fatalf("recovery time at the defaults %v, want 150s", back)
	}
	for _, at := range []time.Duration{0, DefaultBreakerDelay, back - time.Second} {
		c.Set(t0.Add(at))
		for i := range 10 {
			if ranked, _ := p.Rank(ts); ranked[0].Name != "b" {
				t.Fatalf("t0+%v, Rank #%d: %v first (%+v), want b until t0+%v", at, i, ranked[0].Name, ranked, back)
			}
		}
	}
	c.Set(t0.Add(back))
	first := map[string]int{}
	for range 10 {
		ranked, _ := p.Rank(ts)
		first[ranked[0].Name]++
	}
	if first["a"] != 5 || first["b"] != 5 {
		t.Fatalf("at t0+%v first places %v, want a and b taking turns", back, first)
	}
}

// TestHealthDecayAcrossReload: the failure times survive Reload, also when
// changed breaker settings rebuild the state, and the new options' decay
// applies at once.
func TestHealthDecayAcrossReload(t *testing.T) {
	c := newClock(t0)
	o := testOpts(c, nil)
	o.Breaker = config.Breaker{FailureThreshold: 1000, SuccessThreshold: 1, Delay: time.Minute}
	p := mustNew(t, specs("a"), o)
	p.Observe("a", "m", fail())
	c.Set(t0.Add(90 * time.Second)) // one default half-life past the hold
	if h := p.Snapshot()[0].Health; math.Abs(h-0.5) > 1e-9 {
		t.Fatalf("health %v, want 0.5", h)
	}
	o2 := o
	o2.Breaker.FailureThreshold = 999 // new breakers, state copied
	o2.HealthHalfLife = 10 * time.Second
	np, err := p.Reload(specs("a"), o2)
	if err != nil {
		t.Fatal(err)
	}
	if h := np.Snapshot()[0].Health; math.Abs(h-0.875) > 1e-9 {
		t.Fatalf("after reload health %v, want 0.875 (three 10s half-lives)", h)
	}
	if _, err := New(specs("a"), Options{HealthHalfLife: -time.Second}); err == nil {
		t.Fatal("negative half-life accepted")
	}
}

func BenchmarkRankFailingUpstream(b *testing.B) {
	c := newClock(t0)
	p, err := New(specs("a", "b"), testOpts(c, nil))
	if err != nil {
		b.Fatal(err)
	}
	observeN("a", "m", 100, fail())(p)
	observeN("b", "m", 100, ok(time.Millisecond))(p)
	c.Advance(2 * time.Minute) // every failure past its hold
	ts := targets("m", "a", "b")
	b.ReportAllocs()
	for b.Loop() {
		p.Rank(ts)
	}
}
