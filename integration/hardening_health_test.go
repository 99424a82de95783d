package integration

import (
	"testing"
	"time"
)

// Health and breaker state over time (issue 15): an upstream that failed
// and then recovered gets traffic again, the breaker gauge and /status show
// half-open once the delay has passed even without traffic, and an upstream
// that flaps under load costs the clients nothing.

// TestBreakerGaugeShowsHalfOpenAfterDelay: failsafe-go half-opens a breaker
// only on the next permit request, so with no traffic its State stays open
// past the delay. The gauge and /status report the state the next call
// would see: half-open once the delay (1s) has passed.
func TestBreakerGaugeShowsHalfOpenAfterDelay(t *testing.T) {
	a := newFake(t, statusHandler(500, `{"error":{"message":"a is down","type":"server_error"}}`))
	b := newFake(t, okJSON("b"))
	p := startProxy(t, testConfig("",
		upstreamYAML("a", a.BaseURL(), "ka", 1, ""),
		upstreamYAML("b", b.BaseURL(), "kb", 2, "")))

	gauge := func() float64 {
		m, _ := obsMetrics(t, p.Admin)
		if !m.has("switchyard_upstream_breaker_state", "upstream", "a") {
			t.Fatal("no switchyard_upstream_breaker_state series for a")
		}
		return m.get("switchyard_upstream_breaker_state", "upstream", "a")
	}
	status := func() string {
		st, _ := obsFetchStatus(t, p.Admin)
		u := st.upstream("a")
		if u == nil {
			t.Fatal("/status lacks a")
		}
		return u.Breaker + " " + u.Breakers["test-model"]
	}
	// waitState polls for up to 3s until both read want.
	waitState := func(what string, wantGauge float64, want string) time.Duration {
		t.Helper()
		start := time.Now()
		var g float64
		var s string
		for deadline := start.Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if g, s = gauge(), status(); g == wantGauge && s == want+" "+want {
				return time.Since(start)
			}
		}
		t.Fatalf("%s: gauge %v, /status %q after 3s; want %v, %q", what, g, s, wantGauge, want)
		return 0
	}

	// failure_threshold 3: three requests open a's breaker.
	for i := 0; i < 3; i++ {
		rmPost(t, p.URL, simpleBody, noStore...)
	}
	openedAt := time.Now()
	if a.Calls() != 3 {
		t.Fatalf("a calls %d, want 3", a.Calls())
	}
	if g, s := gauge(), status(); g != 2 || s != "open open" {
		t.Fatalf("just after opening: gauge %v, /status %q; want 2, open", g, s)
	}

	// No traffic: half-open once the delay has passed.
	waitState("idle past the delay", 1, "half-open")
	if d := time.Since(openedAt); d < 900*time.Millisecond {
		t.Errorf("half-open reported %v after opening, before the 1s delay", d)
	}
	t.Logf("half-open reported %v after the breaker opened (delay 1s)", time.Since(openedAt).Round(time.Millisecond))
	if a.Calls() != 3 {
		t.Fatalf("reading the state sent traffic: a calls %d", a.Calls())
	}

	// The trial call fails: open again, for another delay.
	rmPost(t, p.URL, simpleBody, noStore...)
	if a.Calls() != 4 {
		t.Fatalf("no trial call: a calls %d, want 4", a.Calls())
	}
	if g, s := gauge(), status(); g != 2 || s != "open open" {
		t.Fatalf("after a failed trial: gauge %v, /status %q; want 2, open", g, s)
	}

	// a recovers; after the delay one successful trial closes it.
	a.SetHandler(okJSON("a"))
	waitState("idle past the second delay", 1, "half-open")
	if r, _ := rmPost(t, p.URL, simpleBody, noStore...); r.Header.Get("X-Upstream") != "a" {
		t.Fatalf("trial served by %q, want a", r.Header.Get("X-Upstream"))
	}
	waitState("after a good trial", 0, "closed")
}
