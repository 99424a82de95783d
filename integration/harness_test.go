package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"switchyard/integration/testproc"
)

// binary is the switchyard binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(testproc.Main(m, "..", raceEnabled, &binary))
}

// proxyProc is a running switchyard binary and its config file.
type proxyProc struct {
	*testproc.Proxy
	cfgPath string
}

// startProxy writes cfg to a file and runs the binary on a free port. The
// config's listen is overridden (-listen 127.0.0.1:0). The proxy stops when
// the test ends.
func startProxy(t *testing.T, cfg string, env ...string) *proxyProc {
	t.Helper()
	p, path := testproc.StartConfig(t, binary, cfg, env...)
	return &proxyProc{Proxy: p, cfgPath: path}
}

// fake is a scripted OpenAI-compatible upstream on 127.0.0.1.
type fake struct {
	*httptest.Server
	calls    atomic.Int64
	mu       sync.Mutex
	bodies   [][]byte
	paths    []string
	requests []string // method and URI, query included
	headers  []http.Header
	hosts    []string
	handler  atomic.Pointer[http.HandlerFunc]
}

// fakePaths are the API endpoints a fake serves (h tells them apart by
// r.URL.Path), with the stored responses under /v1/responses/ (see
// fakeServes); any other path is a 404.
var fakePaths = map[string]bool{
	"/v1/chat/completions": true, "/v1/completions": true, "/v1/responses": true,
	"/v1/embeddings": true, "/v1/audio/transcriptions": true, "/v1/audio/translations": true,
}

// fakeServes reports whether a fake runs its handler for path.
func fakeServes(path string) bool {
	return fakePaths[path] || strings.HasPrefix(path, "/v1/responses/")
}

// newFake starts a fake upstream whose API endpoints (fakePaths) run h.
func newFake(t *testing.T, h http.HandlerFunc) *fake {
	t.Helper()
	f := &fake{}
	f.SetHandler(h)
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fakeServes(r.URL.Path) {
			http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error","code":"not_found"}}`, 404)
			return
		}
		body, _ := io.ReadAll(r.Body)
		f.calls.Add(1)
		f.mu.Lock()
		f.paths = append(f.paths, r.URL.Path)
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		f.bodies = append(f.bodies, body)
		f.headers = append(f.headers, r.Header.Clone())
		f.hosts = append(f.hosts, r.Host)
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		(*f.handler.Load())(w, r)
	}))
	f.Server.Config.ErrorLog = nil
	f.Start()
	t.Cleanup(f.Close)
	return f
}

// LastPath returns the path of the last request ("" if none).
func (f *fake) LastPath() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.paths) == 0 {
		return ""
	}
	return f.paths[len(f.paths)-1]
}

// LastRequest returns the last request's method and URI with its query
// ("GET /v1/responses/resp_1?limit=2"), "" if none.
func (f *fake) LastRequest() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return ""
	}
	return f.requests[len(f.requests)-1]
}

// SetHandler replaces the fake's behaviour.
func (f *fake) SetHandler(h http.HandlerFunc) { f.handler.Store(&h) }

// Calls returns how many chat requests the fake received.
func (f *fake) Calls() int { return int(f.calls.Load()) }

// LastBody returns the last request body the fake received.
func (f *fake) LastBody() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		return nil
	}
	return f.bodies[len(f.bodies)-1]
}

// LastHeader returns the last request's headers.
func (f *fake) LastHeader() http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.headers) == 0 {
		return nil
	}
	return f.headers[len(f.headers)-1]
}

// LastHost returns the Host of the last request the fake received.
func (f *fake) LastHost() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.hosts) == 0 {
		return ""
	}
	return f.hosts[len(f.hosts)-1]
}

// BaseURL is the fake's OpenAI base URL (with /v1).
func (f *fake) BaseURL() string { return f.URL + "/v1" }

// completionJSON is a chat.completion the way Groq sends it.
func completionJSON(model, content string) string {
	return fmt.Sprintf(`{"id":"chatcmpl-%d","object":"chat.completion","created":1732000000,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":%q},"logprobs":null,"finish_reason":"stop"}],"usage":{"queue_time":0.01,"prompt_tokens":12,"prompt_time":0.001,"completion_tokens":5,"completion_time":0.004,"total_tokens":17,"total_time":0.005},"system_fingerprint":"fp_test","x_groq":{"id":"req_test"}}`,
		time.Now().UnixNano(), model, content)
}

// okJSON answers every request with a Groq-like completion and rate-limit
// headers.
func okJSON(content string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Model string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		groqHeaders(w)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "req_upstream_1")
		io.WriteString(w, completionJSON(req.Model, content))
	}
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

// chunk returns one SSE event of a chat.completion.chunk.
func chunk(model, content string, finish string) string {
	fr := "null"
	if finish != "" {
		fr = fmt.Sprintf("%q", finish)
	}
	delta := fmt.Sprintf(`{"content":%q}`, content)
	if finish != "" {
		delta = `{}`
	}
	return fmt.Sprintf("data: {\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"created\":1732000000,\"model\":%q,\"system_fingerprint\":\"fp_test\",\"choices\":[{\"index\":0,\"delta\":%s,\"logprobs\":null,\"finish_reason\":%s}]}\n\n", model, delta, fr)
}

func usageChunk(model string) string {
	return fmt.Sprintf("data: {\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"created\":1732000000,\"model\":%q,\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}\n\n", model)
}

// streamScript is what a streaming fake sends: events with a delay before
// each, and how it ends.
type streamScript struct {
	words      []string
	delay      time.Duration
	usage      bool          // send the include_usage chunk when asked
	noDone     bool          // end without data: [DONE]
	cutAfter   int           // >0: reset the connection after this many events
	gate       chan struct{} // if set, wait for it after the first event
	onWriteErr func()        // called when a write fails (client went away)
}

// sseHandler streams the script's words, one chunk per word, then a finish
// chunk, the usage chunk when asked, and [DONE].
func sseHandler(s streamScript) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model         string
			StreamOptions *struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		groqHeaders(w)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Request-Id", "req_stream_1")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		fl.Flush()
		events := make([]string, 0, len(s.words)+3)
		for _, word := range s.words {
			events = append(events, chunk(req.Model, word, ""))
		}
		events = append(events, chunk(req.Model, "", "stop"))
		if s.usage && req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
			events = append(events, usageChunk(req.Model))
		}
		if !s.noDone {
			events = append(events, "data: [DONE]\n\n")
		}
		for i, ev := range events {
			if s.cutAfter > 0 && i == s.cutAfter {
				hj, ok := w.(http.Hijacker)
				if !ok {
					panic("no hijacker")
				}
				conn, _, err := hj.Hijack()
				if err == nil {
					if tc, ok := conn.(*net.TCPConn); ok {
						_ = tc.SetLinger(0)
					}
					conn.Close()
				}
				return
			}
			if s.delay > 0 {
				select {
				case <-time.After(s.delay):
				case <-r.Context().Done():
					if s.onWriteErr != nil {
						s.onWriteErr()
					}
					return
				}
			}
			if _, err := io.WriteString(w, ev); err != nil {
				if s.onWriteErr != nil {
					s.onWriteErr()
				}
				return
			}
			fl.Flush()
			if i == 0 && s.gate != nil {
				select {
				case <-s.gate:
				case <-time.After(5 * time.Second):
				}
			}
		}
	}
}

// post sends a chat request to the proxy.
func post(t *testing.T, url, body string, hdr ...string) *http.Response {
	t.Helper()
	return postTo(t, url+"/v1/chat/completions", body, hdr...)
}

// postTo is post to a full URL (another endpoint than chat).
func postTo(t *testing.T, url, body string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer client-key-should-not-pass")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return b
}

// apiErr decodes an OpenAI-shaped error body or fails the test.
func apiErr(t *testing.T, body []byte) (message, typ, code string) {
	t.Helper()
	var e struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("not an OpenAI-shaped error: %s", body)
	}
	c := ""
	if e.Error.Code != nil {
		c = *e.Error.Code
	}
	return e.Error.Message, e.Error.Type, c
}

// upstreamYAML is one upstream entry for a test config.
func upstreamYAML(name, baseURL, key string, priority int, extra string) string {
	return fmt.Sprintf(`  - name: %s
    provider: openai
    base_url: %s
    api_key: %s
    priority: %d
    timeout: 5s
    first_token_timeout: 2s
    idle_timeout: 2s
%s`, name, baseURL, key, priority, extra)
}

// config returns a test config with the given upstream entries.
func testConfig(extraTop string, upstreams ...string) string {
	return "log_level: debug\nshutdown_grace: 5s\nbreaker: {failure_threshold: 3, delay: 1s, success_threshold: 1}\n" + extraTop + "\nupstreams:\n" + strings.Join(upstreams, "")
}

const simpleBody = `{"model":"test-model","messages":[{"role":"user","content":"Say hi"}],"temperature":0.2}`

// WaitLog waits up to 3s for the proxy's log to contain s.
func (p *proxyProc) WaitLog(s string) bool {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Logs(), s) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
