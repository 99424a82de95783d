package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Quotas shared by several replicas (issue #14): three sidecar processes on
// one memcached count one quota exactly, keep counting across a memcached
// restart and a replica crash, and steer each other away from an upstream
// one of them saw rate limited.

// qrClient sends many requests at once without queueing on idle
// connections.
var qrClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
	MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000, IdleConnTimeout: 10 * time.Second,
}}

// qrTally is what the clients saw.
type qrTally struct {
	mu     sync.Mutex
	status map[int]int
	errs   []string
}

func (q *qrTally) String() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return fmt.Sprintf("%v", q.status)
}

// qrFire sends n distinct, uncached chat requests at once, spread round
// robin over the replicas' URLs, and tallies the statuses. A 429 must be
// the proxy's quota answer.
func qrFire(t *testing.T, urls []string, n, first int) *qrTally {
	t.Helper()
	q := &qrTally{status: map[int]int{}}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		url := urls[i%len(urls)]
		wg.Go(func() {
			<-start
			body := fmt.Sprintf(`{"model":"test-model","messages":[{"role":"user","content":"question %d"}]}`, first+i)
			req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Cache-Control", "no-store")
			resp, err := qrClient.Do(req)
			if err != nil {
				q.mu.Lock()
				q.errs = append(q.errs, err.Error())
				q.mu.Unlock()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			q.mu.Lock()
			defer q.mu.Unlock()
			q.status[resp.StatusCode]++
			if resp.StatusCode == 429 && !strings.Contains(string(b), "insufficient_quota") {
				q.errs = append(q.errs, "429 that is not the quota's: "+string(b))
			}
			if resp.StatusCode != 200 && resp.StatusCode != 429 {
				q.errs = append(q.errs, fmt.Sprintf("status %d: %s", resp.StatusCode, b))
			}
		})
	}
	close(start)
	wg.Wait()
	for i, e := range q.errs {
		if i == 5 {
			t.Errorf("... and %d more", len(q.errs)-5)
			break
		}
		t.Error(e)
	}
	return q
}

func qrURLs(ps []*proxyProc) []string {
	urls := make([]string, len(ps))
	for i, p := range ps {
		urls[i] = p.URL
	}
	return urls
}

// qrMemcachedYAML is the cache section for mc with a 1s timeout: the
// 100ms default is for production, and hundreds of concurrent requests
// through three -race binaries on a small CI machine can miss it. A
// missed counter operation is counted in process, which is the outage
// behaviour (operations.md), not what these tests are about.
func qrMemcachedYAML(mc *memcachedProc) string {
	return strings.Replace(memcachedYAML(mc.Addr()), "timeout: 100ms", "timeout: 1s", 1)
}

// qrConfig is one upstream with a daily request quota, on memcached.
func qrConfig(mc *memcachedProc, upstreamURL string, limit int) string {
	return testConfig(qrMemcachedYAML(mc),
		upstreamYAML("a", upstreamURL, "ka", 1, fmt.Sprintf("    quota: {limit: %d, unit: requests, period: day}\n", limit)))
}

// TestQuotaReplicasConcurrent: 600 concurrent requests over 3 replicas
// against a limit of 300. Each request reserves its unit with one
// memcached incr before it is sent, so the upstream sees at most the limit
// (the bound is limit + replicas) and the rest get 429.
func TestQuotaReplicasConcurrent(t *testing.T) {
	mc := startMemcached(t)
	up := newFake(t, okJSON("hi"))
	ps := startReplicas(t, 3, qrConfig(mc, up.BaseURL(), 300))
	start := time.Now()
	q := qrFire(t, qrURLs(ps), 600, 0)
	t.Logf("600 concurrent over 3 replicas, limit 300: upstream calls %d, client statuses %s, in %v",
		up.Calls(), q, time.Since(start).Round(time.Millisecond))
	if up.Calls() > 303 {
		t.Errorf("upstream calls %d, want at most 303 (limit + replicas)", up.Calls())
	}
	if q.status[200] != up.Calls() || q.status[200]+q.status[429] != 600 {
		t.Errorf("statuses %s with %d upstream calls: want one 200 per call and 429 for the rest", q, up.Calls())
	}
	if q.status[200] < 290 {
		t.Errorf("only %d requests served of a quota of 300", q.status[200])
	}
	// Each replica's /status converges on the shared count: the refused
	// reservations, given back, are re-read in the background. (An update
	// that timed out under load is counted in process too, and can leave
	// the count a unit above the calls: the safe side.)
	for i, p := range ps {
		deadline := time.Now().Add(3 * time.Second)
		for {
			st, _ := obsFetchStatus(t, p.Admin)
			u := st.upstream("a")
			if u != nil && u.Quota.Limit == 300 && u.Quota.Used >= int64(up.Calls()) && u.Quota.Used <= int64(up.Calls())+3 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("replica %d /status quota: %+v, want used %d (at most 3 more)", i+1, u.Quota, up.Calls())
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i, p := range ps {
		if n := strings.Count(p.Logs(), "quota counter unavailable"); n > 0 {
			t.Logf("replica %d: %d quota counter errors under load", i+1, n)
		}
	}
}

// TestQuotaReplicasMemcachedRestart: memcached restarts mid-period with 60
// of 100 used. The replicas re-create the lost counter from what they knew
// (memcached add), so the total stays within limit + replicas.
func TestQuotaReplicasMemcachedRestart(t *testing.T) {
	mc := startMemcached(t)
	up := newFake(t, okJSON("hi"))
	ps := startReplicas(t, 3, qrConfig(mc, up.BaseURL(), 100))
	urls := qrURLs(ps)
	for i := range 60 {
		rmPost(t, urls[i%3], fmt.Sprintf(`{"model":"test-model","messages":[{"role":"user","content":"warm %d"}]}`, i), noStore...)
	}
	if up.Calls() != 60 {
		t.Fatalf("upstream calls %d before the restart, want 60", up.Calls())
	}
	mc.Stop()
	mc.Start() // empty: the counter is gone
	q := qrFire(t, urls, 200, 1000)
	t.Logf("memcached restarted at 60 of 100, then 200 concurrent: upstream calls %d in total, client statuses %s", up.Calls(), q)
	if up.Calls() > 103 {
		t.Errorf("upstream calls %d in total, want at most 103 (limit + replicas)", up.Calls())
	}
	if up.Calls() < 97 {
		t.Errorf("upstream calls %d in total: the re-seeded count left part of the quota unused", up.Calls())
	}
}

// TestQuotaReplicaKilledAfterExhaustion: the quota runs out, a replica is
// SIGKILLed and restarted. It reads the shared count before it listens, and
// 20 concurrent requests to it reach no upstream.
func TestQuotaReplicaKilledAfterExhaustion(t *testing.T) {
	mc := startMemcached(t)
	up := newFake(t, okJSON("hi"))
	cfg := qrConfig(mc, up.BaseURL(), 30)
	ps := startReplicas(t, 3, cfg)
	q := qrFire(t, qrURLs(ps), 40, 0)
	if up.Calls() != 30 || q.status[429] != 10 {
		t.Fatalf("exhausting the quota: upstream calls %d, statuses %s; want 30 and ten 429s", up.Calls(), q)
	}
	ps[0].Signal(syscall.SIGKILL)
	if _, exited := ps[0].WaitExit(5 * time.Second); !exited {
		t.Fatal("replica 1 did not die")
	}
	restarted := startProxy(t, cfg)
	// It read the shared count before it listened.
	st, _ := obsFetchStatus(t, restarted.Admin)
	if u := st.upstream("a"); u == nil || u.Quota.Used != 30 {
		t.Errorf("restarted replica's first /status quota: %+v, want used 30", u)
	}
	before := up.Calls()
	q = qrFire(t, []string{restarted.URL}, 20, 100)
	t.Logf("replica SIGKILLed after exhaustion, restarted, 20 concurrent: %d reached the upstream, client statuses %s", up.Calls()-before, q)
	if up.Calls() != before || q.status[429] != 20 {
		t.Errorf("after the restart: %d upstream calls, statuses %s; want 0 and twenty 429s", up.Calls()-before, q)
	}
}

// TestQuotaReplicasShareRateLimit: replica 1 gets an answer saying
// x-ratelimit-remaining-requests: 0 with a reset; replicas 2 and 3, which
// saw nothing themselves, skip that upstream until the reset and use it
// again after.
func TestQuotaReplicasShareRateLimit(t *testing.T) {
	mc := startMemcached(t)
	const reset = 4 * time.Second
	var n atomic.Int64
	a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("x-ratelimit-limit-requests", "14400")
			w.Header().Set("x-ratelimit-remaining-requests", "0")
			w.Header().Set("x-ratelimit-reset-requests", reset.String())
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, completionJSON("test-model", "a"))
			return
		}
		okJSON("a")(w, r)
	})
	b := newFake(t, okJSON("b"))
	ps := startReplicas(t, 3, testConfig(qrMemcachedYAML(mc),
		upstreamYAML("a", a.BaseURL(), "ka", 1, ""),
		upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	r, _ := rmPost(t, ps[0].URL, simpleBody, noStore...)
	learned := time.Now()
	if r.Header.Get("X-Upstream") != "a" {
		t.Fatalf("first request served by %q", r.Header.Get("X-Upstream"))
	}
	// Replicas 2 and 3 learn it in the background (a refresh a second).
	for _, p := range ps[1:] {
		deadline := time.Now().Add(3 * time.Second)
		for {
			st, body := obsFetchStatus(t, p.Admin)
			if strings.Contains(string(body), `"cooldown_until"`) && st.upstream("a") != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica never learned of the cooldown: %s", body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("replicas 2 and 3 learned of replica 1's remaining: 0 within %v", time.Since(learned).Round(time.Millisecond))
	checked := 0
	for time.Since(learned) < reset-500*time.Millisecond {
		for _, p := range ps[1:] {
			r, _ := rmPost(t, p.URL, simpleBody, noStore...)
			if got := r.Header.Get("X-Upstream"); got != "b" || r.Header.Get("X-Attempts") != "" {
				t.Fatalf("%v after replica 1's remaining: 0, served by %q (X-Attempts %q)", time.Since(learned), got, r.Header.Get("X-Attempts"))
			}
			checked++
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a.Calls() != 1 {
		t.Fatalf("a called %d times, want once (by replica 1)", a.Calls())
	}
	t.Logf("%d requests to replicas 2 and 3 during the reset: none reached a", checked)
	time.Sleep(time.Until(learned.Add(reset + 500*time.Millisecond)))
	for i, p := range ps {
		r, _ := rmPost(t, p.URL, simpleBody, noStore...)
		if got := r.Header.Get("X-Upstream"); got != "a" {
			t.Errorf("replica %d after the reset: served by %q, want a", i+1, got)
		}
	}
}

// TestQuotaReplicasRefusalFailsOver: a replica whose cached count still
// shows room is refused by the shared counter itself; the request goes to
// the next candidate without an attempt on the spent upstream.
func TestQuotaReplicasRefusalFailsOver(t *testing.T) {
	mc := startMemcached(t)
	a := newFake(t, okJSON("a"))
	b := newFake(t, okJSON("b"))
	ps := startReplicas(t, 2, testConfig(qrMemcachedYAML(mc),
		upstreamYAML("a", a.BaseURL(), "ka", 1, "    quota: {limit: 5, unit: requests, period: day}\n"),
		upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	for i := range 5 {
		rmPost(t, ps[0].URL, fmt.Sprintf(`{"model":"test-model","messages":[{"role":"user","content":"r1 %d"}]}`, i), noStore...)
	}
	if a.Calls() != 5 {
		t.Fatalf("a calls %d, want 5", a.Calls())
	}
	// Replica 2 read the counter at 0 when it started and has not re-read it.
	r, body := rmPost(t, ps[1].URL, simpleBody, noStore...)
	if r.Header.Get("X-Upstream") != "b" || r.Header.Get("X-Attempts") != "" || a.Calls() != 5 {
		t.Fatalf("replica 2: X-Upstream %q X-Attempts %q, a calls %d: %s", r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), a.Calls(), body)
	}
	if !ps[1].WaitLog(`"tried":"b:ok"`) {
		t.Errorf("decision log does not show b as the only attempt:\n%s", ps[1].Logs())
	}
}
