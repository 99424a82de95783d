package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEndpointsRouteOnlyToUpstreamsServingThem: a request goes only to the
// upstreams whose endpoints list its endpoint, at that endpoint's path;
// one no upstream serves gets a 404 naming why; legacy completions pass
// through where listed; route labels are per endpoint.
func TestEndpointsRouteOnlyToUpstreamsServingThem(t *testing.T) {
	chatOnly := newFake(t, okJSON("chat only"))
	embed := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/embeddings":
			_, _ = w.Write([]byte(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}`))
		case "/v1/completions":
			_, _ = w.Write([]byte(`{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"text":" there","index":0,"logprobs":null,"finish_reason":"stop"}]}`))
		default:
			okJSON("from embed")(w, r)
		}
	})
	p := startProxy(t, testConfig("",
		upstreamYAML("chatonly", chatOnly.BaseURL(), "k1", 1, "    endpoints: [chat/completions]\n"),
		upstreamYAML("embed", embed.BaseURL(), "k2", 2, "    endpoints: [chat/completions, embeddings, completions]\n")))

	const embBody = `{"model":"test-model","input":"hello"}`
	for i, want := range []string{"MISS", "HIT"} {
		resp := postTo(t, p.URL+"/v1/embeddings", embBody)
		b := readAll(t, resp)
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"embedding":[0.1,0.2]`) {
			t.Fatalf("embeddings #%d: %d %s", i, resp.StatusCode, b)
		}
		if got := resp.Header.Get("X-Cache"); got != want {
			t.Errorf("embeddings #%d: X-Cache %q, want %q", i, got, want)
		}
	}
	if chatOnly.Calls() != 0 || embed.Calls() != 1 || embed.LastPath() != "/v1/embeddings" {
		t.Fatalf("calls: chatonly %d, embed %d at %s; want only embed's /v1/embeddings, once", chatOnly.Calls(), embed.Calls(), embed.LastPath())
	}
	// The same JSON sent to chat is another question (and not a valid chat
	// request): never the embeddings entry.
	resp := post(t, p.URL, embBody)
	if b := readAll(t, resp); resp.StatusCode != 400 {
		t.Errorf("chat with an embeddings body: %d %s, want 400 (no messages)", resp.StatusCode, b)
	}

	resp = postTo(t, p.URL+"/openai/v1/completions", `{"model":"test-model","prompt":"hi"}`)
	if b := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(string(b), `"text":" there"`) || embed.LastPath() != "/v1/completions" {
		t.Errorf("legacy completions: %d %s at %s", resp.StatusCode, b, embed.LastPath())
	}
	if resp.Header.Get("X-Cache") != "BYPASS" {
		t.Errorf("legacy completions X-Cache %q, want BYPASS (not cached)", resp.Header.Get("X-Cache"))
	}

	resp = postTo(t, p.URL+"/v1/embeddings", `{"model":"test-model"}`)
	b := readAll(t, resp)
	if _, _, code := apiErr(t, b); resp.StatusCode != 400 || code != "missing_required_parameter" {
		t.Errorf("embeddings without input: %d %s", resp.StatusCode, b)
	}

	for name, want := range map[string]float64{
		`switchyard_requests_total{route="embeddings",status="200"}`:  2,
		`switchyard_requests_total{route="completions",status="200"}`: 1,
	} {
		if got := scrape(t, p.URL, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if !p.WaitLog(`"route":"embeddings"`) {
		t.Errorf("no request log line with route embeddings")
	}
}

// legacyScript is what a legacy-completions fake (legacyHandler) does.
type legacyScript struct {
	words    []string
	delay    time.Duration // before each stream event
	cut      bool          // reset the connection after cutAfter events
	cutAfter int
}

// legacyHandler answers /v1/completions the way OpenAI documents the
// legacy endpoint (https://platform.openai.com/docs/api-reference/completions/create
// and https://platform.openai.com/docs/api-reference/completions/object):
// a plain "text_completion" object, or with "stream": true data-only SSE
// events, each a "text_completion" object whose choices carry "text",
// "index", "logprobs" and "finish_reason" (null until the last), then with
// stream_options.include_usage one more event with "choices": [] and the
// usage (every other event then has "usage": null), then data: [DONE].
func legacyHandler(s legacyScript) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/completions" {
			statusHandler(404, `{"error":{"message":"Invalid URL","type":"invalid_request_error","param":null,"code":null}}`)(w, r)
			return
		}
		var req struct {
			Model         string `json:"model"`
			Stream        bool   `json:"stream"`
			StreamOptions *struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		groqHeaders(w)
		w.Header().Set("X-Request-Id", "req_legacy_1")
		usage := `"usage":{"prompt_tokens":5,"completion_tokens":` + strconv.Itoa(len(s.words)) + `,"total_tokens":` + strconv.Itoa(5+len(s.words)) + `}`
		head := fmt.Sprintf(`"id":"cmpl-legacy","object":"text_completion","created":1732000000,"model":%q`, req.Model)
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{%s,"choices":[{"text":%q,"index":0,"logprobs":null,"finish_reason":"stop"}],%s}`, head, strings.Join(s.words, ""), usage)
			return
		}
		withUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
		nullUsage := ""
		if withUsage {
			nullUsage = `,"usage":null`
		}
		var events []string
		for _, word := range s.words {
			events = append(events, fmt.Sprintf(`{%s,"choices":[{"text":%q,"index":0,"logprobs":null,"finish_reason":null}]%s}`, head, word, nullUsage))
		}
		events = append(events, fmt.Sprintf(`{%s,"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}]%s}`, head, nullUsage))
		if withUsage {
			events = append(events, fmt.Sprintf(`{%s,"choices":[],%s}`, head, usage))
		}
		events = append(events, "[DONE]")
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		fl.Flush()
		for i, ev := range events {
			if s.cut && i == s.cutAfter {
				if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
					conn.Close()
				}
				return
			}
			select {
			case <-time.After(s.delay):
			case <-r.Context().Done():
				return
			}
			if _, err := io.WriteString(w, "data: "+ev+"\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

const legacyBody = `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7,"temperature":0}`

// TestLegacyCompletionsPlainPassedThroughUncached: a plain legacy
// completion reaches the client byte for byte, and is never cached: the
// same request twice goes upstream twice, X-Cache BYPASS.
func TestLegacyCompletionsPlainPassedThroughUncached(t *testing.T) {
	up := newFake(t, legacyHandler(legacyScript{words: []string{"This", " is", " a", " test."}}))
	p := startProxy(t, testConfig("", upstreamYAML("oai", up.BaseURL(), "k", 1, "    endpoints: [completions]\n")))
	for i := range 2 {
		resp := postTo(t, p.URL+"/v1/completions", legacyBody)
		got := readAll(t, resp)
		want := `{"id":"cmpl-legacy","object":"text_completion","created":1732000000,"model":"gpt-3.5-turbo-instruct","choices":[{"text":"This is a test.","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}`
		if resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("#%d: status %d: %s", i, resp.StatusCode, got)
		}
		if resp.Header.Get("X-Cache") != "BYPASS" || resp.Header.Get("X-Upstream") != "oai" {
			t.Errorf("#%d: X-Cache %q X-Upstream %q, want BYPASS oai", i, resp.Header.Get("X-Cache"), resp.Header.Get("X-Upstream"))
		}
		if string(up.LastBody()) != legacyBody || up.LastPath() != "/v1/completions" {
			t.Errorf("#%d: upstream got %s at %s", i, up.LastBody(), up.LastPath())
		}
	}
	if up.Calls() != 2 {
		t.Errorf("upstream called %d times, want 2 (legacy completions are not cached)", up.Calls())
	}
}

// TestLegacyCompletionsStreamRelayedEventByEvent: text completion chunks
// reach the client as the upstream sends them (the first long before the
// last), the usage chunk the proxy asked for is stripped from a client
// that did not ask, and kept for one that did.
func TestLegacyCompletionsStreamRelayedEventByEvent(t *testing.T) {
	const delay = 250 * time.Millisecond
	words := []string{"This", " is", " a", " test."}
	up := newFake(t, legacyHandler(legacyScript{words: words, delay: delay}))
	p := startProxy(t, testConfig("", upstreamYAML("oai", up.BaseURL(), "k", 1, "    endpoints: [completions]\n")))

	start := time.Now()
	resp := postTo(t, p.URL+"/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","stream":true}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") || resp.Header.Get("X-Cache") != "BYPASS" {
		t.Fatalf("status %d Content-Type %q X-Cache %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("X-Cache"))
	}
	br := bufio.NewReader(resp.Body)
	var events []string
	var firstAt time.Duration
	for range 20 {
		ev, err := readEvent(br)
		if err != nil {
			t.Fatalf("after %d events: %v", len(events), err)
		}
		if len(events) == 0 {
			firstAt = time.Since(start)
		}
		events = append(events, ev)
		if ev == "data: [DONE]\n\n" {
			break
		}
	}
	endAt := time.Since(start)
	// The fake waits delay before each of its 6 events: the first leaves
	// it at ~1 delay, the last at ~6.
	if firstAt > endAt-3*delay {
		t.Errorf("first event at %v, [DONE] at %v: the stream was buffered", firstAt, endAt)
	}
	if len(events) != len(words)+2 || !strings.Contains(events[0], `"text":"This"`) || !strings.Contains(events[len(words)], `"finish_reason":"stop"`) {
		t.Fatalf("events: %q", events)
	}
	for _, ev := range events {
		if strings.Contains(ev, `"usage"`) {
			t.Errorf("usage reached a client that did not ask for it: %q", ev)
		}
	}
	if !strings.Contains(string(up.LastBody()), `"include_usage":true`) {
		t.Errorf("upstream was not asked for usage: %s", up.LastBody())
	}

	resp = postTo(t, p.URL+"/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","stream":true,"stream_options":{"include_usage":true}}`)
	got := string(readAll(t, resp))
	if !strings.Contains(got, `"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}`) || !strings.HasSuffix(got, "data: [DONE]\n\n") {
		t.Errorf("client asking for usage: %q", got)
	}
	if up.Calls() != 2 {
		t.Errorf("upstream called %d times, want 2", up.Calls())
	}
}

// TestLegacyCompletionsFailoverBeforeCommit: a first upstream failing
// before any text reaches the client (an error status, an in-band error
// event before the first chunk) is invisible: the second answers.
func TestLegacyCompletionsFailoverBeforeCommit(t *testing.T) {
	cases := []struct {
		name   string
		stream bool
		a      http.HandlerFunc
	}{
		{"plain, 500", false, statusHandler(500, `{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}`)},
		{"stream, 503", true, statusHandler(503, `{"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}`)},
		{"stream, error event before the first chunk", true, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\",\"code\":null}}\n\n")
		}},
		{"stream, cut before the first chunk", true, legacyHandler(legacyScript{words: []string{"never"}, cut: true})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newFake(t, c.a)
			b := newFake(t, legacyHandler(legacyScript{words: []string{"from", " b"}}))
			p := startProxy(t, testConfig("",
				upstreamYAML("a", a.BaseURL(), "ka", 1, "    endpoints: [completions]\n"),
				upstreamYAML("b", b.BaseURL(), "kb", 2, "    endpoints: [completions]\n")))
			body := legacyBody
			if c.stream {
				body = `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","stream":true}`
			}
			resp := postTo(t, p.URL+"/v1/completions", body)
			got := string(readAll(t, resp))
			if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "b" || resp.Header.Get("X-Attempts") != "2" || strings.Contains(got, "error") {
				t.Fatalf("status %d X-Upstream %q X-Attempts %q: %q", resp.StatusCode, resp.Header.Get("X-Upstream"), resp.Header.Get("X-Attempts"), got)
			}
			if want := `"text":"from b"`; !c.stream && !strings.Contains(got, want) {
				t.Errorf("answer %q lacks %s", got, want)
			}
			if c.stream && (!strings.Contains(got, `"text":" b"`) || !strings.HasSuffix(got, "data: [DONE]\n\n")) {
				t.Errorf("stream %q", got)
			}
			if a.Calls() != 1 || b.Calls() != 1 {
				t.Errorf("calls a=%d b=%d", a.Calls(), b.Calls())
			}
		})
	}
}

// TestLegacyCompletionsInBandErrorAfterCommit: once text reached the
// client, an upstream cut ends the stream with an in-band error event and
// an aborted body, never [DONE], and no other upstream is tried.
func TestLegacyCompletionsInBandErrorAfterCommit(t *testing.T) {
	a := newFake(t, legacyHandler(legacyScript{words: []string{"This", " is", " a", " test."}, cut: true, cutAfter: 2}))
	b := newFake(t, legacyHandler(legacyScript{words: []string{"from b"}}))
	p := startProxy(t, testConfig("",
		upstreamYAML("a", a.BaseURL(), "ka", 1, "    endpoints: [completions]\n"),
		upstreamYAML("b", b.BaseURL(), "kb", 2, "    endpoints: [completions]\n")))
	resp := postTo(t, p.URL+"/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","stream":true}`)
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Error("the client saw a clean end of a cut stream")
	}
	s := string(got)
	if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "a" || !strings.Contains(s, `"text":"This"`) || !strings.Contains(s, `"text":" is"`) {
		t.Fatalf("status %d X-Upstream %q: %q", resp.StatusCode, resp.Header.Get("X-Upstream"), s)
	}
	if !strings.Contains(s, `data: {"error":{`) || strings.Contains(s, "[DONE]") {
		t.Errorf("want an in-band error event and no [DONE]: %q", s)
	}
	if b.Calls() != 0 {
		t.Errorf("b called %d times after the commit", b.Calls())
	}
}

// TestLegacyCompletionsJSONAnswerToStreamRelayedAsIs: an upstream that
// answers a legacy stream request with a plain text_completion gets it
// relayed as it is: the chat conversion (a chat.completion into chunks)
// must not touch another endpoint's answer.
func TestLegacyCompletionsJSONAnswerToStreamRelayedAsIs(t *testing.T) {
	const answer = `{"id":"cmpl-1","object":"text_completion","created":1732000000,"model":"m","choices":[{"text":"plain","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`
	up := newFake(t, statusHandler(200, answer))
	p := startProxy(t, testConfig("", upstreamYAML("oai", up.BaseURL(), "k", 1, "    endpoints: [completions]\n")))
	resp := postTo(t, p.URL+"/v1/completions", `{"model":"m","prompt":"hi","stream":true}`)
	got := readAll(t, resp)
	if resp.StatusCode != 200 || string(got) != answer || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("status %d Content-Type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), got)
	}
}
