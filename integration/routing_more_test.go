package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Routing tests beyond the failover table (issue 4): latency ranking, load
// spread, breakers per model and per key, quotas, cooldowns, same-upstream
// retry, stream commit modes, idle timeout after the commit point, the
// decision log and HuggingFace's 402.

const rmStreamBody = `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`

// rmByModel dispatches on the request's model; models not in the map get a
// 404 the way an OpenAI-compatible server says it does not serve a model.
func rmByModel(hs map[string]http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct{ Model string }
		_ = json.Unmarshal(body, &req)
		h, ok := hs[req.Model]
		if !ok {
			statusHandler(404, `{"error":{"message":"The model does not exist","code":"model_not_found"}}`)(w, r)
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		h(w, r)
	}
}

// rmModelBody is a plain chat request for model.
func rmModelBody(model string) string {
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}]}`, model)
}

// rmPost sends a request that must succeed and returns who served it.
func rmPost(t *testing.T, url, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	r := post(t, url, body, hdr...)
	b := readAll(t, r)
	if r.StatusCode != 200 {
		t.Fatalf("status %d (X-Upstream %q, X-Attempts %q): %s", r.StatusCode, r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), b)
	}
	return r, b
}

// TestLatencyRanking: of two equal-priority upstreams, the clearly faster
// one serves most requests once both have latency samples.
func TestLatencyRanking(t *testing.T) {
	fast := newFake(t, okJSON("fast"))
	slow := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		okJSON("slow")(w, r)
	})
	p := startProxy(t, testConfig("", upstreamYAML("fast", fast.BaseURL(), "kf", 1, ""), upstreamYAML("slow", slow.BaseURL(), "ks", 1, "")))
	// Warm-up: new upstreams are tried first, so both get latency samples.
	for i := 0; i < 10; i++ {
		rmPost(t, p.URL, simpleBody, noStore...)
	}
	if fast.Calls() == 0 || slow.Calls() == 0 {
		t.Fatalf("warm-up did not try both upstreams: fast %d, slow %d", fast.Calls(), slow.Calls())
	}
	served := map[string]int{}
	for i := 0; i < 40; i++ {
		r, _ := rmPost(t, p.URL, simpleBody, noStore...)
		served[r.Header.Get("X-Upstream")]++
	}
	t.Logf("after warm-up: %v", served)
	if served["fast"] < 30 {
		t.Errorf("the fast upstream served %d of 40 (slow %d), want at least 30", served["fast"], served["slow"])
	}
}

// TestLoadSpreadAcrossEqualKeys: three identical upstreams share the load.
func TestLoadSpreadAcrossEqualKeys(t *testing.T) {
	var fakes []*fake
	var ups []string
	for i := 0; i < 3; i++ {
		f := newFake(t, okJSON("same"))
		fakes = append(fakes, f)
		ups = append(ups, upstreamYAML(fmt.Sprintf("key%d", i), f.BaseURL(), fmt.Sprintf("k%d", i), 1, ""))
	}
	p := startProxy(t, testConfig("", ups...))
	for i := 0; i < 90; i++ {
		rmPost(t, p.URL, simpleBody, noStore...)
	}
	for i, f := range fakes {
		if c := f.Calls(); c < 20 || c > 40 {
			t.Errorf("key%d got %d of 90 requests, want 20..40 (calls: %d %d %d)", i, c, fakes[0].Calls(), fakes[1].Calls(), fakes[2].Calls())
		}
	}
}

// TestOneOfThreeFailing: clients see no errors, and the failing upstream
// stops getting traffic after at most failure_threshold (3) failures. With
// the default weights its health score drops at its first failure, which
// ranks it last at once; with the health weight at 0 only its breaker keeps
// it out, after exactly 3 failures.
func TestOneOfThreeFailing(t *testing.T) {
	t.Run("default weights", func(t *testing.T) { rmOneOfThree(t, "", 1, 3) })
	t.Run("breaker alone", func(t *testing.T) {
		rmOneOfThree(t, "routing: {weights: {health: 0, quota: 0.5, latency: 0.5}}\n", 3, 3)
	})
}

func rmOneOfThree(t *testing.T, top string, minCalls, maxCalls int) {
	bad := newFake(t, statusHandler(500, `{"error":{"message":"down","type":"server_error"}}`))
	g1 := newFake(t, okJSON("g1"))
	g2 := newFake(t, okJSON("g2"))
	// A breaker delay far beyond the test, so that no half-open trial call
	// counts, however slow the machine.
	cfg := strings.Replace(testConfig(top, upstreamYAML("bad", bad.BaseURL(), "kb", 1, ""),
		upstreamYAML("g1", g1.BaseURL(), "k1", 1, ""), upstreamYAML("g2", g2.BaseURL(), "k2", 1, "")), "delay: 1s", "delay: 60s", 1)
	if !strings.Contains(cfg, "delay: 60s") {
		t.Fatal("testConfig changed: breaker delay not replaced")
	}
	p := startProxy(t, cfg)
	var afterTen int
	for i := 0; i < 30; i++ {
		r := post(t, p.URL, simpleBody, noStore...)
		b := readAll(t, r)
		if r.StatusCode != 200 || r.Header.Get("X-Upstream") == "bad" {
			t.Fatalf("request %d: status %d from %q: %s", i, r.StatusCode, r.Header.Get("X-Upstream"), b)
		}
		if i == 9 {
			afterTen = bad.Calls()
		}
	}
	t.Logf("failing upstream calls: %d after 10 requests, %d after 30 (g1 %d, g2 %d)", afterTen, bad.Calls(), g1.Calls(), g2.Calls())
	if c := bad.Calls(); c < minCalls || c > maxCalls {
		t.Errorf("the failing upstream got %d calls, want %d..%d (failure_threshold 3)", c, minCalls, maxCalls)
	}
	if bad.Calls() != afterTen {
		t.Errorf("the failing upstream still got traffic: %d calls after 10 requests, %d after 30", afterTen, bad.Calls())
	}
	if g1.Calls() < 5 || g2.Calls() < 5 {
		t.Errorf("load not spread over the healthy upstreams: g1 %d, g2 %d", g1.Calls(), g2.Calls())
	}
}

// TestBreakerPerModel: one model failing on an upstream opens only that
// deployment's breaker; the upstream's other models are still served there.
func TestBreakerPerModel(t *testing.T) {
	a := newFake(t, rmByModel(map[string]http.HandlerFunc{
		"m1": statusHandler(500, `{"error":{"message":"m1 broken","type":"server_error"}}`),
		"m2": okJSON("a m2"),
	}))
	b := newFake(t, okJSON("b m1"))
	p := startProxy(t, testConfig("",
		upstreamYAML("a", a.BaseURL(), "ka", 1, "    models: {m1: m1, m2: m2}\n"),
		upstreamYAML("b", b.BaseURL(), "kb", 2, "    models: {m1: m1}\n")))
	for i := 0; i < 3; i++ {
		r, _ := rmPost(t, p.URL, rmModelBody("m1"), noStore...)
		if r.Header.Get("X-Upstream") != "b" {
			t.Fatalf("m1 request %d served by %q", i, r.Header.Get("X-Upstream"))
		}
	}
	// a's m1 breaker is open now: m1 goes straight to b.
	r, _ := rmPost(t, p.URL, rmModelBody("m1"), noStore...)
	if a.Calls() != 3 || r.Header.Get("X-Upstream") != "b" || r.Header.Get("X-Attempts") != "" {
		t.Fatalf("after 3 failures: a calls %d (want 3), X-Upstream %q, X-Attempts %q", a.Calls(), r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"))
	}
	for i := 0; i < 3; i++ {
		r, b := rmPost(t, p.URL, rmModelBody("m2"), noStore...)
		if r.Header.Get("X-Upstream") != "a" || !strings.Contains(string(b), "a m2") {
			t.Fatalf("m2 request %d with a's m1 breaker open: X-Upstream %q: %s", i, r.Header.Get("X-Upstream"), b)
		}
	}
	if a.Calls() != 6 {
		t.Errorf("a calls %d, want 6", a.Calls())
	}
	st, _ := obsFetchStatus(t, p.Admin)
	if u := st.upstream("a"); u == nil || u.Breakers["m1"] != "open" || u.Breakers["m2"] == "open" {
		t.Errorf("/status breakers of a: %+v", u)
	}
}

// TestKeyRejectedBlocksEveryModel: a 401 on one model counts for every model
// of that upstream.
func TestKeyRejectedBlocksEveryModel(t *testing.T) {
	a := newFake(t, rmByModel(map[string]http.HandlerFunc{
		"m1": statusHandler(401, `{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}`),
		"m2": okJSON("a m2"),
	}))
	b := newFake(t, okJSON("b"))
	p := startProxy(t, testConfig("",
		upstreamYAML("a", a.BaseURL(), "ka", 1, "    models: {m1: m1, m2: m2}\n"),
		upstreamYAML("b", b.BaseURL(), "kb", 2, "    models: {m1: m1, m2: m2}\n")))
	// Before any rejection m2 is a's.
	if r, _ := rmPost(t, p.URL, rmModelBody("m2"), noStore...); r.Header.Get("X-Upstream") != "a" {
		t.Fatalf("m2 before: X-Upstream %q", r.Header.Get("X-Upstream"))
	}
	for i := 0; i < 3; i++ {
		if r, _ := rmPost(t, p.URL, rmModelBody("m1"), noStore...); r.Header.Get("X-Upstream") != "b" {
			t.Fatalf("m1 request %d: X-Upstream %q", i, r.Header.Get("X-Upstream"))
		}
	}
	calls := a.Calls() // 1 (m2) + 3 (m1)
	for i := 0; i < 3; i++ {
		r, _ := rmPost(t, p.URL, rmModelBody("m2"), noStore...)
		if r.Header.Get("X-Upstream") != "b" {
			t.Fatalf("m2 request %d after 3 key rejections on m1: X-Upstream %q", i, r.Header.Get("X-Upstream"))
		}
	}
	if a.Calls() != calls {
		t.Errorf("a got %d more calls after its key breaker opened", a.Calls()-calls)
	}
}

// TestQuotaRequestsPerDay: a's request quota of 2 sends the rest to b.
func TestQuotaRequestsPerDay(t *testing.T) {
	a := newFake(t, okJSON("a"))
	b := newFake(t, okJSON("b"))
	p := startProxy(t, testConfig("",
		upstreamYAML("a", a.BaseURL(), "ka", 1, "    quota: {limit: 2, unit: requests, period: day}\n"),
		upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	var got []string
	for i := 0; i < 5; i++ {
		r, _ := rmPost(t, p.URL, simpleBody, noStore...)
		got = append(got, r.Header.Get("X-Upstream"))
	}
	if strings.Join(got, ",") != "a,a,b,b,b" {
		t.Errorf("served by %v, want a,a,b,b,b", got)
	}
	if a.Calls() != 2 {
		t.Errorf("a calls %d, want 2", a.Calls())
	}
	st, _ := obsFetchStatus(t, p.Admin)
	u := st.upstream("a")
	if u == nil || u.Quota.Used != 2 || u.Quota.Limit != 2 || u.Quota.Unit != "requests" {
		t.Errorf("/status quota of a: %+v", u)
	}
}

// TestQuotaGroupSharesCount: two upstreams in one quota group share one
// count; once it is spent both are skipped.
func TestQuotaGroupSharesCount(t *testing.T) {
	a1 := newFake(t, okJSON("a1"))
	a2 := newFake(t, okJSON("a2"))
	c := newFake(t, okJSON("c"))
	q := "    quota: {limit: 3, unit: requests, period: day}\n    quota_group: org1\n"
	p := startProxy(t, testConfig("",
		upstreamYAML("a1", a1.BaseURL(), "k1", 1, q),
		upstreamYAML("a2", a2.BaseURL(), "k2", 1, q),
		upstreamYAML("c", c.BaseURL(), "kc", 2, "")))
	var got []string
	for i := 0; i < 7; i++ {
		r, _ := rmPost(t, p.URL, simpleBody, noStore...)
		got = append(got, r.Header.Get("X-Upstream"))
	}
	if n := a1.Calls() + a2.Calls(); n != 3 {
		t.Errorf("the group served %d requests, want 3 (a1 %d, a2 %d); served by %v", n, a1.Calls(), a2.Calls(), got)
	}
	for i := 3; i < len(got); i++ {
		if got[i] != "c" {
			t.Errorf("request %d served by %q after the group's quota was spent (%v)", i, got[i], got)
		}
	}
	if c.Calls() != 4 {
		t.Errorf("c calls %d, want 4", c.Calls())
	}
}

// TestRateLimitCooldown: a 429 with retry-after: 1 puts the upstream in
// cooldown for about a second, without calls, then it serves again.
func TestRateLimitCooldown(t *testing.T) {
	var n atomic.Int64
	a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			statusHandler(429, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`, "retry-after", "1")(w, r)
			return
		}
		okJSON("a")(w, r)
	})
	b := newFake(t, okJSON("b"))
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	start := time.Now()
	r, _ := rmPost(t, p.URL, simpleBody, noStore...)
	end := time.Now() // the cooldown started between start and end
	if r.Header.Get("X-Upstream") != "b" || r.Header.Get("X-Attempts") != "2" {
		t.Fatalf("first request: X-Upstream %q X-Attempts %q", r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"))
	}
	checked := 0
	for i := 0; i < 50 && time.Since(start) < 500*time.Millisecond; i++ {
		r, _ := rmPost(t, p.URL, simpleBody, noStore...)
		if time.Since(start) >= time.Second {
			break // a slow machine: this one may have been after the cooldown
		}
		checked++
		if r.Header.Get("X-Upstream") != "b" || r.Header.Get("X-Attempts") != "" || a.Calls() != 1 {
			t.Fatalf("during the cooldown (%v after the 429): X-Upstream %q X-Attempts %q, a calls %d", time.Since(start), r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), a.Calls())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if checked == 0 {
		t.Fatal("no request completed within the cooldown")
	}
	time.Sleep(time.Until(end.Add(1300 * time.Millisecond)))
	r, _ = rmPost(t, p.URL, simpleBody, noStore...)
	if r.Header.Get("X-Upstream") != "a" {
		t.Errorf("after the cooldown: X-Upstream %q (a calls %d)", r.Header.Get("X-Upstream"), a.Calls())
	}
}

// TestSameUpstreamRetry: a transient 503 is retried on the same upstream
// before failing over.
func TestSameUpstreamRetry(t *testing.T) {
	var n atomic.Int64
	a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			statusHandler(503, `{"error":{"message":"overloaded","type":"server_error"}}`)(w, r)
			return
		}
		okJSON("a after retry")(w, r)
	})
	b := newFake(t, okJSON("b"))
	p := startProxy(t, testConfig("",
		upstreamYAML("a", a.BaseURL(), "ka", 1, "    retry: {attempts: 2, backoff: 10ms}\n"),
		upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	r, body := rmPost(t, p.URL, simpleBody, noStore...)
	if r.Header.Get("X-Upstream") != "a" || !strings.Contains(string(body), "a after retry") {
		t.Errorf("X-Upstream %q: %s", r.Header.Get("X-Upstream"), body)
	}
	if a.Calls() != 2 || b.Calls() != 0 {
		t.Errorf("calls a=%d (want 2) b=%d (want 0)", a.Calls(), b.Calls())
	}
}

// TestStreamCommitComplete: in commit mode "complete" a stream cut after
// three events fails over invisibly, by request header or by config.
func TestStreamCommitComplete(t *testing.T) {
	for _, mode := range []string{"header", "config"} {
		t.Run(mode, func(t *testing.T) {
			a := newFake(t, sseHandler(streamScript{words: []string{"partial", "answer", "from", "a"}, cutAfter: 3}))
			b := newFake(t, sseHandler(streamScript{words: []string{"whole", "answer"}}))
			top, hdr := "", []string{"X-Stream-Commit", "complete"}
			if mode == "config" {
				top, hdr = "streaming: {commit: complete}\n", nil
			}
			p := startProxy(t, testConfig(top, upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
			r := post(t, p.URL, rmStreamBody, append(append([]string{}, noStore...), hdr...)...)
			defer r.Body.Close()
			got, err := io.ReadAll(r.Body)
			if err != nil {
				t.Fatalf("the stream broke: %v: %q", err, got)
			}
			s := string(got)
			if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "b" || r.Header.Get("X-Attempts") != "2" {
				t.Fatalf("status %d X-Upstream %q X-Attempts %q: %q", r.StatusCode, r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), s)
			}
			if strings.Contains(s, `"error"`) || strings.Contains(s, "partial") || !strings.Contains(s, `"whole"`) || !strings.HasSuffix(s, "data: [DONE]\n\n") {
				t.Errorf("client stream %q", s)
			}
			if a.Calls() != 1 || b.Calls() != 1 {
				t.Errorf("calls a=%d b=%d", a.Calls(), b.Calls())
			}
		})
	}
}

// TestIdleTimeoutAfterCommit: an upstream that goes silent after two events
// ends the client's stream with an in-band error within about idle_timeout,
// without [DONE] and without failing over.
func TestIdleTimeoutAfterCommit(t *testing.T) {
	a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, chunk("m", "one", ""))
		io.WriteString(w, chunk("m", "two", ""))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	b := newFake(t, sseHandler(streamScript{words: []string{"from", "b"}}))
	// A first-token timeout beyond the 3s bound below, so that only the
	// idle timeout can end the stream in time.
	ua := strings.NewReplacer("    idle_timeout: 2s\n", "    idle_timeout: 500ms\n", "    first_token_timeout: 2s\n", "    first_token_timeout: 10s\n").
		Replace(upstreamYAML("a", a.BaseURL(), "ka", 1, ""))
	if !strings.Contains(ua, "idle_timeout: 500ms") || !strings.Contains(ua, "first_token_timeout: 10s") {
		t.Fatal("upstreamYAML changed: timeouts not replaced")
	}
	p := startProxy(t, testConfig("", ua, upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	start := time.Now()
	r := post(t, p.URL, rmStreamBody, noStore...)
	defer r.Body.Close()
	if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "a" {
		t.Fatalf("status %d X-Upstream %q", r.StatusCode, r.Header.Get("X-Upstream"))
	}
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(r.Body)
		done <- result{b, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(6 * time.Second):
		r.Body.Close()
		t.Fatal("the stream was still open 6s after a went silent: idle_timeout did not hold")
	}
	elapsed := time.Since(start)
	s := string(res.body)
	if !strings.Contains(s, `"one"`) || !strings.Contains(s, `"two"`) {
		t.Errorf("the two events did not reach the client: %q", s)
	}
	if !strings.Contains(s, `data: {"error":`) {
		t.Errorf("no in-band error event: %q", s)
	}
	if strings.Contains(s, "data: [DONE]") {
		t.Errorf("a stalled stream ended with [DONE]: %q", s)
	}
	if res.err == nil {
		t.Error("the client saw a clean end of a stalled stream")
	}
	if elapsed > 3*time.Second {
		t.Errorf("the stream ended %v after the request; idle_timeout is 500ms", elapsed)
	}
	if b.Calls() != 0 {
		t.Errorf("failed over after the commit point: b calls %d", b.Calls())
	}
}

// TestDecisionLog: a request that fails over logs, on its line, the ranked
// candidates and every attempt.
func TestDecisionLog(t *testing.T) {
	a := newFake(t, statusHandler(500, `{"error":{"message":"a broke","type":"server_error"}}`))
	b := newFake(t, okJSON("b"))
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	const rid = "decision-log-1"
	r, _ := rmPost(t, p.URL, simpleBody, append([]string{"X-Request-Id", rid}, noStore...)...)
	if r.Header.Get("X-Upstream") != "b" {
		t.Fatalf("X-Upstream %q", r.Header.Get("X-Upstream"))
	}
	var line map[string]any
	var raw string
	for i := 0; i < 150 && line == nil; i++ {
		sc := bufio.NewScanner(strings.NewReader(p.Logs()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil || m["request_id"] != rid || m["ranked"] == nil {
				continue
			}
			line, raw = m, sc.Text()
		}
		if line == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if line == nil {
		t.Fatalf("no log line with request_id %s and the ranking:\n%s", rid, p.Logs())
	}
	ranked, _ := line["ranked"].(string)
	tried, _ := line["tried"].(string)
	if !strings.Contains(ranked, "a=") || !strings.Contains(ranked, "b=") || !strings.HasPrefix(tried, "a:") || !strings.Contains(tried, ",b:") {
		t.Errorf("decision log: ranked %q tried %q: %s", ranked, tried, raw)
	}
}

// TestHuggingFace402OnlyUpstream: HuggingFace's out-of-credits 402 (a string
// error) from the only upstream becomes OpenAI's 429 insufficient_quota,
// with a truthful Retry-After (the month's end, unless the month ends
// within two minutes) and x-should-retry: false, so SDKs do not retry.
func TestHuggingFace402OnlyUpstream(t *testing.T) {
	hf := newFake(t, statusHandler(402, `{"error": "You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO to get 20x more monthly included credits."}`))
	u := strings.Replace(upstreamYAML("hf", hf.BaseURL(), "hf_key", 1, ""), "provider: openai", "provider: huggingface", 1)
	p := startProxy(t, testConfig("", u))
	for i := 0; i < 2; i++ { // the 402 itself, then the upstream disabled
		r := post(t, p.URL, simpleBody, noStore...)
		body := readAll(t, r)
		if r.StatusCode != 429 {
			t.Fatalf("request %d: status %d, want 429: %s", i, r.StatusCode, body)
		}
		if _, typ, code := apiErr(t, body); typ != "insufficient_quota" || code != "insufficient_quota" {
			t.Errorf("request %d: type %q code %q, want insufficient_quota", i, typ, code)
		}
		if r.Header.Get("x-should-retry") != "false" {
			t.Errorf("request %d: x-should-retry %q, want false", i, r.Header.Get("x-should-retry"))
		}
		now := time.Now().UTC()
		monthEnd := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
		if want := int(monthEnd.Sub(now) / time.Second); err != nil || ra < want-5 || ra > want+5 {
			t.Errorf("request %d: Retry-After %q, want about %d (the month's end)", i, r.Header.Get("Retry-After"), want)
		}
	}
	if hf.Calls() != 1 {
		t.Errorf("hf calls %d, want 1 (out of credits: disabled)", hf.Calls())
	}
}

// TestBreakerOpensOnStreamsCutAfterCommit: an upstream whose streams always
// die after their first event opens its breaker after failure_threshold (3)
// such streams; the next request goes to the fallback.
func TestBreakerOpensOnStreamsCutAfterCommit(t *testing.T) {
	a := newFake(t, sseHandler(streamScript{words: []string{"x", "y", "z"}, cutAfter: 2}))
	b := newFake(t, sseHandler(streamScript{words: []string{"from", "b"}}))
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	for i := 0; i < 3; i++ {
		r := post(t, p.URL, body, noStore...)
		got, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.Header.Get("X-Upstream") != "a" || !strings.Contains(string(got), `data: {"error":`) {
			t.Fatalf("stream %d: upstream %q body %q", i, r.Header.Get("X-Upstream"), got)
		}
	}
	r := post(t, p.URL, body, noStore...)
	got := readAll(t, r)
	if r.Header.Get("X-Upstream") != "b" || !strings.HasSuffix(string(got), "data: [DONE]\n\n") {
		t.Fatalf("after 3 cut streams: upstream %q body %q", r.Header.Get("X-Upstream"), got)
	}
	if a.Calls() != 3 {
		t.Errorf("a got %d calls, want 3", a.Calls())
	}
}
