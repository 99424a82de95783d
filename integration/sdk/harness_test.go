package sdk

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"switchyard/integration/testproc"
)

// binary is the switchyard binary TestMain builds once.
var binary string

func TestMain(m *testing.M) {
	os.Exit(testproc.Main(m, "../..", raceEnabled, &binary))
}

// startProxy runs the binary with cfg; it stops when the test ends.
func startProxy(t *testing.T, cfg string) *testproc.Proxy {
	t.Helper()
	p, _ := testproc.StartConfig(t, binary, cfg)
	return p
}

// The fake upstream is a Groq-like OpenAI-compatible server. The proxy maps
// the aliases below to Groq model names and authenticates with upstreamKey.
const (
	upstreamName = "groq_fake"
	upstreamKey  = "gsk_fake_upstream_key"

	modelAlias    = "llama-3.3-70b"
	upstreamModel = "llama-3.3-70b-versatile"
	otherAlias    = "llama-3.1-8b"
	audioAlias    = "whisper-1" // sent as whisper-large-v3-turbo (audio_test.go)
	unknownModel  = "no-such-model"

	plainAnswer = "Hi there! How can I help you today?"
	// badRequestMessage is Groq's answer to "n": 2.
	badRequestMessage = "'n' : number must be at most 1"
	// streamDelay is the pause before each streamed event.
	streamDelay = 100 * time.Millisecond
)

// streamWords are the content deltas of every streamed answer, one event each.
var streamWords = []string{"One", ", two", ", three", ", four", ", five."}

// proxyConfig is the switchyard configuration every test here uses.
func proxyConfig(upstreamBaseURL string) string {
	return fmt.Sprintf(`log_level: debug
shutdown_grace: 5s
upstreams:
  - name: %s
    provider: openai
    base_url: %s
    api_key: %s
    timeout: 10s
    first_token_timeout: 5s
    idle_timeout: 5s
    models:
      %s: %s
      %s: llama-3.1-8b-instant
      text-embedding-3-small: text-embedding-3-small
      %s: whisper-large-v3-turbo
`, upstreamName, upstreamBaseURL, upstreamKey, modelAlias, upstreamModel, otherAlias, audioAlias)
}

// newUpstream starts the fake upstream on 127.0.0.1 and returns it with its
// OpenAI base URL (including /v1).
func newUpstream(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(groqLike))
	t.Cleanup(srv.Close)
	return srv, srv.URL + "/v1"
}

// fakeRoutes are the fake upstream's other endpoints (responses,
// embeddings, audio), by path: each test file that drives one registers its
// handler in an init func, with the provider documentation it mimics.
var fakeRoutes = map[string]http.HandlerFunc{}

// groqLike answers /v1/chat/completions the way Groq does: a plain
// chat.completion, an SSE stream (one delta per event, streamDelay apart), or
// a 400 invalid_request_error for "n" > 1.
func groqLike(w http.ResponseWriter, r *http.Request) {
	if h, ok := fakeRoutes[r.URL.Path]; ok && r.Method == http.MethodPost {
		h(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v1/responses/") {
		storedResponse(w, r)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		writeErr(w, 404, "Unknown request URL: "+r.Method+" "+r.URL.Path, "invalid_request_error", "unknown_url")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+upstreamKey {
		writeErr(w, 401, "Invalid API Key", "invalid_request_error", "invalid_api_key")
		return
	}
	var req struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		N             int    `json:"n"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, 400, "We could not parse the JSON body of your request.", "invalid_request_error", "")
		return
	}
	if req.N > 1 {
		writeErr(w, 400, badRequestMessage, "invalid_request_error", "")
		return
	}
	groqHeaders(w)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "req_plain_01")
		fmt.Fprintf(w, `{"id":"chatcmpl-%d","object":"chat.completion","created":1732000000,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":%q},"logprobs":null,"finish_reason":"stop"}],"usage":{"queue_time":0.01,"prompt_tokens":12,"prompt_time":0.001,"completion_tokens":9,"completion_time":0.004,"total_tokens":21,"total_time":0.005},"system_fingerprint":"fp_test","x_groq":{"id":"req_plain_01"}}`,
			time.Now().UnixNano(), req.Model, plainAnswer)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Request-Id", "req_stream_01")
	w.WriteHeader(200)
	fl := w.(http.Flusher)
	fl.Flush()
	head := fmt.Sprintf(`"id":"chatcmpl-s","object":"chat.completion.chunk","created":1732000000,"model":%q,"system_fingerprint":"fp_test"`, req.Model)
	events := []string{fmt.Sprintf(`{%s,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"x_groq":{"id":"req_stream_01"}}`, head)}
	for _, word := range streamWords {
		events = append(events, fmt.Sprintf(`{%s,"choices":[{"index":0,"delta":{"content":%q},"logprobs":null,"finish_reason":null}]}`, head, word))
	}
	events = append(events, fmt.Sprintf(`{%s,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"x_groq":{"id":"req_stream_01","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}}`, head))
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		events = append(events, fmt.Sprintf(`{%s,"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}`, head))
	}
	events = append(events, "[DONE]")
	for _, ev := range events {
		select {
		case <-time.After(streamDelay):
		case <-r.Context().Done():
			return
		}
		if _, err := io.WriteString(w, "data: "+ev+"\n\n"); err != nil {
			return
		}
		fl.Flush()
	}
}

func writeErr(w http.ResponseWriter, status int, msg, typ, code string) {
	c := "null"
	if code != "" {
		c = fmt.Sprintf("%q", code)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"message":%q,"type":%q,"param":null,"code":%s}}`, msg, typ, c)
}

func groqHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("x-ratelimit-limit-requests", "14400")
	h.Set("x-ratelimit-limit-tokens", "18000")
	h.Set("x-ratelimit-remaining-requests", "14370")
	h.Set("x-ratelimit-remaining-tokens", "17997")
	h.Set("x-ratelimit-reset-requests", "2m59.56s")
	h.Set("x-ratelimit-reset-tokens", "7.66s")
}

// setup starts a fake upstream and a proxy in front of it.
func setup(t *testing.T) *testproc.Proxy {
	t.Helper()
	_, base := newUpstream(t)
	return startProxy(t, proxyConfig(base))
}
