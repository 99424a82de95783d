package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Provider dialects and stream/cache edge cases (issue #12): one test per
// row of the table, each named after the failure mode. The fakes
// answer with the providers' own shapes (see /work/shared/wire.md): Groq's
// 413 and 429, HuggingFace's string errors (402, 503 loading), TGI's 422.

// Provider bodies, verbatim.
const (
	dlGroq413 = "{\"error\":{\"message\":\"Request too large for model `llama-3.3-70b-versatile` in organization `org_x` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 7000, please reduce your message size and try again. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}"
	dlGroq429 = "{\"error\":{\"message\":\"Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_x` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 5990, Requested 700. Please try again in 6.9s.\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}"
	dlHF402   = `{"error":"You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO to get 20x more monthly included credits."}`
	dlHF503   = `{"error":"Model meta-llama/Llama-3.1-8B-Instruct is currently loading","estimated_time":20.0}`
	// What this upstream cannot serve (another may).
	dlHF400Context      = `{"error":{"message":"This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (8000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":null}}`
	dlTGI422            = "{\"error\":\"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 500 `max_new_tokens`\",\"error_type\":\"validation\"}"
	dlHF400NotSupported = `{"error":{"message":"The requested model 'foo/bar' is not supported by any provider you have enabled.","type":"invalid_request_error","param":"model","code":"model_not_supported"}}`
	dlOpenAI503         = `{"error":{"message":"The server is overloaded or not ready yet.","type":"server_error","param":null,"code":null}}`
	dlServer500         = `{"error":{"message":"boom","type":"server_error","code":null}}`
	// Groq's answers to fields it does not support.
	dlGroqN400        = `{"error":{"message":"'n' : number must be at most 1","type":"invalid_request_error"}}`
	dlGroqLogprobs400 = "{\"error\":{\"message\":\"`logprobs` is not supported with this model\",\"type\":\"invalid_request_error\"}}"
)

// dlUpstream is upstreamYAML with the provider given (upstreamYAML always
// writes openai) and the key derived from the name.
func dlUpstream(t *testing.T, name, provider, baseURL string, priority int, extra string) string {
	t.Helper()
	y := upstreamYAML(name, baseURL, "key-"+name, priority, extra)
	out := strings.Replace(y, "    provider: openai\n", "    provider: "+provider+"\n", 1)
	if provider != "openai" && out == y {
		t.Fatal("upstreamYAML changed: provider not replaced")
	}
	return out
}

// dlTimeouts replaces the first-token and idle timeouts of an upstream
// entry.
func dlTimeouts(t *testing.T, y, firstToken, idle string) string {
	t.Helper()
	out := strings.NewReplacer("    first_token_timeout: 2s\n", "    first_token_timeout: "+firstToken+"\n",
		"    idle_timeout: 2s\n", "    idle_timeout: "+idle+"\n").Replace(y)
	if !strings.Contains(out, "first_token_timeout: "+firstToken+"\n") || !strings.Contains(out, "idle_timeout: "+idle+"\n") {
		t.Fatal("upstreamYAML changed: timeouts not replaced")
	}
	return out
}

// dlGzip compresses b.
func dlGzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// groqStatus answers like Groq: its rate-limit headers on every answer.
func groqStatus(status int, body string, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		groqHeaders(w)
		statusHandler(status, body, hdr...)(w, r)
	}
}

// dlChunk is one SSE event of a chat.completion.chunk with the given
// choices (JSON array) and extra top-level members (",..." or "").
// dlWantStatus posts simpleBody (no-store) and fails the test unless the
// answer has the status want (what says why, for the message).
func dlWantStatus(t *testing.T, url string, want int, what string) (*http.Response, []byte) {
	t.Helper()
	r := post(t, url, simpleBody, noStore...)
	body := readAll(t, r)
	if r.StatusCode != want {
		t.Fatalf("status %d, want %s: %s", r.StatusCode, what, body)
	}
	return r, body
}

func dlChunk(choices, extra string) string {
	return `data: {"id":"chatcmpl-d","object":"chat.completion.chunk","created":1732000000,"model":"m","system_fingerprint":"fp_test","choices":` + choices + extra + "}\n\n"
}

// dlData returns the data of each SSE event of body, in order.
func dlData(body []byte) []string {
	var out []string
	for _, ev := range strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n\n") {
		var data []string
		for _, line := range strings.Split(ev, "\n") {
			if v, ok := strings.CutPrefix(line, "data:"); ok {
				data = append(data, strings.TrimPrefix(v, " "))
			}
		}
		if len(data) > 0 {
			out = append(out, strings.Join(data, "\n"))
		}
	}
	return out
}

// dlChoice is one choice reassembled from stream deltas.
type dlChoice struct {
	content     string
	fcName      string
	fcArgs      string
	annotations []json.RawMessage
	finish      *string
}

// dlAssemble merges the deltas of a client stream per choice index. done
// reports a data: [DONE]; errEvent an in-band error frame.
func dlAssemble(t *testing.T, body []byte) (choices map[int]*dlChoice, done, errEvent bool) {
	t.Helper()
	choices = map[int]*dlChoice{}
	for _, d := range dlData(body) {
		if d == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Error   json.RawMessage `json:"error"`
			Choices []struct {
				Index int `json:"index"`
				Delta struct {
					Content      *string `json:"content"`
					FunctionCall *struct {
						Name      string `json:"name"`
						Arguments string `json:"arguments"`
					} `json:"function_call"`
					Annotations []json.RawMessage `json:"annotations"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			t.Errorf("an event is not JSON: %q", d)
			continue
		}
		if len(c.Error) > 0 && string(c.Error) != "null" {
			errEvent = true
			continue
		}
		for _, ch := range c.Choices {
			acc := choices[ch.Index]
			if acc == nil {
				acc = &dlChoice{}
				choices[ch.Index] = acc
			}
			if ch.Delta.Content != nil {
				acc.content += *ch.Delta.Content
			}
			if fc := ch.Delta.FunctionCall; fc != nil {
				if acc.fcName == "" {
					acc.fcName = fc.Name
				}
				acc.fcArgs += fc.Arguments
			}
			acc.annotations = append(acc.annotations, ch.Delta.Annotations...)
			if ch.FinishReason != nil {
				acc.finish = ch.FinishReason
			}
		}
	}
	return choices, done, errEvent
}

// dlReadStream reads a whole client stream; an aborted body (after an
// in-band error) is not a test failure.
func dlReadStream(resp *http.Response) []byte {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// dlWantFailover sends body and requires a 200 from want.
func dlWantFailover(t *testing.T, url, body, want string, hdr ...string) *http.Response {
	t.Helper()
	r := post(t, url, body, hdr...)
	b := readAll(t, r)
	if r.StatusCode != 200 || r.Header.Get("X-Upstream") != want {
		t.Fatalf("no failover to %s: status %d, X-Upstream %q, X-Attempts %q: %s", want, r.StatusCode, r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), b)
	}
	return r
}

// dlRetryAfter parses Retry-After as seconds (-1 when absent or not a
// number).
func dlRetryAfter(r *http.Response) int {
	n, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil {
		return -1
	}
	return n
}

// TestDialectGroq413RequestTooLargeNoCooldown: Groq's 413 "Request too
// large ... on tokens per minute" is about this one request's size, not a
// moment of rate limiting: fail over (or relay the 413 with
// x-should-retry: false), never cool the model down.
func TestDialectGroq413RequestTooLargeNoCooldown(t *testing.T) {
	t.Run("fails over, no cooldown", func(t *testing.T) {
		g := newFake(t, groqStatus(413, dlGroq413))
		b := newFake(t, okJSON("from backup"))
		p := startProxy(t, testConfig("", dlUpstream(t, "groq_a", "groq", g.BaseURL(), 0, ""), dlUpstream(t, "backup", "openai", b.BaseURL(), 1, "")))
		dlWantFailover(t, p.URL, simpleBody, "backup", noStore...)
		if g.Calls() != 1 {
			t.Fatalf("groq calls %d after the first request, want 1", g.Calls())
		}
		r := dlWantFailover(t, p.URL, simpleBody, "backup", noStore...)
		if g.Calls() != 2 {
			t.Errorf("the groq upstream was skipped on the next request (calls %d, want 2, X-Attempts %q): its 413 put it in a cooldown", g.Calls(), r.Header.Get("X-Attempts"))
		}
	})
	t.Run("only upstream", func(t *testing.T) {
		g := newFake(t, groqStatus(413, dlGroq413))
		p := startProxy(t, testConfig("", dlUpstream(t, "groq_a", "groq", g.BaseURL(), 0, "")))
		r, body := dlWantStatus(t, p.URL, 413, "Groq's 413 relayed")
		_, typ, code := apiErr(t, body)
		if typ != "tokens" || code != "rate_limit_exceeded" {
			t.Errorf("error type %q code %q, want tokens / rate_limit_exceeded: %s", typ, code, body)
		}
		if v := r.Header.Get("x-should-retry"); v != "false" {
			t.Errorf("x-should-retry %q, want false (retrying the same request cannot succeed)", v)
		}
		if v := r.Header.Get("X-Upstream"); v != "groq_a" {
			t.Errorf("X-Upstream %q, want groq_a", v)
		}
		r = post(t, p.URL, simpleBody, noStore...)
		readAll(t, r)
		if g.Calls() != 2 {
			t.Errorf("the second request did not reach groq (calls %d, status %d): a cooldown after a 413", g.Calls(), r.StatusCode)
		}
	})
}

// TestDialectHF402CreditsExhaustedUntilMonthReset: HuggingFace's 402 means
// the key's monthly credits are gone: fail over and keep the upstream
// disabled; alone, answer OpenAI's insufficient_quota 429 with the true
// wait and x-should-retry: false.
func TestDialectHF402CreditsExhaustedUntilMonthReset(t *testing.T) {
	t.Run("fails over, then disabled", func(t *testing.T) {
		hf := newFake(t, statusHandler(402, dlHF402))
		b := newFake(t, okJSON("from backup"))
		p := startProxy(t, testConfig("", dlUpstream(t, "hf_a", "huggingface", hf.BaseURL(), 0, ""), dlUpstream(t, "backup", "openai", b.BaseURL(), 1, "")))
		dlWantFailover(t, p.URL, simpleBody, "backup", noStore...)
		dlWantFailover(t, p.URL, simpleBody, "backup", noStore...)
		if hf.Calls() != 1 {
			t.Errorf("hf calls %d, want 1 (out of credits: disabled)", hf.Calls())
		}
	})
	t.Run("only upstream", func(t *testing.T) {
		hf := newFake(t, statusHandler(402, dlHF402))
		p := startProxy(t, testConfig("", dlUpstream(t, "hf_a", "huggingface", hf.BaseURL(), 0, "")))
		r, body := dlWantStatus(t, p.URL, 429, "429")
		_, _, code := apiErr(t, body)
		if code != "insufficient_quota" {
			t.Errorf("error code %q, want insufficient_quota: %s", code, body)
		}
		if v := r.Header.Get("x-should-retry"); v != "false" {
			t.Errorf("x-should-retry %q, want false", v)
		}
		now := time.Now().UTC()
		untilMonth := int(time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC).Sub(now) / time.Second)
		ra := dlRetryAfter(r)
		switch {
		case ra <= 60:
			t.Errorf("Retry-After %q, want the seconds until the monthly reset (> 60)", r.Header.Get("Retry-After"))
		case ra <= 120 && untilMonth > 180:
			t.Errorf("Retry-After %d: capped, not the truthful wait until the monthly reset (%ds away)", ra, untilMonth)
		case ra > 32*24*3600:
			t.Errorf("Retry-After %d: more than a month", ra)
		}
	})
}

// TestDialectHF503ModelLoadingNotABreakerFailure: HuggingFace's 503 "Model
// ... is currently loading" is transient and says nothing about the
// provider's health: fail over without a breaker failure; alone, answer
// 503 with Retry-After from estimated_time.
func TestDialectHF503ModelLoadingNotABreakerFailure(t *testing.T) {
	t.Run("fails over, breaker stays closed", func(t *testing.T) {
		hf := newFake(t, statusHandler(503, dlHF503))
		b := newFake(t, okJSON("from backup"))
		// hf has priority 0: while it is not skipped it is tried first.
		p := startProxy(t, testConfig("", dlUpstream(t, "hf_a", "huggingface", hf.BaseURL(), 0, ""), dlUpstream(t, "backup", "openai", b.BaseURL(), 1, "")))
		for i := 0; i < 7; i++ {
			dlWantFailover(t, p.URL, simpleBody, "backup", noStore...)
			if hf.Calls() != i+1 {
				t.Fatalf("request %d (after %d loading 503s) did not try hf first: hf calls %d, want %d; failure_threshold is 3, so its breaker counted them", i+1, i, hf.Calls(), i+1)
			}
		}
	})
	t.Run("only upstream", func(t *testing.T) {
		hf := newFake(t, statusHandler(503, dlHF503))
		p := startProxy(t, testConfig("", dlUpstream(t, "hf_a", "huggingface", hf.BaseURL(), 0, "")))
		r, body := dlWantStatus(t, p.URL, 503, "503")
		if ra := dlRetryAfter(r); ra < 19 || ra > 20 {
			t.Errorf("Retry-After %q, want 20 (estimated_time)", r.Header.Get("Retry-After"))
		}
		apiErr(t, body)
	})
}

// TestDialectCannotServeFailsOverWithoutBlame: answers that say this
// upstream cannot serve this request (context length in the message only,
// TGI's token validation 422, model_not_supported) fail over to the next
// upstream without a breaker failure or a cooldown.
func TestDialectCannotServeFailsOverWithoutBlame(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
	}{
		{"hf 400 context length code null", 400, dlHF400Context},
		{"tgi 422 input validation", 422, dlTGI422},
		{"hf 400 model_not_supported", 400, dlHF400NotSupported},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hf := newFake(t, statusHandler(tc.status, tc.body))
			b := newFake(t, okJSON("from backup"))
			p := startProxy(t, testConfig("", dlUpstream(t, "hf_a", "huggingface", hf.BaseURL(), 0, ""), dlUpstream(t, "backup", "openai", b.BaseURL(), 1, "")))
			body := `{"model":"foo/bar","messages":[{"role":"user","content":"a long prompt"}],"max_tokens":1000}`
			// 4 requests: past failure_threshold (3) too.
			for i := 0; i < 4; i++ {
				r := post(t, p.URL, body, noStore...)
				got := readAll(t, r)
				if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "backup" {
					t.Fatalf("request %d: status %d from %q, want 200 from backup (hf's %d is not the client's fault): %s", i+1, r.StatusCode, r.Header.Get("X-Upstream"), tc.status, got)
				}
				if hf.Calls() != i+1 {
					t.Fatalf("request %d did not try hf first (hf calls %d, want %d): blamed by a breaker or a cooldown", i+1, hf.Calls(), i+1)
				}
			}
		})
	}
}

// TestDialectAllFailedRelaysLastUpstreamError: when every candidate failed
// and the last failure is an upstream's own error, the client gets that
// error (status, type, code, null code included), not a synthesized
// "all upstreams failed" listing internal names.
func TestDialectAllFailedRelaysLastUpstreamError(t *testing.T) {
	t.Run("503 then groq 429", func(t *testing.T) {
		a := newFake(t, statusHandler(503, dlOpenAI503))
		b := newFake(t, groqStatus(429, dlGroq429, "retry-after", "7"))
		p := startProxy(t, testConfig("", dlUpstream(t, "alpha_up", "openai", a.BaseURL(), 0, ""), dlUpstream(t, "bravo_up", "groq", b.BaseURL(), 1, "")))
		r := post(t, p.URL, simpleBody, noStore...)
		body := readAll(t, r)
		if a.Calls() != 1 || b.Calls() != 1 {
			t.Fatalf("calls a=%d b=%d, want 1 and 1", a.Calls(), b.Calls())
		}
		if r.StatusCode != 429 {
			t.Fatalf("status %d, want the last upstream's 429: %s", r.StatusCode, body)
		}
		msg, typ, code := apiErr(t, body)
		if typ != "tokens" || code != "rate_limit_exceeded" {
			t.Errorf("error type %q code %q, want Groq's tokens / rate_limit_exceeded: %s", typ, code, body)
		}
		if strings.HasPrefix(msg, "all upstreams failed") {
			t.Errorf("message is the proxy's summary, not the upstream's error: %s", msg)
		}
		if strings.Contains(string(body), "alpha_up") || strings.Contains(string(body), "bravo_up") {
			t.Errorf("the body names the upstreams: %s", body)
		}
		if v := r.Header.Get("X-Upstream"); v != "bravo_up" {
			t.Errorf("X-Upstream %q, want bravo_up (the last upstream)", v)
		}
	})
	t.Run("single 500 keeps code null", func(t *testing.T) {
		a := newFake(t, statusHandler(500, dlServer500))
		p := startProxy(t, testConfig("", dlUpstream(t, "alpha_up", "openai", a.BaseURL(), 0, "")))
		r := post(t, p.URL, simpleBody, noStore...)
		body := readAll(t, r)
		var e struct {
			Error map[string]json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
			t.Fatalf("status %d, not an error object: %s", r.StatusCode, body)
		}
		if c, ok := e.Error["code"]; !ok || string(c) != "null" {
			t.Errorf("error.code is %s, want null as the upstream sent it (status %d): %s", c, r.StatusCode, body)
		}
	})
}

// TestDialectRetryAfterBeyond60sStopsSDKRetries: OpenAI's SDKs ignore a
// Retry-After over 60 s and retry on their own backoff; only
// x-should-retry: false stops them. The Retry-After itself stays truthful.
func TestDialectRetryAfterBeyond60sStopsSDKRetries(t *testing.T) {
	for _, tc := range []struct {
		retryAfter         string
		min, max           int  // the Retry-After the client gets (1 s of rounding)
		shouldRetryIsFalse bool // x-should-retry: false, past the SDKs' 60 s
	}{
		{"3600", 3599, 3600, true},
		{"5", 4, 5, false},
	} {
		t.Run("retry-after "+tc.retryAfter, func(t *testing.T) {
			g := newFake(t, groqStatus(429, dlGroq429, "retry-after", tc.retryAfter))
			p := startProxy(t, testConfig("", dlUpstream(t, "groq_a", "groq", g.BaseURL(), 0, "")))
			r, _ := dlWantStatus(t, p.URL, 429, "429")
			if ra := dlRetryAfter(r); ra < tc.min || ra > tc.max {
				t.Errorf("Retry-After %q, want %s (truthful, not capped)", r.Header.Get("Retry-After"), tc.retryAfter)
			}
			if got := r.Header.Get("x-should-retry") == "false"; got != tc.shouldRetryIsFalse {
				t.Errorf("x-should-retry: false is %v, want %v (only waits over 60 s need it)", got, tc.shouldRetryIsFalse)
			}
		})
	}
}

// TestDialectGzipAnswerDecoded: an upstream that gzips its answer (plain or
// SSE) although the proxy did not ask for it: the client still gets the
// decoded answer.
func TestDialectGzipAnswerDecoded(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		var asked atomic.Value
		up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
			asked.Store(r.Header.Get("Accept-Encoding"))
			gz := dlGzip([]byte(completionJSON("m", "zipped hello")))
			groqHeaders(w)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Length", strconv.Itoa(len(gz)))
			w.WriteHeader(200)
			w.Write(gz)
		})
		p := startProxy(t, testConfig("", dlUpstream(t, "one", "openai", up.BaseURL(), 0, "")))
		// Accept-Encoding set by hand: Go's client then decodes nothing, so
		// the test sees exactly what the proxy sent.
		r := post(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"gzip plain"}]}`, append([]string{"Accept-Encoding", "identity"}, noStore...)...)
		body := readAll(t, r)
		t.Logf("proxy's Accept-Encoding upstream: %q", asked.Load())
		if r.StatusCode != 200 {
			t.Fatalf("status %d, want 200 with the decoded completion: %q", r.StatusCode, body)
		}
		if ce := r.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
			t.Errorf("Content-Encoding %q to a client that asked for identity", ce)
		}
		var c struct {
			Choices []struct{ Message struct{ Content string } }
		}
		if err := json.Unmarshal(body, &c); err != nil || len(c.Choices) != 1 || c.Choices[0].Message.Content != "zipped hello" {
			t.Errorf("not the decoded completion (%v): %q", err, body)
		}
	})
	t.Run("stream", func(t *testing.T) {
		up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
			groqHeaders(w)
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Content-Encoding", "gzip")
			w.WriteHeader(200)
			zw := gzip.NewWriter(w)
			for _, ev := range []string{chunk("m", "zipped", ""), chunk("m", " stream", ""), chunk("m", "", "stop"), "data: [DONE]\n\n"} {
				io.WriteString(zw, ev)
				zw.Flush()
				w.(http.Flusher).Flush()
			}
			zw.Close()
		})
		p := startProxy(t, testConfig("", dlUpstream(t, "one", "openai", up.BaseURL(), 0, "")))
		r := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"gzip stream"}]}`, append([]string{"Accept-Encoding", "identity"}, noStore...)...)
		body := dlReadStream(r)
		if r.StatusCode != 200 {
			t.Fatalf("status %d, want 200 with the decoded events: %q", r.StatusCode, body)
		}
		choices, done, errEv := dlAssemble(t, body)
		if errEv || !done || choices[0] == nil || choices[0].content != "zipped stream" {
			t.Errorf("not the decoded stream (error event %v, [DONE] %v): %q", errEv, done, body)
		}
	})
}

// TestDialectJSONAnswerToStreamRequest: an upstream that ignores "stream":
// true and answers one chat.completion: the client, which asked for a
// stream, gets it as SSE chunks and [DONE].
func TestDialectJSONAnswerToStreamRequest(t *testing.T) {
	up := newFake(t, okJSON("plain answer"))
	p := startProxy(t, testConfig("", dlUpstream(t, "one", "openai", up.BaseURL(), 0, "")))
	r := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"json to stream"}]}`, noStore...)
	body := dlReadStream(r)
	if r.StatusCode != 200 {
		t.Fatalf("status %d: %q", r.StatusCode, body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q to a stream request, want text/event-stream: %q", ct, body)
	}
	choices, done, errEv := dlAssemble(t, body)
	if errEv || !done || choices[0] == nil || choices[0].content != "plain answer" {
		t.Errorf("stream does not carry the answer as chunks and [DONE] (error event %v, [DONE] %v): %q", errEv, done, body)
	}
	if !strings.Contains(string(body), `"object":"chat.completion.chunk"`) {
		t.Errorf("events are not chat.completion.chunk objects: %q", body)
	}
}

// TestDialectUsageNotLeakedWithoutIncludeUsage: the proxy asks every stream
// for its usage; an upstream that puts the usage on a chunk that also
// carries choices (the finish chunk, or a content chunk) must not leak it
// to a client that did not ask.
func TestDialectUsageNotLeakedWithoutIncludeUsage(t *testing.T) {
	const usage = `,"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}`
	usageObj := regexp.MustCompile(`"usage"\s*:\s*\{`)
	for _, on := range []string{"finish chunk", "content chunk"} {
		t.Run(on, func(t *testing.T) {
			var asked atomic.Bool
			up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				var req struct {
					StreamOptions *struct {
						IncludeUsage bool `json:"include_usage"`
					} `json:"stream_options"`
				}
				json.NewDecoder(r.Body).Decode(&req)
				asked.Store(req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
				contentExtra, finishExtra := "", usage
				if on == "content chunk" {
					contentExtra, finishExtra = usage, ""
				}
				groqHeaders(w)
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, dlChunk(`[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]`, ""))
				io.WriteString(w, dlChunk(`[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]`, contentExtra))
				io.WriteString(w, dlChunk(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`, finishExtra))
				io.WriteString(w, "data: [DONE]\n\n")
			})
			p := startProxy(t, testConfig("", dlUpstream(t, "one", "openai", up.BaseURL(), 0, "")))
			r := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"usage leak"}]}`, noStore...)
			body := dlReadStream(r)
			if !asked.Load() {
				t.Fatalf("the proxy did not send include_usage:true upstream: %s", up.LastBody())
			}
			if r.StatusCode != 200 {
				t.Fatalf("status %d: %q", r.StatusCode, body)
			}
			if usageObj.Match(body) {
				t.Errorf("a usage object the client did not ask for reached it (on the %s): %q", on, body)
			}
			choices, done, errEv := dlAssemble(t, body)
			if errEv || !done || choices[0] == nil || choices[0].content != "Hello" || choices[0].finish == nil || *choices[0].finish != "stop" {
				t.Errorf("stream lost its content or finish (error event %v, [DONE] %v): %q", errEv, done, body)
			}
		})
	}
}

// TestDialectStreamCutWithUnfinishedChoice: a stream that says [DONE]
// while a choice never got a finish_reason (n: 2 with choice 1 open, or
// "finish_reason":"") is incomplete: the client gets an in-band error at
// the end, and the answer is not cached.
func TestDialectStreamCutWithUnfinishedChoice(t *testing.T) {
	cases := []struct {
		name, req string
		events    []string
	}{
		{"n2 second choice unfinished", `"n":2,`, []string{
			dlChunk(`[{"index":0,"delta":{"role":"assistant","content":"zero"},"logprobs":null,"finish_reason":null}]`, ""),
			dlChunk(`[{"index":1,"delta":{"role":"assistant","content":"one"},"logprobs":null,"finish_reason":null}]`, ""),
			dlChunk(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`, ""),
			"data: [DONE]\n\n",
		}},
		{"empty finish_reason", ``, []string{
			dlChunk(`[{"index":0,"delta":{"role":"assistant","content":"partial"},"logprobs":null,"finish_reason":null}]`, ""),
			dlChunk(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":""}]`, ""),
			"data: [DONE]\n\n",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				var req struct{ Stream bool }
				json.NewDecoder(r.Body).Decode(&req)
				if !req.Stream {
					okJSON("fresh plain answer")(w, r)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				for _, ev := range tc.events {
					io.WriteString(w, ev)
				}
			})
			p := startProxy(t, testConfig("", dlUpstream(t, "one", "openai", up.BaseURL(), 0, "")))
			q := fmt.Sprintf(`{"model":"m",%s"messages":[{"role":"user","content":"cut %s"}]}`, tc.req, tc.name)
			stream := strings.Replace(q, `{"model":"m",`, `{"model":"m","stream":true,`, 1)
			r := post(t, p.URL, stream)
			body := dlReadStream(r)
			data := dlData(body)
			if r.StatusCode != 200 || len(data) == 0 || !strings.HasPrefix(data[len(data)-1], `{"error":`) {
				t.Errorf("status %d: the stream does not end with an in-band error event: %q", r.StatusCode, body)
			}
			// The store is asynchronous: give a wrong store time to land.
			for i := 0; i < 15; i++ {
				cr := post(t, p.URL, q, "Cache-Control", "only-if-cached")
				cb := readAll(t, cr)
				if cr.StatusCode == 200 {
					t.Errorf("the incomplete stream was cached (X-Cache %q): %s", cr.Header.Get("X-Cache"), cb)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			r = post(t, p.URL, q)
			got := readAll(t, r)
			if up.Calls() != 2 {
				t.Errorf("the identical plain request did not reach the upstream (calls %d, X-Cache %q): %s", up.Calls(), r.Header.Get("X-Cache"), got)
			}
		})
	}
}

// dlAnnotation is the url_citation annotation of TestDialectCacheConversionKeepsFields.
const dlAnnotation = `{"type":"url_citation","url_citation":{"url":"https://example.com","title":"x","start_index":0,"end_index":3}}`

// TestDialectCacheConversionKeepsFields: converting a cached answer between
// plain and stream keeps the legacy function_call and the message's
// annotations.
func TestDialectCacheConversionKeepsFields(t *testing.T) {
	plainAnswer := `{"id":"chatcmpl-fc","object":"chat.completion","created":1732000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{\"a\":1}"},"annotations":[` + dlAnnotation + `]},"logprobs":null,"finish_reason":"function_call"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17},"system_fingerprint":"fp_test"}`
	streamAnswer := []string{
		dlChunk(`[{"index":0,"delta":{"role":"assistant","content":null,"function_call":{"name":"f","arguments":""}},"logprobs":null,"finish_reason":null}]`, ""),
		dlChunk(`[{"index":0,"delta":{"function_call":{"arguments":"{\"a\":"}},"logprobs":null,"finish_reason":null}]`, ""),
		dlChunk(`[{"index":0,"delta":{"function_call":{"arguments":"1}"}},"logprobs":null,"finish_reason":null}]`, ""),
		dlChunk(`[{"index":0,"delta":{"annotations":[`+dlAnnotation+`]},"logprobs":null,"finish_reason":null}]`, ""),
		dlChunk(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"function_call"}]`, ""),
		"data: [DONE]\n\n",
	}
	handler := func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Stream bool }
		json.NewDecoder(r.Body).Decode(&req)
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, ev := range streamAnswer {
				io.WriteString(w, ev)
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, plainAnswer)
	}
	hasAnnotation := func(as []json.RawMessage) bool {
		for _, a := range as {
			if strings.Contains(string(a), `"url_citation"`) && strings.Contains(string(a), `https://example.com`) {
				return true
			}
		}
		return false
	}
	t.Run("plain then stream", func(t *testing.T) {
		up := newFake(t, handler)
		p := startProxy(t, testConfig("", dlUpstream(t, "one", "openai", up.BaseURL(), 0, "")))
		plain := `{"model":"m","messages":[{"role":"user","content":"fc plain first"}],"functions":[{"name":"f","parameters":{"type":"object"}}]}`
		r := post(t, p.URL, plain)
		if b := readAll(t, r); r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, b)
		}
		waitHit(t, p.URL, plain)
		stream := strings.Replace(plain, `{"model":"m",`, `{"model":"m","stream":true,`, 1)
		r, body := waitHit(t, p.URL, stream)
		if r.Header.Get("X-Cache") != "HIT" || up.Calls() != 1 {
			t.Fatalf("X-Cache %q, upstream calls %d", r.Header.Get("X-Cache"), up.Calls())
		}
		choices, done, _ := dlAssemble(t, body)
		c := choices[0]
		if c == nil || !done {
			t.Fatalf("no choice 0 or no [DONE]: %q", body)
		}
		if c.fcName != "f" || c.fcArgs != `{"a":1}` {
			t.Errorf("function_call lost in the synthesized stream: name %q arguments %q: %q", c.fcName, c.fcArgs, body)
		}
		if !hasAnnotation(c.annotations) {
			t.Errorf("annotations lost in the synthesized stream: %q", body)
		}
	})
	t.Run("stream then plain", func(t *testing.T) {
		up := newFake(t, handler)
		p := startProxy(t, testConfig("", dlUpstream(t, "one", "openai", up.BaseURL(), 0, "")))
		stream := `{"model":"m","stream":true,"messages":[{"role":"user","content":"fc stream first"}],"functions":[{"name":"f","parameters":{"type":"object"}}]}`
		r := post(t, p.URL, stream)
		if b := dlReadStream(r); r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, b)
		}
		plain := strings.Replace(stream, `"stream":true,`, ``, 1)
		r, body := waitHit(t, p.URL, plain)
		if r.Header.Get("X-Cache") != "HIT" || up.Calls() != 1 {
			t.Fatalf("X-Cache %q, upstream calls %d", r.Header.Get("X-Cache"), up.Calls())
		}
		var c struct {
			Choices []struct {
				Message struct {
					Content      *string `json:"content"`
					FunctionCall *struct {
						Name      string `json:"name"`
						Arguments string `json:"arguments"`
					} `json:"function_call"`
					Annotations []json.RawMessage `json:"annotations"`
				} `json:"message"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(body, &c); err != nil || len(c.Choices) != 1 {
			t.Fatalf("assembled completion (%v): %s", err, body)
		}
		m := c.Choices[0].Message
		if m.FunctionCall == nil || m.FunctionCall.Name != "f" || m.FunctionCall.Arguments != `{"a":1}` {
			t.Errorf("function_call lost in the assembled message: %s", body)
		}
		if !hasAnnotation(m.Annotations) {
			t.Errorf("annotations lost in the assembled message: %s", body)
		}
	})
}

// TestDialectClientDisconnectReleasesSilentUpstream: a client that closes
// its stream while the upstream is silent (between two events) releases
// the upstream connection at once, not at the idle timeout.
func TestDialectClientDisconnectReleasesSilentUpstream(t *testing.T) {
	for _, tc := range []struct {
		name string
		top  string        // top-level config
		wait time.Duration // how long the client reads on before it leaves
	}{
		{"at once", "", 0},
		// fasthttp leaves read_timeout on the client's socket: a watcher
		// that honoured it would go blind on streams older than it.
		{"stream older than read_timeout", "read_timeout: 300ms\n", 800 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cancelled := make(chan time.Time, 1)
			release := make(chan struct{})
			up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				groqHeaders(w)
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(200)
				io.WriteString(w, chunk("m", "first", ""))
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					cancelled <- time.Now()
				case <-release:
				case <-time.After(10 * time.Second):
				}
			})
			// idle_timeout 10s: only noticing the client can free the
			// upstream in time.
			u := dlTimeouts(t, dlUpstream(t, "one", "openai", up.BaseURL(), 0, ""), "2s", "10s")
			p := startProxy(t, testConfig(tc.top, u))
			t.Cleanup(func() { close(release) }) // runs before the proxy and the fake stop
			resp := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"disconnect"}]}`, noStore...)
			br := bufio.NewReader(resp.Body)
			ev, err := readEvent(br)
			if err != nil || !strings.Contains(ev, `"first"`) {
				resp.Body.Close()
				t.Fatalf("first event %q: %v", ev, err)
			}
			time.Sleep(tc.wait)
			closed := time.Now()
			resp.Body.Close()
			httpClient.CloseIdleConnections()
			select {
			case at := <-cancelled:
				if d := at.Sub(closed); d > 1500*time.Millisecond {
					t.Errorf("the upstream request was cancelled %v after the client closed, want within 1.5s", d)
				}
			case <-time.After(3 * time.Second):
				t.Errorf("the upstream request was still open 3s after the client closed its stream (idle_timeout is 10s)")
			}
		})
	}
}

// TestDialectRetryDecisions: the same-upstream retry does not retry a
// silent stream (its first-token timeout already spent the time budget),
// and with max_retry_after it waits out a short Retry-After on the same
// upstream instead of failing over.
func TestDialectRetryDecisions(t *testing.T) {
	t.Run("silent upstream tried once", func(t *testing.T) {
		a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
			select { // no headers, ever
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		})
		b := newFake(t, sseHandler(streamScript{words: []string{"from", "b"}}))
		ua := dlTimeouts(t, dlUpstream(t, "a", "openai", a.BaseURL(), 0, "    retry: {attempts: 2, backoff: 10ms}\n"), "1s", "2s")
		p := startProxy(t, testConfig("", ua, dlUpstream(t, "b", "openai", b.BaseURL(), 1, "")))
		start := time.Now()
		r := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"silent"}]}`, noStore...)
		body := dlReadStream(r)
		elapsed := time.Since(start)
		if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "b" || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
			t.Fatalf("status %d from %q: %q", r.StatusCode, r.Header.Get("X-Upstream"), body)
		}
		if a.Calls() != 1 {
			t.Errorf("the silent upstream was tried %d times, want once (a first-token timeout is not retried)", a.Calls())
		}
		if elapsed > 2500*time.Millisecond {
			t.Errorf("the request took %v, want < 2.5s (first_token_timeout 1s, one try)", elapsed)
		}
	})
	t.Run("short retry-after retried on the same upstream", func(t *testing.T) {
		var n atomic.Int64
		a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				groqStatus(429, dlGroq429, "retry-after", "1")(w, r)
				return
			}
			okJSON("a after retry")(w, r)
		})
		b := newFake(t, okJSON("from b"))
		p := startProxy(t, testConfig("",
			dlUpstream(t, "a", "openai", a.BaseURL(), 0, "    retry: {attempts: 2, backoff: 10ms, max_retry_after: 2s}\n"),
			dlUpstream(t, "b", "openai", b.BaseURL(), 1, "")))
		r := post(t, p.URL, simpleBody, noStore...)
		body := readAll(t, r)
		if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "a" || !strings.Contains(string(body), "a after retry") {
			t.Errorf("status %d from %q, want 200 from a after waiting its retry-after: %s", r.StatusCode, r.Header.Get("X-Upstream"), body)
		}
		if a.Calls() != 2 || b.Calls() != 0 {
			t.Errorf("calls a=%d (want 2) b=%d (want 0)", a.Calls(), b.Calls())
		}
	})
}

// TestDialectForwardedHeaders: configured per-upstream headers (with ${VAR}
// expansion), and HuggingFace's X-HF-Bill-To forwarded from the client —
// but no other client header, and never the client's Authorization.
func TestDialectForwardedHeaders(t *testing.T) {
	t.Run("configured header from env", func(t *testing.T) {
		hf := newFake(t, okJSON("billed"))
		// Block style: ${VAR} inside a flow mapping is a YAML error.
		u := dlUpstream(t, "hf_a", "huggingface", hf.BaseURL(), 0, "    headers:\n      X-HF-Bill-To: ${BILL_ORG}\n")
		p := startProxy(t, testConfig("", u), "BILL_ORG=my-org")
		r := post(t, p.URL, simpleBody, noStore...)
		if b := readAll(t, r); r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, b)
		}
		if v := hf.LastHeader().Get("X-HF-Bill-To"); v != "my-org" {
			t.Errorf("upstream saw X-HF-Bill-To %q, want my-org", v)
		}
	})
	t.Run("client bill-to forwarded to huggingface", func(t *testing.T) {
		hf := newFake(t, okJSON("billed"))
		p := startProxy(t, testConfig("", dlUpstream(t, "hf_a", "huggingface", hf.BaseURL(), 0, "")))
		r := post(t, p.URL, simpleBody, append([]string{"X-HF-Bill-To", "team-a", "X-Other", "1"}, noStore...)...)
		if b := readAll(t, r); r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, b)
		}
		h := hf.LastHeader()
		if v := h.Get("X-HF-Bill-To"); v != "team-a" {
			t.Errorf("upstream saw X-HF-Bill-To %q, want the client's team-a", v)
		}
		if v := h.Get("X-Other"); v != "" {
			t.Errorf("an arbitrary client header was forwarded: X-Other %q", v)
		}
		if v := h.Get("Authorization"); v != "Bearer key-hf_a" {
			t.Errorf("upstream Authorization %q, want the upstream's own key", v)
		}
	})
}

// dlGroqFake answers like Groq: 400 for n > 1 and for logprobs,
// top_logprobs and logit_bias; a completion otherwise.
func dlGroqFake() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req map[string]json.RawMessage
		json.Unmarshal(body, &req)
		if n, ok := req["n"]; ok && string(n) != "1" && string(n) != "null" {
			groqStatus(400, dlGroqN400)(w, r)
			return
		}
		for _, k := range []string{"logprobs", "top_logprobs", "logit_bias"} {
			if _, ok := req[k]; ok {
				groqStatus(400, strings.Replace(dlGroqLogprobs400, "`logprobs`", "`"+k+"`", 1))(w, r)
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		okJSON("from groq")(w, r)
	}
}

// TestDialectCapabilityRouting: requests a Groq upstream cannot serve (n >
// 1, logprobs) are routed to an upstream that can, rejected locally when
// none can, or stripped with drop_params.
func TestDialectCapabilityRouting(t *testing.T) {
	t.Run("n=2 skips groq", func(t *testing.T) {
		g := newFake(t, dlGroqFake())
		o := newFake(t, okJSON("from openai"))
		p := startProxy(t, testConfig("", dlUpstream(t, "groq_a", "groq", g.BaseURL(), 0, ""), dlUpstream(t, "openai_b", "openai", o.BaseURL(), 1, "")))
		r := post(t, p.URL, `{"model":"m","n":2,"messages":[{"role":"user","content":"two answers"}]}`, noStore...)
		body := readAll(t, r)
		if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "openai_b" {
			t.Errorf("status %d from %q, want 200 from openai_b: %s", r.StatusCode, r.Header.Get("X-Upstream"), body)
		}
		if g.Calls() != 0 {
			t.Errorf("groq got %d calls for n=2, want 0", g.Calls())
		}
	})
	t.Run("logprobs with only groq rejected locally", func(t *testing.T) {
		g := newFake(t, dlGroqFake())
		p := startProxy(t, testConfig("", dlUpstream(t, "groq_a", "groq", g.BaseURL(), 0, "")))
		r := post(t, p.URL, `{"model":"m","logprobs":true,"messages":[{"role":"user","content":"logprobs"}]}`, noStore...)
		body := readAll(t, r)
		if r.StatusCode != 400 {
			t.Fatalf("status %d, want 400: %s", r.StatusCode, body)
		}
		msg, _, _ := apiErr(t, body)
		var e struct {
			Error struct {
				Param *string `json:"param"`
			} `json:"error"`
		}
		json.Unmarshal(body, &e)
		if (e.Error.Param == nil || *e.Error.Param != "logprobs") && !strings.Contains(msg, "logprobs") {
			t.Errorf("the error names neither param nor message logprobs: %s", body)
		}
		if g.Calls() != 0 {
			t.Errorf("groq was called (%d) for a request it cannot serve; want a local 400", g.Calls())
		}
	})
	t.Run("drop_params strips logprobs", func(t *testing.T) {
		g := newFake(t, dlGroqFake())
		p := startProxy(t, testConfig("", dlUpstream(t, "groq_a", "groq", g.BaseURL(), 0, "    drop_params: true\n")))
		r := post(t, p.URL, `{"model":"m","logprobs":true,"messages":[{"role":"user","content":"drop"}]}`, noStore...)
		body := readAll(t, r)
		if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "groq_a" {
			t.Errorf("status %d from %q, want 200 from groq_a: %s", r.StatusCode, r.Header.Get("X-Upstream"), body)
		}
		var sent map[string]json.RawMessage
		if err := json.Unmarshal(g.LastBody(), &sent); err != nil {
			t.Fatalf("groq got %d calls, last body %q", g.Calls(), g.LastBody())
		}
		if _, ok := sent["logprobs"]; ok {
			t.Errorf("logprobs reached groq with drop_params: %s", g.LastBody())
		}
	})
}

// TestDialectCompleteModeFailsOverOnUnfinishedChoice: in commit mode
// complete nothing reaches the client before the whole stream is read, so
// a stream whose [DONE] comes with a choice unfinished fails over, and the
// client never sees the cut answer.
func TestDialectCompleteModeFailsOverOnUnfinishedChoice(t *testing.T) {
	a := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, dlChunk(`[{"index":0,"delta":{"content":"zero"},"finish_reason":"stop"},{"index":1,"delta":{"content":"one"},"finish_reason":null}]`, ""))
		io.WriteString(w, "data: [DONE]\n\n")
	})
	b := newFake(t, sseHandler(streamScript{words: []string{"from", "b"}}))
	p := startProxy(t, testConfig("streaming: {commit: complete}\n",
		dlUpstream(t, "a", "openai", a.BaseURL(), 0, ""), dlUpstream(t, "b", "openai", b.BaseURL(), 1, "")))
	r := post(t, p.URL, `{"model":"m","stream":true,"n":2,"messages":[{"role":"user","content":"two"}]}`, noStore...)
	body := dlReadStream(r)
	if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "b" || strings.Contains(string(body), `"zero"`) || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
		t.Errorf("status %d X-Upstream %q: %s", r.StatusCode, r.Header.Get("X-Upstream"), body)
	}
}
