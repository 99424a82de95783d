package integration

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func statusHandler(status int, body string, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// noStore keeps these tests about routing, not caching.
var noStore = []string{"Cache-Control", "no-store"}

// TestFailoverTable drives each row of the failure table: upstream A
// (priority 1) answers as the row says, B (priority 2) succeeds.
func TestFailoverTable(t *testing.T) {
	cases := []struct {
		name      string
		a         http.HandlerFunc
		failsOver bool
		status    int // the client's status when A's answer is returned as is
	}{
		{"500", statusHandler(500, `{"error":{"message":"internal","type":"server_error"}}`), true, 0},
		{"502", statusHandler(502, `bad gateway`), true, 0},
		{"503", statusHandler(503, `{"error":{"message":"overloaded"}}`), true, 0},
		{"groq 498 capacity", statusHandler(498, `{"error":{"message":"flex capacity exceeded","code":"capacity_exceeded"}}`), true, 0},
		{"429 with retry-after", statusHandler(429, `{"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}}`, "retry-after", "7"), true, 0},
		{"429 without retry-after", statusHandler(429, `{"error":{"message":"Rate limit reached"}}`), true, 0},
		{"401", statusHandler(401, `{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}`), true, 0},
		{"403", statusHandler(403, `{"error":{"message":"forbidden"}}`), true, 0},
		{"402 huggingface credits", statusHandler(402, `{"error": "You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO to get 20x more monthly included credits."}`), true, 0},
		{"404 model", statusHandler(404, `{"error":{"message":"The model does not exist","code":"model_not_found"}}`), true, 0},
		{"413", statusHandler(413, `{"error":{"message":"Request Entity Too Large"}}`), true, 0},
		{"413 tokens per minute", statusHandler(413, `{"error":{"message":"Request too large for model on tokens per minute (TPM): Limit 6000, Requested 9000","type":"tokens","code":"rate_limit_exceeded"}}`), true, 0},
		{"400 context length", statusHandler(400, `{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}`), true, 0},
		{"invalid json 200", statusHandler(200, `{"id":"x","choices":[`), true, 0},
		{"400 other", statusHandler(400, `{"error":{"message":"'messages' must be an array","type":"invalid_request_error","code":null}}`), false, 400},
		{"422", statusHandler(422, `{"error":{"message":"unprocessable","type":"invalid_request_error"}}`), false, 422},
		{"400 content policy", statusHandler(400, `{"error":{"message":"flagged","type":"invalid_request_error","code":"content_policy_violation"}}`), false, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newFake(t, tc.a)
			b := newFake(t, okJSON("from b"))
			p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
			r := post(t, p.URL, simpleBody, noStore...)
			body := readAll(t, r)
			if tc.failsOver {
				if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "b" || r.Header.Get("X-Attempts") != "2" {
					t.Fatalf("no failover: status %d upstream %q attempts %q: %s", r.StatusCode, r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), body)
				}
				return
			}
			if r.StatusCode != tc.status || b.Calls() != 0 {
				t.Fatalf("status %d (want %d), b calls %d: %s", r.StatusCode, tc.status, b.Calls(), body)
			}
			apiErr(t, body)
		})
	}
}

func TestAllRateLimitedAnswers429WithRetryAfter(t *testing.T) {
	a := newFake(t, statusHandler(429, `{"error":{"message":"Rate limit reached"}}`, "retry-after", "7"))
	b := newFake(t, statusHandler(429, `{"error":{"message":"Rate limit reached"}}`, "retry-after", "30"))
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	r := post(t, p.URL, simpleBody, noStore...)
	body := readAll(t, r)
	if r.StatusCode != 429 {
		t.Fatalf("status %d %s", r.StatusCode, body)
	}
	ra, _ := strconv.Atoi(r.Header.Get("Retry-After"))
	if ra < 1 || ra > 8 {
		t.Errorf("Retry-After %q, want about 7", r.Header.Get("Retry-After"))
	}
	// The last upstream's own error, named in X-Upstream, not in the body.
	msg, _, _ := apiErr(t, body)
	if msg != "Rate limit reached" || r.Header.Get("X-Upstream") != "b" || strings.Contains(string(body), `"a"`) {
		t.Errorf("not b's own error: X-Upstream %q: %s", r.Header.Get("X-Upstream"), body)
	}
	// Both cool down: the next request does not touch them.
	r = post(t, p.URL, simpleBody, noStore...)
	readAll(t, r)
	if r.StatusCode != 429 || a.Calls() != 1 || b.Calls() != 1 {
		t.Errorf("during cooldown: status %d, calls a=%d b=%d", r.StatusCode, a.Calls(), b.Calls())
	}
}

func TestAllFailedAnswers502(t *testing.T) {
	a := newFake(t, statusHandler(500, `{"error":{"message":"a broke"}}`))
	b := newFake(t, statusHandler(503, `oops`))
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "sk-secret-a", 1, ""), upstreamYAML("b", b.BaseURL(), "sk-secret-b", 2, "")))
	r := post(t, p.URL, simpleBody, noStore...)
	body := readAll(t, r)
	if r.StatusCode != 502 {
		t.Fatalf("status %d %s", r.StatusCode, body)
	}
	// b's "oops" is no error body: the proxy's own 502, listing each
	// attempt's status but no upstream text (it can quote the request).
	msg, _, _ := apiErr(t, body)
	if !strings.Contains(msg, "a: HTTP 500") || !strings.Contains(msg, "b: HTTP 503") || strings.Contains(msg, "a broke") {
		t.Errorf("message %q", msg)
	}
	if strings.Contains(string(body), "sk-secret") {
		t.Error("a key leaked into the error")
	}
}

func TestBreakerOpensThenRecovers(t *testing.T) {
	a := newFake(t, statusHandler(500, `{"error":{"message":"down"}}`))
	b := newFake(t, okJSON("b"))
	// failure_threshold 3, delay 1s (testConfig).
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
	for i := 0; i < 10; i++ {
		r := post(t, p.URL, simpleBody, noStore...)
		readAll(t, r)
		if r.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, r.StatusCode)
		}
	}
	if a.Calls() != 3 {
		t.Fatalf("failing upstream got %d calls, want 3 (breaker should open)", a.Calls())
	}
	a.SetHandler(okJSON("a"))
	time.Sleep(1200 * time.Millisecond)
	var last *http.Response
	for i := 0; i < 5; i++ {
		last = post(t, p.URL, simpleBody, noStore...)
		readAll(t, last)
	}
	if last.Header.Get("X-Upstream") != "a" {
		t.Errorf("after recovery, X-Upstream %q", last.Header.Get("X-Upstream"))
	}
}

func TestStreamFailsOverBeforeCommit(t *testing.T) {
	cases := map[string]http.HandlerFunc{
		"in-band error event": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"InternalServerError\",\"code\":500}}\n\n")
		},
		"event: error frame": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "event: error\ndata: {\"message\":\"model overloaded\"}\n\n")
		},
		"headers then silence": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		},
		"no headers": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		},
		"cut before first event": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			io.WriteString(w, "data: {\"id\":")
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			a := newFake(t, h)
			b := newFake(t, sseHandler(streamScript{words: []string{"from", "b"}}))
			extra := "    first_token_timeout: 500ms\n"
			cfg := testConfig("", strings.Replace(upstreamYAML("a", a.BaseURL(), "ka", 1, ""), "    first_token_timeout: 2s\n", extra, 1), upstreamYAML("b", b.BaseURL(), "kb", 2, ""))
			p := startProxy(t, cfg)
			start := time.Now()
			r := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, noStore...)
			got := readAll(t, r)
			if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "b" || strings.Contains(string(got), "error") || !strings.HasSuffix(string(got), "data: [DONE]\n\n") {
				t.Fatalf("status %d upstream %q: %q", r.StatusCode, r.Header.Get("X-Upstream"), got)
			}
			if d := time.Since(start); d > 4*time.Second {
				t.Errorf("failover took %v: the first-token timeout did not hold", d)
			}
		})
	}
}

func TestInvalidEventDropped(t *testing.T) {
	up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, chunk("m", "a", ""))
		fmt.Fprint(w, "data: {not json\n\n")
		fmt.Fprint(w, chunk("m", "", "stop"))
		fmt.Fprint(w, "data: [DONE]\n\n")
	})
	p := startProxy(t, testConfig("", upstreamYAML("a", up.BaseURL(), "k", 1, "")))
	got := readAll(t, post(t, p.URL, `{"model":"m","stream":true,"messages":[]}`, noStore...))
	if strings.Contains(string(got), "not json") || !strings.HasSuffix(string(got), "data: [DONE]\n\n") {
		t.Errorf("stream %q", got)
	}
}
