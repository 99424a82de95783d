package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestPlainPassThrough(t *testing.T) {
	up := newFake(t, okJSON("Hello there"))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "sk-upstream-secret-1", 1,
		"    models: {test-model: real-model-v1}\n")))

	body := `{ "messages": [{"role":"user","content":"Say \"hi\" é"}],
  "model" : "test-model", "temperature": 0.2, "nested": {"model": "keep-me"} }`
	resp := post(t, p.URL, body, "X-Request-Id", "client-req-42",
		"Proxy-Authorization", "Basic c2VjcmV0", "Connection", "X-Hop, keep-alive", "X-Hop", "hop-value",
		"Te", "trailers", "Accept-Encoding", "gzip, br", "X-Forwarded-Host", "evil.example")
	got := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, got)
	}
	// The upstream got the body byte for byte, but for the model.
	want := strings.Replace(body, `"model" : "test-model"`, `"model" : "real-model-v1"`, 1)
	if string(up.LastBody()) != want {
		t.Errorf("upstream body:\n got %s\nwant %s", up.LastBody(), want)
	}
	h := up.LastHeader()
	if h.Get("Authorization") != "Bearer sk-upstream-secret-1" {
		t.Errorf("upstream Authorization = %q", h.Get("Authorization"))
	}
	if h.Get("X-Request-Id") != "client-req-42" {
		t.Errorf("upstream X-Request-Id = %q", h.Get("X-Request-Id"))
	}
	if h.Get("Accept-Encoding") != "" && h.Get("Accept-Encoding") != "identity" {
		t.Errorf("Accept-Encoding forwarded: %q", h.Get("Accept-Encoding"))
	}
	// Hop-by-hop headers, those named in Connection, and anything else the
	// client sent that could change auth or routing upstream stay behind.
	for _, k := range []string{"Proxy-Authorization", "X-Hop", "Te", "X-Forwarded-Host"} {
		if v := h.Get(k); v != "" {
			t.Errorf("client header %s forwarded upstream: %q", k, v)
		}
	}
	if up.LastHost() != strings.TrimPrefix(up.URL, "http://") {
		t.Errorf("upstream Host %q, want its own %q", up.LastHost(), strings.TrimPrefix(up.URL, "http://"))
	}
	// The client got the upstream's bytes and headers.
	var c struct {
		Model   string
		Choices []struct{ Message struct{ Content string } }
	}
	if err := json.Unmarshal(got, &c); err != nil || c.Choices[0].Message.Content != "Hello there" || c.Model != "real-model-v1" {
		t.Errorf("client body %s (%v)", got, err)
	}
	for k, v := range map[string]string{
		"X-Upstream":                     "one",
		"X-Upstream-Request-Id":          "req_upstream_1",
		"X-Request-Id":                   "client-req-42",
		"X-Ratelimit-Remaining-Requests": "14370",
		"X-Ratelimit-Reset-Tokens":       "7.66s",
		"Content-Type":                   "application/json",
	} {
		if g := resp.Header.Get(k); g != v {
			t.Errorf("response header %s = %q, want %q", k, g, v)
		}
	}
	if strings.Contains(p.Logs(), "sk-upstream-secret-1") {
		t.Error("the upstream key appears in the logs")
	}
}

func TestGeneratedRequestID(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	resp := post(t, p.URL, simpleBody, "X-Request-Id", "bad id with spaces")
	readAll(t, resp)
	id := resp.Header.Get("X-Request-Id")
	if id == "" || strings.Contains(id, " ") {
		t.Fatalf("X-Request-Id = %q", id)
	}
	if up.LastHeader().Get("X-Request-Id") != id {
		t.Errorf("upstream got request id %q, client %q", up.LastHeader().Get("X-Request-Id"), id)
	}
	if !p.WaitLog(`"request_id":"` + id + `"`) {
		t.Errorf("log has no line with request id %s", id)
	}
}

// readEvents reads SSE events from r until EOF or error, sending each to ch.
func readEvent(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			return sb.String(), err
		}
		if line == "\n" || line == "\r\n" {
			return sb.String(), nil
		}
	}
}

func TestStreamFirstEventBeforeUpstreamFinishes(t *testing.T) {
	gate := make(chan struct{})
	up := newFake(t, sseHandler(streamScript{words: []string{"Hel", "lo", " world"}, usage: true, gate: gate}))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	resp := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() {
		ev, _ := readEvent(br)
		first <- ev
	}()
	select {
	case ev := <-first:
		if !strings.Contains(ev, `"Hel"`) {
			t.Fatalf("first event %q", ev)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("the first event did not reach the client while the upstream held the rest back: the stream is buffered")
	}
	close(gate)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading rest: %v", err)
	}
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("stream does not end with [DONE]: %q", rest)
	}
	if strings.Contains(string(rest), `"usage"`) {
		t.Errorf("the usage chunk the proxy asked for reached a client that did not ask: %q", rest)
	}
	if !bytes.Contains(up.LastBody(), []byte(`"include_usage":true`)) {
		t.Errorf("upstream was not asked for usage: %s", up.LastBody())
	}
}

func TestStreamUsageKeptWhenAsked(t *testing.T) {
	up := newFake(t, sseHandler(streamScript{words: []string{"a", "b"}, usage: true}))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	resp := post(t, p.URL, body)
	got := readAll(t, resp)
	if !strings.Contains(string(got), `"usage":{"prompt_tokens":12`) {
		t.Errorf("usage chunk missing: %s", got)
	}
	if string(up.LastBody()) != body {
		t.Errorf("body changed: %s", up.LastBody())
	}
}

func TestStreamWithoutDoneAfterFinishIsCompleted(t *testing.T) {
	up := newFake(t, sseHandler(streamScript{words: []string{"a"}, noDone: true}))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	got := readAll(t, post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if !strings.HasSuffix(string(got), "data: [DONE]\n\n") {
		t.Errorf("no [DONE] appended: %q", got)
	}
}

func TestStreamCutMidwayEndsWithInBandError(t *testing.T) {
	up := newFake(t, sseHandler(streamScript{words: []string{"a", "b", "c", "d"}, cutAfter: 2}))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	resp := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("the client saw a clean end of a cut stream")
	}
	if !strings.Contains(string(got), `data: {"error":{`) {
		t.Errorf("no in-band error event: %q", got)
	}
	if strings.Contains(string(got), "[DONE]") {
		t.Errorf("a cut stream ended with [DONE]: %q", got)
	}
}

// TestStreamEventErrorMidwayAborts: an "event: error" frame after the
// commit point is relayed (openai-python raises on it) and ends the
// stream as a failure: no [DONE], an aborted body, the attempt an error.
func TestStreamEventErrorMidwayAborts(t *testing.T) {
	up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, chunk("m", "hello", ""))
		io.WriteString(w, "event: error\ndata: {\"message\":\"shard lost\"}\n\n")
		io.WriteString(w, chunk("m", "", "stop")+"data: [DONE]\n\n") // what a broken server might still send
	})
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	resp := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, noStore...)
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("the client saw a clean end after an error frame")
	}
	if !strings.Contains(string(got), `"hello"`) || !strings.Contains(string(got), "event: error\ndata: {\"message\":\"shard lost\"}") {
		t.Errorf("the first chunk and the error frame were not relayed: %q", got)
	}
	if strings.Contains(string(got), "[DONE]") {
		t.Errorf("a stream that failed ended with [DONE]: %q", got)
	}
	if !p.WaitLog("shard lost") {
		t.Errorf("the request log does not say why the stream failed")
	}
}

func TestClientDisconnectClosesUpstream(t *testing.T) {
	var gone atomic.Bool
	words := make([]string, 200)
	for i := range words {
		words[i] = "w"
	}
	up := newFake(t, sseHandler(streamScript{words: words, delay: 20 * time.Millisecond, onWriteErr: func() { gone.Store(true) }}))
	// A long idle timeout, so that only the relay noticing the client can
	// close the upstream within the wait below.
	p := startProxy(t, testConfig("", strings.Replace(upstreamYAML("one", up.BaseURL(), "k", 1, ""), "idle_timeout: 2s", "idle_timeout: 60s", 1)))
	resp := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	br := bufio.NewReader(resp.Body)
	for i := 0; i < 2; i++ {
		if _, err := readEvent(br); err != nil {
			t.Fatal(err)
		}
	}
	resp.Body.Close()
	httpClient.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for !gone.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !gone.Load() {
		t.Fatal("the upstream connection stayed open after the client went away")
	}
}

func TestBadInput(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("max_body_bytes: 2048\n", upstreamYAML("one", up.BaseURL(), "k", 1,
		"    models: {known: real}\n")))
	cases := []struct {
		name, method, path, ctype, body string
		status                          int
		code                            string
	}{
		{"unknown path", "GET", "/v1/nope", "", "", 404, "not_found"},
		{"wrong method", "GET", "/v1/chat/completions", "", "", 405, "method_not_allowed"},
		{"models wrong method", "POST", "/v1/models", "application/json", "{}", 405, "method_not_allowed"},
		{"malformed json", "POST", "/v1/chat/completions", "application/json", `{"model":`, 400, "invalid_json"},
		{"empty body", "POST", "/v1/chat/completions", "application/json", ``, 400, "invalid_json"},
		{"not an object", "POST", "/v1/chat/completions", "application/json", `[1,2]`, 400, "invalid_json"},
		{"missing model", "POST", "/v1/chat/completions", "application/json", `{"messages":[]}`, 400, "missing_required_parameter"},
		{"missing messages", "POST", "/v1/chat/completions", "application/json", `{"model":"known"}`, 400, "missing_required_parameter"},
		{"wrong content type", "POST", "/v1/chat/completions", "text/plain", simpleBody, 415, "unsupported_media_type"},
		{"unknown model", "POST", "/v1/chat/completions", "application/json", `{"model":"nope","messages":[]}`, 404, "model_not_found"},
		{"too large", "POST", "/v1/chat/completions", "application/json", `{"model":"known","messages":[{"role":"user","content":"` + strings.Repeat("a", 4096) + `"}]}`, 413, "request_too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, p.URL+tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b := readAll(t, resp)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if _, _, code := apiErr(t, b); code != tc.code {
				t.Errorf("code %q, want %q", code, tc.code)
			}
		})
	}
	if up.Calls() != 0 {
		t.Errorf("bad input reached the upstream %d times", up.Calls())
	}
}

func TestModelsAndHealthz(t *testing.T) {
	p := startProxy(t, testConfig("",
		upstreamYAML("one", "http://127.0.0.1:1/v1", "k", 1, "    models: {b-model: x, a-model: y}\n"),
		upstreamYAML("two", "http://127.0.0.1:1/v1", "", 2, "    models: {c-model: z}\n")))
	resp, err := httpClient.Get(p.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Object string
		Data   []struct{ ID, Object string }
	}
	if err := json.Unmarshal(readAll(t, resp), &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	if list.Object != "list" || strings.Join(ids, ",") != "a-model,b-model,c-model" {
		t.Errorf("models = %+v", list)
	}
	resp, err = httpClient.Get(p.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Errorf("healthz %d", resp.StatusCode)
	}
	// An upstream without a key is reported, and a model only it serves gets 503.
	r := post(t, p.URL, `{"model":"c-model","messages":[]}`)
	b := readAll(t, r)
	if r.StatusCode != 503 {
		t.Errorf("unconfigured-only model: status %d %s", r.StatusCode, b)
	}
}

func TestShippedConfigStartsWithoutKeys(t *testing.T) {
	cmd := startShipped(t)
	resp, err := httpClient.Get(cmd.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Upstreams []struct {
			Name       string
			Configured bool
		}
	}
	if err := json.Unmarshal(readAll(t, resp), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Upstreams) != 5 {
		t.Fatalf("upstreams %+v", st.Upstreams)
	}
	for _, u := range st.Upstreams {
		if u.Configured {
			t.Errorf("%s configured without a key", u.Name)
		}
	}
}

func startShipped(t *testing.T) *proxyProc {
	t.Helper()
	b, err := readFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Drop the env-driven listen line: the harness passes -listen.
	return startProxy(t, string(b), "GROQ_API_KEY_1=", "GROQ_API_KEY_2=", "GROQ_API_KEY_3=", "HF_API_KEY_1=", "HF_API_KEY_2=")
}

func TestGracefulShutdownFinishesStreams(t *testing.T) {
	words := make([]string, 10)
	for i := range words {
		words[i] = "w"
	}
	up := newFake(t, sseHandler(streamScript{words: words, delay: 100 * time.Millisecond}))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	resp := post(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	br := bufio.NewReader(resp.Body)
	if _, err := readEvent(br); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGTERM)
	rest, err := io.ReadAll(br)
	resp.Body.Close()
	if err != nil || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("stream did not finish during shutdown: err=%v rest=%q", err, rest)
	}
	code, ok := p.WaitExit(10 * time.Second)
	if !ok || code != 0 {
		t.Fatalf("exit code %d (exited %v)", code, ok)
	}
	// New connections are refused once it stopped.
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(p.URL, "http://"), time.Second); err == nil {
		c.Close()
		t.Error("still accepting after shutdown")
	}
}
