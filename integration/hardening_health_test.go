package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Health and breaker state over time (issue 15): an upstream that failed
// and then recovered gets traffic again, the breaker gauge and /status show
// half-open once the delay has passed even without traffic, and an upstream
// that flaps under load costs the clients nothing.

// TestFailedUpstreamRecoversTraffic: an upstream that failed twice (its
// breaker still closed) next to a healthy peer of the same priority gets
// traffic again once it has recovered. Its failures count in full for the
// breaker delay (1s in testConfig), then lose half their weight every half
// delay, so it is back within the tie band about 2.5s after it failed, and
// from then on shares the load.
func TestFailedUpstreamRecoversTraffic(t *testing.T) {
	a := newFake(t, statusHandler(500, `{"error":{"message":"a is down","type":"server_error"}}`))
	b := newFake(t, okJSON("b"))
	p := startProxy(t, testConfig("",
		upstreamYAML("a", a.BaseURL(), "ka", 1, "    retry: {attempts: 1, backoff: 10ms}\n"),
		upstreamYAML("b", b.BaseURL(), "kb", 1, "")))

	// Both are new, so a (first in the spec) is tried first: it fails
	// twice (one retry), and the request fails over to b.
	r, body := rmPost(t, p.URL, simpleBody, noStore...)
	failedAt := time.Now()
	if r.Header.Get("X-Upstream") != "b" || a.Calls() != 2 {
		t.Fatalf("first request: X-Upstream %q, a calls %d (want b, 2): %s", r.Header.Get("X-Upstream"), a.Calls(), body)
	}
	a.SetHandler(okJSON("a")) // recovered

	// Poll at a steady pace until a serves again, or give up after 6s
	// (unmodified: never).
	var (
		n         int
		backIn    time.Duration
		recovered bool
	)
	for deadline := failedAt.Add(6 * time.Second); time.Now().Before(deadline); {
		r, _ := rmPost(t, p.URL, simpleBody, noStore...)
		n++
		if r.Header.Get("X-Upstream") == "a" {
			backIn, recovered = time.Since(failedAt), true
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if !recovered {
		t.Fatalf("the recovered upstream got no traffic in 6s (%d requests, all served by b; a calls %d)", n, a.Calls())
	}
	t.Logf("recovered upstream served again %v after its failures, at request %d of the polling (one every ~25ms)", backIn.Round(time.Millisecond), n)
	if backIn < 900*time.Millisecond {
		t.Errorf("a was tried again after %v: its failures should count in full for the breaker delay (1s)", backIn)
	}
	if backIn > 4*time.Second {
		t.Errorf("a came back after %v, want about 2.5s (delay 1s + 3 half-lives of 0.5s)", backIn)
	}

	// Back in the tie band it shares the load with b.
	served := map[string]int{}
	for i := 0; i < 20; i++ {
		r, _ := rmPost(t, p.URL, simpleBody, noStore...)
		served[r.Header.Get("X-Upstream")]++
	}
	if served["a"] < 5 || served["b"] < 5 {
		t.Errorf("after recovery: %v of 20, want both at least 5", served)
	}
}

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

// TestFlappingUpstreamUnderLoadNoClientErrors: one of two equal upstreams
// alternates between 500s and good answers every 250ms while 20 clients
// send plain requests for 3s. Every client request gets a 200: failed
// attempts fail over to the peer, and breakers and health move the load
// without ever leaving a request with nowhere to go.
func TestFlappingUpstreamUnderLoadNoClientErrors(t *testing.T) {
	flap := okJSON("flap")
	var (
		flapFails atomic.Int64
		start     atomic.Pointer[time.Time] // when the load starts
	)
	now := time.Now()
	start.Store(&now)
	flaky := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if (time.Since(*start.Load())/(250*time.Millisecond))%2 == 1 { // good first, then bad, ...
			flapFails.Add(1)
			statusHandler(500, `{"error":{"message":"flapping","type":"server_error"}}`)(w, r)
			return
		}
		flap(w, r)
	})
	steady := newFake(t, okJSON("steady"))
	p := startProxy(t, testConfig("",
		upstreamYAML("flaky", flaky.BaseURL(), "kf", 1, ""),
		upstreamYAML("steady", steady.BaseURL(), "ks", 1, "")))

	const clients = 20
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now = time.Now()
	start.Store(&now)
	stop := now.Add(3 * time.Second)
	var (
		mu       sync.Mutex
		total    int
		served   = map[string]int{}
		problems []string
		wg       sync.WaitGroup
	)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000 && time.Now().Before(stop); i++ {
				req, err := http.NewRequestWithContext(ctx, "POST", p.URL+"/v1/chat/completions", strings.NewReader(simpleBody))
				if err != nil {
					panic(err)
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Cache-Control", "no-store")
				resp, err := httpClient.Do(req)
				var problem, up string
				if err != nil {
					problem = err.Error()
				} else {
					b, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					up = resp.Header.Get("X-Upstream")
					if resp.StatusCode != 200 || rerr != nil {
						problem = fmt.Sprintf("status %d (read error %v): %.200s", resp.StatusCode, rerr, b)
					}
				}
				mu.Lock()
				total++
				served[up]++
				if problem != "" && len(problems) < 10 {
					problems = append(problems, problem)
				}
				mu.Unlock()
				if problem != "" {
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests from %d clients: served %v; the flapping upstream got %d calls, %d of them failed",
		total, clients, served, flaky.Calls(), flapFails.Load())
	for _, p := range problems {
		t.Errorf("client error: %s", p)
	}
	if total < clients*5 {
		t.Errorf("only %d requests in 3s", total)
	}
	if flapFails.Load() == 0 {
		t.Errorf("the flapping upstream never failed a call (%d calls): the test did not exercise failover", flaky.Calls())
	}
}
