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

// fakeViews is an in-memory ViewStore that counts its calls.
type fakeViews struct {
	mu       sync.Mutex
	m        map[string][]byte
	gets     atomic.Int64
	sets     atomic.Int64
	setTTL   time.Duration
	GetDelay time.Duration
}

func newFakeViews() *fakeViews { return &fakeViews{m: map[string][]byte{}} }

func (f *fakeViews) Fetch(key string) ([]byte, error) {
	f.gets.Add(1)
	time.Sleep(f.GetDelay)
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.m[key]
	if !ok {
		return nil, errors.New("miss")
	}
	return b, nil
}

func (f *fakeViews) Put(key string, value []byte, ttl time.Duration) error {
	f.sets.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[key] = append([]byte(nil), value...)
	f.setTTL = ttl
	return nil
}

func (f *fakeViews) has(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.m[key]
	return ok
}

// waitSets waits up to 2s for at least n writes.
func (f *fakeViews) waitSets(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for f.sets.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d view writes, want %d", f.sets.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// replicas returns n policies with the same specs sharing one counter and
// one view store, on one clock.
func replicas(t *testing.T, n int, c *clock, specs []config.Upstream) ([]*Policy, *fakeViews) {
	t.Helper()
	views := newFakeViews()
	counter := newFakeCounter(c.Now)
	ps := make([]*Policy, n)
	for i := range ps {
		o := testOpts(c, nil)
		o.Counter, o.Views = counter, views
		ps[i] = mustNew(t, specs, o)
	}
	return ps, views
}

// TestSharedViews: what one replica learns from an answer steers the
// others once they have read the shared view.
func TestSharedViews(t *testing.T) {
	tests := []struct {
		name       string
		ob         Observation
		wantReason string
		wantUntil  time.Duration // from t0
	}{
		{"a 429's cooldown", classified(Observation{Outcome: verdict.RateLimited, Status: 429,
			RateLimit: verdict.RateLimit{RetryAfter: 30 * time.Second, Known: true}}), ReasonRateLimited, 30 * time.Second},
		{"remaining requests 0 until the stated reset", classified(Observation{Outcome: verdict.OK, Status: 200,
			RateLimit: verdict.RateLimit{LimitRequests: 14400, RemainingRequests: 0, ResetRequests: 2*time.Minute + 59560*time.Millisecond, Known: true}}),
			ReasonRateLimited, 2*time.Minute + 59560*time.Millisecond},
		{"remaining tokens 0", classified(Observation{Outcome: verdict.OK, Status: 200,
			RateLimit: verdict.RateLimit{LimitTokens: 6000, RemainingTokens: 0, ResetTokens: 7660 * time.Millisecond, Known: true}}),
			ReasonRateLimited, 7660 * time.Millisecond},
		{"a 402 disables the group", Observation{Outcome: verdict.QuotaExhausted, Status: 402,
			RateLimit: verdict.RateLimit{RetryAfter: time.Hour, Known: true}}, ReasonQuotaExhausted, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock(t0)
			ps, views := replicas(t, 3, c, []config.Upstream{
				{Name: "k1", QuotaGroup: "org"}, {Name: "k2", QuotaGroup: "org"}, {Name: "other"},
			})
			ps[0].Observe("k1", "m", tt.ob)
			views.waitSets(t, 1)
			for i, p := range ps[1:] {
				if sk := mustAdmit(t, p, targets("m", "k2"), "k2"); sk != nil {
					t.Fatalf("replica %d skipped k2 before reading the view: %+v", i+2, sk)
				}
				if err := p.Sync(time.Second); err != nil {
					t.Fatal(err)
				}
				_, skipped := p.Rank(targets("m", "k1", "k2", "other"))
				if len(skipped) != 2 {
					t.Fatalf("replica %d skipped %+v, want k1 and k2", i+2, skipped)
				}
				for _, sk := range skipped {
					if sk.Reason != tt.wantReason || !sk.Until.Equal(t0.Add(tt.wantUntil)) {
						t.Fatalf("replica %d skipped %+v, want %s until %v", i+2, sk, tt.wantReason, t0.Add(tt.wantUntil))
					}
				}
			}
			views.mu.Lock()
			ttl := views.setTTL
			views.mu.Unlock()
			if ttl <= 0 || ttl > tt.wantUntil+2*time.Second {
				t.Fatalf("view stored for %v, want about %v", ttl, tt.wantUntil)
			}
			// Until the reset, and not after it.
			c.Set(t0.Add(tt.wantUntil + time.Millisecond))
			if sk := mustAdmit(t, ps[2], targets("m", "k2"), "k2"); sk != nil {
				t.Fatalf("still skipped after the reset: %+v", sk)
			}
		})
	}
}

// TestSharedViewsBackground: readers never touch the store on the request
// path; Refresh reads it in the background at most once per interval,
// and merges remaining counts into the quota score.
func TestSharedViewsBackground(t *testing.T) {
	c := newClock(t0)
	ps, views := replicas(t, 2, c, []config.Upstream{{Name: "a"}})
	ob := ok(0)
	ob.RateLimit = verdict.RateLimit{LimitRequests: 100, RemainingRequests: 25, ResetRequests: time.Hour, Known: true}
	ps[0].Observe("a", "m", ob) // remaining counts only: written, not urgently
	views.waitSets(t, 1)
	gets := views.gets.Load()
	for range 100 {
		ps[1].Rank(targets("m", "a"))
		ps[1].Snapshot()
	}
	if views.gets.Load() != gets {
		t.Fatal("Rank or Snapshot read the shared view")
	}
	ps[1].Refresh()
	deadline := time.Now().Add(2 * time.Second)
	for {
		ranked, _ := ps[1].Rank(targets("m", "a"))
		if len(ranked) == 1 && ranked[0].Quota == 0.25 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shared remaining count never seen: %+v", ranked)
		}
		time.Sleep(time.Millisecond)
	}
	n := views.gets.Load()
	ps[1].Refresh() // within the interval: no read
	time.Sleep(10 * time.Millisecond)
	if views.gets.Load() != n {
		t.Fatal("Refresh read again within RefreshInterval")
	}
	// Another remaining-counts-only answer within 10s is not written.
	ps[0].Observe("a", "m", ob)
	time.Sleep(10 * time.Millisecond)
	if s := views.sets.Load(); s != 1 {
		t.Fatalf("%d writes, want 1 (remaining counts are written at most every 10s)", s)
	}
	c.Advance(11 * time.Second)
	ps[0].Observe("a", "m", ob)
	views.waitSets(t, 2)
}

// TestSharedViewsMerge: a write keeps what other replicas wrote, and the
// newer of two views of one model wins.
func TestSharedViewsMerge(t *testing.T) {
	c := newClock(t0)
	ps, views := replicas(t, 2, c, []config.Upstream{{Name: "a"}})
	rl := func(rem int64) Observation {
		return classified(Observation{Outcome: verdict.RateLimited, Status: 429,
			RateLimit: verdict.RateLimit{LimitRequests: 100, RemainingRequests: rem, ResetRequests: time.Minute, RetryAfter: time.Minute, Known: true}})
	}
	ps[0].Observe("a", "m1", rl(0))
	views.waitSets(t, 1)
	c.Advance(time.Second)
	ps[1].Observe("a", "m2", rl(0)) // ps[1] has not read ps[0]'s view: the write merges it
	views.waitSets(t, 2)
	if err := ps[0].Sync(time.Second); err != nil {
		t.Fatal(err)
	}
	_, skipped := ps[0].Rank([]Target{{Name: "a", Model: "m1"}, {Name: "a", Model: "m2"}})
	if len(skipped) != 2 {
		t.Fatalf("replica 1 skipped %+v, want both models", skipped)
	}
	// A stale stored view does not replace a newer local one.
	c.Advance(time.Second)
	fresh := ok(0)
	fresh.RateLimit = verdict.RateLimit{LimitRequests: 100, RemainingRequests: 90, ResetRequests: time.Hour, Known: true}
	ps[0].Observe("a", "m3", fresh)
	ps[1].Observe("a", "m3", classified(Observation{Outcome: verdict.OK, Status: 200,
		RateLimit: verdict.RateLimit{LimitRequests: 100, RemainingRequests: 10, ResetRequests: time.Hour, Known: true}}))
	c.Advance(time.Second)
	ps[0].Observe("a", "m3", fresh) // newest
	if err := ps[0].Sync(time.Second); err != nil {
		t.Fatal(err)
	}
	ranked, _ := ps[0].Rank([]Target{{Name: "a", Model: "m3"}})
	if len(ranked) != 1 || ranked[0].Quota != 0.9 {
		t.Fatalf("m3 = %+v, want quota 0.9 from the newest view", ranked)
	}
}

// TestSharedViewsInProcess: without a ViewStore nothing is shared and
// nothing breaks.
func TestSharedViewsInProcess(t *testing.T) {
	c := newClock(t0)
	p1 := mustNew(t, specs("a"), testOpts(c, nil))
	p2 := mustNew(t, specs("a"), testOpts(c, nil))
	p1.Observe("a", "m", classified(Observation{Outcome: verdict.RateLimited, Status: 429, RateLimit: verdict.RateLimit{RetryAfter: time.Minute, Known: true}}))
	p2.Refresh()
	if err := p2.Sync(time.Second); err != nil {
		t.Fatal(err)
	}
	if sk := mustAdmit(t, p2, targets("m", "a"), "a"); sk != nil {
		t.Fatalf("in-process replicas shared a cooldown: %+v", sk)
	}
}

// TestSyncBounded: Sync waits for the reads at most its timeout, and says
// which counters it could not read.
func TestSyncBounded(t *testing.T) {
	c := newClock(t0)
	o := testOpts(c, nil)
	block := make(chan struct{})
	defer close(block)
	o.Counter = &fakeCounter{LookupFunc: func(string) (uint64, bool, error) { <-block; return 0, false, nil }}
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 5}}}, o)
	start := time.Now()
	if err := p.Sync(50 * time.Millisecond); err == nil {
		t.Fatal("Sync with a hung counter: no error")
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Sync took %v with a 50ms timeout", el)
	}

	o2 := testOpts(c, nil)
	o2.Counter = &fakeCounter{LookupFunc: func(string) (uint64, bool, error) { return 0, false, errDown }}
	p2 := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 5}}, {Name: "b", QuotaGroup: "g", Quota: config.Quota{Limit: 5}}}, o2)
	err := p2.Sync(time.Second)
	if !errors.Is(err, errDown) {
		t.Fatalf("Sync = %v, want it to wrap the counter's error", err)
	}

	// A replica that restarts reads the count before ranking.
	o3 := testOpts(c, nil)
	fc := newFakeCounter(c.Now)
	fc.local.IncrFrom(keyA, 5, 0, t0.Add(time.Hour))
	o3.Counter = fc
	p3 := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 5}}}, o3)
	if err := p3.Sync(time.Second); err != nil {
		t.Fatal(err)
	}
	if sk := mustAdmit(t, p3, targets("m", "a"), "a"); sk == nil || sk.Reason != ReasonQuotaExhausted {
		t.Fatalf("after Sync: %+v, want skipped as exhausted", sk)
	}
}
