package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Fault injection (issue 7): upstreams that hang, reset or answer slowly or
// hugely, a memcached that is not there, reload and shutdown under load, and
// clients that walk away mid-stream.

// TestFaultUpstreamHangPastTimeout: a plain call that outlasts the
// upstream's timeout fails over, and the timeout bounds the wait.
func TestFaultUpstreamHangPastTimeout(t *testing.T) {
	a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
			return
		}
		okJSON("a too late")(w, r)
	})
	b := newFake(t, okJSON("b"))
	ua := strings.Replace(upstreamYAML("a", a.BaseURL(), "ka", 1, ""), "    timeout: 5s\n", "    timeout: 500ms\n", 1)
	if !strings.Contains(ua, "timeout: 500ms") {
		t.Fatal("upstreamYAML changed: timeout not replaced")
	}
	p := startProxy(t, testConfig("", ua, upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	start := time.Now()
	r := post(t, p.URL, simpleBody, noStore...)
	body := readAll(t, r)
	d := time.Since(start)
	if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "b" || r.Header.Get("X-Attempts") != "2" {
		t.Fatalf("status %d X-Upstream %q X-Attempts %q: %s", r.StatusCode, r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), body)
	}
	if d > 2500*time.Millisecond {
		t.Errorf("the answer took %v: the 500ms timeout did not hold", d)
	}
}

// TestFaultResetBeforeHeaders: an upstream that resets the connection
// before sending anything is failed over.
func TestFaultResetBeforeHeaders(t *testing.T) {
	a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		conn.Close()
	})
	b := newFake(t, okJSON("b"))
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	for _, body := range []string{simpleBody, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`} {
		r := post(t, p.URL, body, noStore...)
		got := readAll(t, r)
		if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "b" || r.Header.Get("X-Attempts") != "2" || strings.Contains(string(got), `"error"`) {
			t.Errorf("%s: status %d X-Upstream %q X-Attempts %q: %s", body, r.StatusCode, r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), got)
		}
	}
	if a.Calls() != 2 {
		t.Errorf("a calls %d, want 2", a.Calls())
	}
}

// TestFaultSlowFirstByteWithinFirstTokenTimeout: headers 300ms late, within
// the 2s first-token timeout, are waited for: no failover.
func TestFaultSlowFirstByteWithinFirstTokenTimeout(t *testing.T) {
	stream := sseHandler(streamScript{words: []string{"slow", "start"}})
	a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		stream(w, r)
	})
	b := newFake(t, sseHandler(streamScript{words: []string{"from", "b"}}))
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	r := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, noStore...)
	got := readAll(t, r)
	if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "a" || r.Header.Get("X-Attempts") != "" ||
		!strings.Contains(string(got), `"slow"`) || !strings.HasSuffix(string(got), "data: [DONE]\n\n") {
		t.Fatalf("status %d X-Upstream %q X-Attempts %q: %q", r.StatusCode, r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), got)
	}
	if b.Calls() != 0 {
		t.Errorf("b called %d times", b.Calls())
	}
}

// faultFixed answers every request with the same bytes.
func faultFixed(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}
}

// faultBigCompletion is a valid chat.completion whose content is content.
func faultBigCompletion(content string) []byte {
	c, _ := json.Marshal(content)
	return []byte(`{"id":"chatcmpl-big","object":"chat.completion","created":1732000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":` +
		string(c) + `},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":500000,"total_tokens":500003}}`)
}

func faultRandomText(t *testing.T, n int) string {
	raw := make([]byte, n*3/4)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// TestFaultAnswerOver1MB: a 2 MB answer is relayed byte for byte, and is
// cached when it fits: always in the embedded cache; in memcached (1 MB
// items) when it compresses under the limit, else it is counted as
// oversize and served uncached. The client never sees an error.
func TestFaultAnswerOver1MB(t *testing.T) {
	compressible := faultBigCompletion(strings.Repeat("abcdefgh", 2<<20/8))
	cases := []struct {
		name      string
		memcached bool
		random    bool
		cached    bool
	}{
		{"embedded", false, false, true},
		{"embedded random", false, true, true},
		{"memcached compressible", true, false, true},
		{"memcached incompressible", true, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			answer := compressible
			if tc.random {
				answer = faultBigCompletion(faultRandomText(t, 2<<20))
			}
			if len(answer) < 2<<20 || !json.Valid(answer) {
				t.Fatalf("test answer: %d bytes, valid %v", len(answer), json.Valid(answer))
			}
			top := ""
			if tc.memcached {
				m := startMemcached(t)
				top = memcachedYAML(m.Addr())
			}
			up := newFake(t, faultFixed(answer))
			p := startProxy(t, testConfig(top, upstreamYAML("one", up.BaseURL(), "k", 1, "")))
			req := fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"big %s"}]}`, tc.name)
			oversize0 := scrape(t, p.Admin, "switchyard_cache_oversize_total")
			r := post(t, p.URL, req)
			got := readAll(t, r)
			if r.StatusCode != 200 || r.Header.Get("X-Cache") != "MISS" || !bytes.Equal(got, answer) {
				t.Fatalf("first: status %d X-Cache %q, %d bytes (want %d), identical %v", r.StatusCode, r.Header.Get("X-Cache"), len(got), len(answer), bytes.Equal(got, answer))
			}
			if tc.cached {
				_, hit := waitHit(t, p.URL, req)
				if !bytes.Equal(hit, answer) {
					t.Errorf("cached answer differs: %d bytes, want %d", len(hit), len(answer))
				}
				if up.Calls() != 1 {
					t.Errorf("upstream calls %d, want 1", up.Calls())
				}
				return
			}
			// Not cached: counted as oversize, served again from upstream.
			var oversize float64
			for i := 0; i < 100; i++ {
				if oversize = scrape(t, p.Admin, "switchyard_cache_oversize_total"); oversize > oversize0 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if oversize <= oversize0 {
				t.Errorf("switchyard_cache_oversize_total stayed at %v", oversize)
			}
			r = post(t, p.URL, req)
			got = readAll(t, r)
			if r.StatusCode != 200 || r.Header.Get("X-Cache") != "MISS" || !bytes.Equal(got, answer) {
				t.Errorf("repeat: status %d X-Cache %q, %d bytes, identical %v", r.StatusCode, r.Header.Get("X-Cache"), len(got), bytes.Equal(got, answer))
			}
			if up.Calls() != 2 {
				t.Errorf("upstream calls %d, want 2", up.Calls())
			}
		})
	}
}

// TestFaultMemcachedNotRunningAtStart: a memcached address nobody listens
// on costs nothing visible: requests succeed uncached, quickly.
func TestFaultMemcachedNotRunningAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	up := newFake(t, okJSON("uncached"))
	// The near cache would answer the repeats itself (near_cache_test.go);
	// this test is about each round trip to a memcached that is not there.
	p := startProxy(t, testConfig(memcachedRoundTripYAML(addr), upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	start := time.Now()
	for i := 0; i < 20; i++ {
		r := post(t, p.URL, simpleBody)
		b := readAll(t, r)
		if r.StatusCode != 200 || r.Header.Get("X-Cache") != "MISS" {
			t.Fatalf("request %d: status %d X-Cache %q: %s", i, r.StatusCode, r.Header.Get("X-Cache"), b)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("20 requests took %v with memcached down", d)
	}
	if up.Calls() != 20 {
		t.Errorf("upstream calls %d, want 20", up.Calls())
	}
}

// TestFaultReloadKeepsState: SIGHUP with an added upstream keeps the
// request count, quota use and breaker of the upstreams that stay.
func TestFaultReloadKeepsState(t *testing.T) {
	a := newFake(t, okJSON("a"))
	bad := newFake(t, statusHandler(500, `{"error":{"message":"down","type":"server_error"}}`))
	c := newFake(t, okJSON("c"))
	ua := upstreamYAML("a", a.BaseURL(), "ka", 1, "    models: {m: m}\n    quota: {limit: 100, unit: requests, period: day}\n")
	ubad := upstreamYAML("bad", bad.BaseURL(), "kbad", 1, "    models: {x: x}\n")
	// A breaker delay far beyond the test, so that the open breaker stays open.
	cfg := func(ups ...string) string {
		return strings.Replace(testConfig("", ups...), "delay: 1s", "delay: 60s", 1)
	}
	p := startProxy(t, cfg(ua, ubad))
	for i := 0; i < 4; i++ {
		rmPost(t, p.URL, rmModelBody("m"), noStore...)
	}
	for i := 0; i < 3; i++ {
		readAll(t, post(t, p.URL, rmModelBody("x"), noStore...))
	}
	before, _ := obsFetchStatus(t, p.Admin)
	ba, bb := before.upstream("a"), before.upstream("bad")
	if ba == nil || ba.Requests != 4 || ba.Quota.Used != 4 || bb == nil || bb.Breaker != "open" {
		t.Fatalf("before the reload: a %+v, bad %+v", ba, bb)
	}

	uc := upstreamYAML("c", c.BaseURL(), "kc", 2, "    models: {m: m}\n")
	if err := os.WriteFile(p.cfgPath, []byte(cfg(ua, ubad, uc)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	if !p.WaitLog(`"msg":"reloaded"`) {
		t.Fatalf("no reload logged:\n%s", p.Logs())
	}
	after, body := obsFetchStatus(t, p.Admin)
	aa, ab := after.upstream("a"), after.upstream("bad")
	if aa == nil || aa.Requests != 4 || aa.Quota.Used != 4 {
		t.Errorf("a after the reload: %+v (before: requests %d, quota used %d)", aa, ba.Requests, ba.Quota.Used)
	}
	if ab == nil || ab.Breaker != "open" {
		t.Errorf("bad's breaker after the reload: %+v", ab)
	}
	if after.upstream("c") == nil {
		t.Errorf("c not listed after the reload: %s", body)
	}
	// The kept breaker still keeps bad out; the new upstream serves.
	r := post(t, p.URL, rmModelBody("x"), noStore...)
	readAll(t, r)
	if bad.Calls() != 3 {
		t.Errorf("bad called again after the reload (%d calls, status %d)", bad.Calls(), r.StatusCode)
	}
	if r, _ := rmPost(t, p.URL, rmModelBody("m"), noStore...); r.Header.Get("X-Upstream") != "a" {
		t.Errorf("after the reload m served by %q", r.Header.Get("X-Upstream"))
	}
}

// TestFaultSIGTERMCutStreamGetsShutdownError: a stream longer than
// shutdown_grace does not hold the process: it exits 0 shortly after the
// grace period, and the cut stream ends with an in-band error event saying
// the proxy is shutting down (the client's SDK raises it), not in silence.
func TestFaultSIGTERMCutStreamGetsShutdownError(t *testing.T) {
	// 30 events 300ms apart: the stream outlasts the grace period and the
	// 4s bound below, so a shutdown that waited for it would fail.
	words := make([]string, 30)
	for i := range words {
		words[i] = fmt.Sprintf("w%d", i)
	}
	up := newFake(t, sseHandler(streamScript{words: words, delay: 300 * time.Millisecond}))
	cfg := strings.Replace(testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")), "shutdown_grace: 5s", "shutdown_grace: 1s", 1)
	if !strings.Contains(cfg, "shutdown_grace: 1s") {
		t.Fatal("testConfig changed: shutdown_grace not replaced")
	}
	p := startProxy(t, cfg)
	resp := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := readEvent(br); err != nil {
		t.Fatal(err)
	}
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(br)
		read <- b
	}()
	start := time.Now()
	p.Signal(syscall.SIGTERM)
	code, exited := p.WaitExit(4 * time.Second)
	d := time.Since(start)
	if !exited {
		t.Fatalf("still running 4s after SIGTERM with shutdown_grace 1s:\n%s", p.Logs())
	}
	if code != 0 {
		t.Errorf("exit code %d after %v", code, d)
	}
	select {
	case rest := <-read:
		if strings.Contains(string(rest), "data: [DONE]") {
			t.Fatalf("the stream finished within the grace period (%v): %q", d, rest)
		}
		events := strings.Split(strings.TrimSpace(string(rest)), "\n\n")
		last := events[len(events)-1]
		if !strings.HasPrefix(last, `data: {"error":`) || !strings.Contains(last, "shutting down") || !strings.Contains(last, "server_shutting_down") {
			t.Errorf("the cut stream's last event is not a shutdown error: %q", last)
		}
	case <-time.After(3 * time.Second):
		t.Error("the client's stream stayed open after the process exited")
	}
}

// TestFaultClientDisconnectLeavesNoGoroutines: clients that abandon streams
// after one event leave no goroutines behind in the proxy, and every
// upstream stream is closed (with an idle timeout far beyond the test, so
// that the watchdog cannot be what closes them).
func TestFaultClientDisconnectLeavesNoGoroutines(t *testing.T) {
	words := make([]string, 200)
	for i := range words {
		words[i] = "w"
	}
	var gone atomic.Int64
	up := newFake(t, sseHandler(streamScript{words: words, delay: 20 * time.Millisecond, onWriteErr: func() { gone.Add(1) }}))
	u := strings.Replace(upstreamYAML("one", up.BaseURL(), "k", 1, ""), "    idle_timeout: 2s\n", "    idle_timeout: 60s\n", 1)
	if !strings.Contains(u, "idle_timeout: 60s") {
		t.Fatal("upstreamYAML changed: idle_timeout not replaced")
	}
	p := startProxy(t, testConfig("", u))
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	abandon := func() {
		req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Cache-Control", "no-store")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readEvent(bufio.NewReader(resp.Body)); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	abandon() // warm-up: pools and lazily started goroutines
	time.Sleep(300 * time.Millisecond)
	base := scrape(t, p.Admin, "go_goroutines")
	for i := 0; i < 20; i++ {
		abandon()
	}
	now := waitGoroutines(t, p.Admin, base+10, 15*time.Second)
	t.Logf("goroutines: baseline %v, after 20 abandoned streams %v", base, now)
	if now > base+10 {
		t.Errorf("goroutines did not return to baseline within 15s: %v, baseline %v", now, base)
	}
	for i := 0; i < 250 && gone.Load() < 21; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if g := gone.Load(); g < 21 {
		t.Errorf("only %d of 21 upstream streams were closed after their client went away", g)
	}
}

// TestFaultHeadersDribbledPastFirstTokenTimeout: an upstream that sends its
// response headers a byte at a time, each byte well within the idle
// timeout but all of them past the first-token timeout, is cut off at the
// first-token timeout and failed over, not waited for.
func TestFaultHeadersDribbledPastFirstTokenTimeout(t *testing.T) {
	const head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
	a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		for i := range len(head) { // 100ms a byte: ~10s for the whole header
			if _, err := conn.Write([]byte{head[i]}); err != nil {
				return // the proxy gave up
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	b := newFake(t, sseHandler(streamScript{words: []string{"from", "b"}}))
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	start := time.Now()
	r := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, noStore...)
	got := readAll(t, r)
	d := time.Since(start)
	if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "b" || !strings.Contains(string(got), `"from"`) {
		t.Fatalf("status %d X-Upstream %q: %q", r.StatusCode, r.Header.Get("X-Upstream"), got)
	}
	if d > 5*time.Second { // first_token_timeout is 2s; the header alone takes ~10s
		t.Errorf("failover after %v: the dribbled headers held the attempt past the 2s first-token timeout", d)
	}
}
