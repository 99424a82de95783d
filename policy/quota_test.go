package policy

import (
	"strings"
	"sync"
	"testing"
	"time"

	"switchyard/config"
	"switchyard/verdict"
)

func TestQuotaDailyRequests(t *testing.T) {
	c := newClock(t0)
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 3}}, {Name: "b"}}, testOpts(c, nil))
	ts := targets("m", "a", "b")
	for range 3 {
		if sk := mustAdmit(t, p, ts, "a"); sk != nil {
			t.Fatalf("skipped early: %+v", sk)
		}
		p.Observe("a", "m", ok(time.Millisecond))
	}
	midnight := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	ranked, skipped := p.Rank(ts)
	s, found := skippedFor(skipped, "a")
	if !found || s.Reason != ReasonQuotaExhausted || !s.Until.Equal(midnight) {
		t.Fatalf("ranked %v skipped %+v, want a skipped until %v", names(ranked), skipped, midnight)
	}
	st := p.Snapshot()[0]
	if st.Quota != (QuotaStatus{Used: 3, Limit: 3, Unit: "requests", ResetsAt: midnight}) || st.Disabled != ReasonQuotaExhausted || st.QuotaScore != 0 {
		t.Fatalf("status = %+v", st)
	}
	c.Set(midnight.Add(time.Second))
	if sk := mustAdmit(t, p, ts, "a"); sk != nil {
		t.Fatalf("after midnight still skipped: %+v", sk)
	}
	if st := p.Snapshot()[0]; st.Quota.Used != 0 || st.Disabled != "" {
		t.Fatalf("after midnight status = %+v", st)
	}
}

// mustAdmit ranks ts and returns the Skipped entry for name, or nil.
func mustAdmit(t *testing.T, p *Policy, ts []Target, name string) *Skipped {
	t.Helper()
	_, skipped := p.Rank(ts)
	if s, found := skippedFor(skipped, name); found {
		return &s
	}
	return nil
}

func TestQuotaMonthly(t *testing.T) {
	c := newClock(time.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC))
	var keys []string
	var expires []time.Time
	var mu sync.Mutex
	local := newLocalCounter(c.Now)
	fc := &fakeCounter{
		IncrFromFunc: func(key string, delta, seed uint64, exp time.Time) (uint64, error) {
			mu.Lock()
			keys, expires = append(keys, key), append(expires, exp)
			mu.Unlock()
			return local.IncrFrom(key, delta, seed, exp)
		},
		LookupFunc: local.Lookup,
	}
	o := testOpts(c, nil)
	o.Counter, o.CounterPrefix = fc, "test:v1"
	p := mustNew(t, []config.Upstream{{Name: "hf", Quota: config.Quota{Limit: 1000, Unit: "chars", Period: "month"}}}, o)
	p.Observe("hf", "m", Observation{Outcome: verdict.OK, Status: 200, Chars: 700})
	c.Set(time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC))
	p.Observe("hf", "m", Observation{Outcome: verdict.OK, Status: 200, Chars: 5})
	mu.Lock()
	defer mu.Unlock()
	wantKeys := []string{"test:v1:hf:chars:202512", "test:v1:hf:chars:202601"}
	wantExp := []time.Time{time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC), time.Date(2026, 2, 1, 1, 0, 0, 0, time.UTC)}
	for i := range wantKeys {
		if keys[i] != wantKeys[i] || !expires[i].Equal(wantExp[i]) {
			t.Errorf("Incr #%d key %q expiry %v, want %q %v", i, keys[i], expires[i], wantKeys[i], wantExp[i])
		}
	}
	if st := p.Snapshot()[0]; st.Quota.Used != 5 || st.Quota.Unit != "chars" {
		t.Fatalf("status = %+v", st.Quota)
	}
}

func TestQuotaCharging(t *testing.T) {
	tests := []struct {
		name string
		unit string
		obs  []Observation
		want int64
	}{
		{"5xx, 429 and connection errors are free", "requests", []Observation{
			{Outcome: verdict.Failure, Status: 500}, {Outcome: verdict.Failure, Status: 503},
			{Outcome: verdict.RateLimited, Status: 429}, {Outcome: verdict.Failure},
		}, 0},
		{"answered 4xx are charged", "requests", []Observation{
			{Outcome: verdict.ClientError, Status: 400}, {Outcome: verdict.NotServed, Status: 404},
			{Outcome: verdict.RateLimited, Status: 413}, {Outcome: verdict.KeyRejected, Status: 401},
		}, 4},
		{"tokens use usage", "tokens", []Observation{
			{Outcome: verdict.OK, Status: 200, Usage: Usage{PromptTokens: 100, CompletionTokens: 50}},
			{Outcome: verdict.OK, Status: 200, Usage: Usage{PromptTokens: 7}},
			{Outcome: verdict.Failure, Status: 502, Usage: Usage{PromptTokens: 1000}},
		}, 157},
		{"chars use Chars", "chars", []Observation{
			{Outcome: verdict.OK, Status: 200, Chars: 1234, Usage: Usage{PromptTokens: 9}},
		}, 1234},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 1 << 40, Unit: tt.unit}}}, testOpts(newClock(t0), nil))
			for _, ob := range tt.obs {
				p.Observe("a", "m", ob)
			}
			if got := p.Snapshot()[0].Quota.Used; got != tt.want {
				t.Fatalf("used = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestQuotaWarnings(t *testing.T) {
	lb := &logBuf{}
	c := newClock(t0)
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 10}}}, testOpts(c, lb))
	counts := func() (int, int, int) {
		return lb.Count("upstream quota at 80%"), lb.Count("upstream quota at 90%"), lb.Count("upstream quota exhausted")
	}
	steps := []struct {
		observes    int
		w80, w90, x int
	}{
		{7, 0, 0, 0},
		{1, 1, 0, 0}, // 8/10
		{1, 1, 1, 0}, // 9/10
		{1, 1, 1, 1}, // 10/10
		{3, 1, 1, 1}, // beyond: no repeats
	}
	for i, s := range steps {
		observeN("a", "m", s.observes, ok(0))(p)
		if a, b, x := counts(); a != s.w80 || b != s.w90 || x != s.x {
			t.Fatalf("step %d: warnings 80%%=%d 90%%=%d exhausted=%d, want %d %d %d\n%s", i, a, b, x, s.w80, s.w90, s.x, lb)
		}
	}
	if !strings.Contains(lb.String(), "level=WARN") {
		t.Fatalf("warnings not at Warn level:\n%s", lb)
	}
	// A new period warns again.
	c.Advance(24 * time.Hour)
	observeN("a", "m", 8, ok(0))(p)
	if a, _, _ := counts(); a != 2 {
		t.Fatalf("80%% warnings after a new day = %d, want 2", a)
	}
}

func TestQuotaGroupShares(t *testing.T) {
	var incrKeys sync.Map
	local := newLocalCounter(time.Now)
	o := testOpts(newClock(t0), nil)
	o.Counter = &fakeCounter{
		IncrFromFunc: func(key string, delta, seed uint64, exp time.Time) (uint64, error) {
			incrKeys.Store(key, true)
			return local.IncrFrom(key, delta, seed, exp)
		},
		LookupFunc: local.Lookup,
	}
	p := mustNew(t, []config.Upstream{
		{Name: "k1", QuotaGroup: "org", Quota: config.Quota{Limit: 2}},
		{Name: "k2", QuotaGroup: "org"},
		{Name: "other", Quota: config.Quota{Limit: 2}},
	}, o)
	p.Observe("k1", "m", ok(0))
	p.Observe("k2", "m", ok(0))
	_, skipped := p.Rank(targets("m", "k1", "k2", "other"))
	if len(skipped) != 2 || skipped[0].Name != "k1" || skipped[1].Name != "k2" {
		t.Fatalf("skipped = %+v, want k1 and k2", skipped)
	}
	n := 0
	incrKeys.Range(func(k, _ any) bool {
		n++
		if k != DefaultCounterPrefix+":org:requests:20250310" {
			t.Errorf("key %v", k)
		}
		return true
	})
	if n != 1 {
		t.Fatalf("%d counter keys, want 1", n)
	}
	// The rate-limit view is shared too.
	ob := ok(0)
	ob.RateLimit = verdict.RateLimit{LimitRequests: 100, RemainingRequests: 10, ResetRequests: time.Hour, Known: true}
	p.Observe("other", "m", ob) // unrelated
	p2 := mustNew(t, []config.Upstream{{Name: "k1", QuotaGroup: "org"}, {Name: "k2", QuotaGroup: "org"}}, testOpts(newClock(t0), nil))
	p2.Observe("k1", "m", ob)
	ranked, _ := p2.Rank(targets("m", "k1", "k2"))
	for _, c := range ranked {
		if c.Quota != 0.1 {
			t.Errorf("%s quota = %v, want 0.1 from the shared view", c.Name, c.Quota)
		}
	}
}

func TestQuotaCounterErrorsFallBack(t *testing.T) {
	lb := &logBuf{}
	o := testOpts(newClock(t0), lb)
	o.Counter = &fakeCounter{
		IncrFromFunc: func(string, uint64, uint64, time.Time) (uint64, error) { return 0, errDown },
		DecrFromFunc: func(string, uint64, uint64, time.Time) (uint64, error) { return 0, errDown },
		LookupFunc:   func(string) (uint64, bool, error) { return 0, false, errDown },
	}
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 2}}}, o)
	ts := targets("m", "a")
	p.Observe("a", "m", ok(0))
	if sk := mustAdmit(t, p, ts, "a"); sk != nil {
		t.Fatalf("skipped after 1 of 2: %+v", sk)
	}
	p.Observe("a", "m", ok(0))
	if sk := mustAdmit(t, p, ts, "a"); sk == nil || sk.Reason != ReasonQuotaExhausted {
		t.Fatalf("want skipped by the in-process count, got %+v", sk)
	}
	if !strings.Contains(lb.String(), "level=DEBUG msg=\"quota counter unavailable") {
		t.Fatalf("no debug log:\n%s", lb)
	}
}

// Another replica's use reaches Rank through the background refresh.
func TestQuotaSharedCounterRefresh(t *testing.T) {
	c := newClock(t0)
	local := newLocalCounter(c.Now)
	key := DefaultCounterPrefix + ":a:requests:20250310"
	local.IncrFrom(key, 5, 0, t0.Add(24*time.Hour))
	o := testOpts(c, nil)
	o.Counter = local
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 5}}}, o)
	ts := targets("m", "a")
	deadline := time.Now().Add(2 * time.Second)
	for mustAdmit(t, p, ts, "a") == nil {
		if time.Now().After(deadline) {
			t.Fatal("shared counter value never seen")
		}
		time.Sleep(time.Millisecond)
	}
	// Refreshes are rate limited: a later change is seen after 15s.
	p2 := mustNew(t, []config.Upstream{{Name: "b", Quota: config.Quota{Limit: 5}}}, o)
	tb := targets("m", "b")
	p2.Observe("b", "m", ok(0)) // syncs at t0
	local.IncrFrom(DefaultCounterPrefix+":b:requests:20250310", 10, 0, t0.Add(24*time.Hour))
	time.Sleep(5 * time.Millisecond)
	if sk := mustAdmit(t, p2, tb, "b"); sk != nil {
		t.Fatalf("refreshed before 15s: %+v", sk)
	}
	c.Advance(16 * time.Second)
	deadline = time.Now().Add(2 * time.Second)
	for mustAdmit(t, p2, tb, "b") == nil {
		if time.Now().After(deadline) {
			t.Fatal("refresh after 15s never happened")
		}
		time.Sleep(time.Millisecond)
	}
}
