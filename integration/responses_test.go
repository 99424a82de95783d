package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The Responses API (POST /v1/responses) as two providers serve it.
//
// Groq ("fully compatible with OpenAI's Responses API", and stateless: "The
// Responses API on Groq doesn't support stateful conversations yet";
// https://console.groq.com/docs/responses-api) answers as OpenAI's
// reference says (https://platform.openai.com/docs/api-reference/responses,
// .../responses-streaming): a plain answer is a response object; a stream
// is typed events, each an "event: <type>" line and a data object with
// "type" and "sequence_number": response.created, response.in_progress,
// response.output_item.added, response.content_part.added,
// response.output_text.delta…, response.output_text.done,
// response.content_part.done, response.output_item.done,
// response.completed (the whole response, usage included), and no
// "data: [DONE]". A failure is an "error" event ({"type":"error","code",
// "message","param","sequence_number"}).
//
// HuggingFace's router (https://huggingface.co/docs/inference-providers/
// guides/responses-api) runs huggingface/responses.js
// (src/routes/responses.ts): the same events as data lines only ("data:
// {json}\n\n", no "event:" line), no [DONE]; a run that fails ends with
// response.failed, whose response.error is {"code":"server_error",
// "message"}; a plain answer is the final response object, a failed run
// included (HTTP 200, "status":"failed"). It is stateless too
// (src/schemas.ts: previous_response_id and store are not supported).

// respFake scripts a fake upstream's /v1/responses; its other paths answer
// as okJSON does.
type respFake struct {
	dialect string // "groq" (event: lines) or "hf" (data only)
	prefix  string // response ids are <prefix>_<n>, n counting this fake's answers
	words   []string
	delay   time.Duration // before each event
	gate    chan struct{} // if set, wait for it after the first delta
	// status, when not 0 (nor 200), is answered with an OpenAI error body.
	status int
	// afterPreamble ends a stream right after response.created and
	// response.in_progress: "error" (an error event), "failed"
	// (response.failed) or "cut" (the body ends).
	afterPreamble string
	// afterDeltas > 0 ends a stream after that many deltas: with an error
	// event when errorEvent is set, else by ending the body (a cut).
	afterDeltas int
	errorEvent  bool
	// plainFailed answers a plain request as HuggingFace does a failed
	// run: HTTP 200, "status":"failed", an error object.
	plainFailed bool

	n       *atomic.Int64
	created *sync.Map // id → model of each response this fake created and still keeps
}

const (
	respUsage       = `{"input_tokens":21,"input_tokens_details":{"cached_tokens":0},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":28}`
	respInputTokens = 21
	respOutTokens   = 7
)

// respObject is a response object as OpenAI documents it.
func respObject(id, model, status, text string) string {
	output, usage, errv := "[]", "null", "null"
	switch status {
	case "completed":
		output = fmt.Sprintf(`[{"type":"message","id":"msg_%s","status":"completed","role":"assistant","content":[{"type":"output_text","text":%q,"annotations":[]}]}]`, id, text)
		usage = respUsage
	case "failed":
		errv = `{"code":"server_error","message":"An error occurred in stream"}`
	}
	return fmt.Sprintf(`{"id":%q,"object":"response","created_at":1741476542,"status":%q,"error":%s,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":%q,"output":%s,"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":%s,"user":null,"metadata":{}}`,
		id, status, errv, model, output, usage)
}

// respEvent is one event in the dialect's framing.
func respEvent(dialect, typ string, seq int, members string) string {
	data := fmt.Sprintf(`{"type":%q,"sequence_number":%d,%s}`, typ, seq, members)
	if dialect == "hf" {
		return "data: " + data + "\n\n"
	}
	return "event: " + typ + "\ndata: " + data + "\n\n"
}

// respStream is a complete stream of the answer words.
func respStream(dialect, id, model string, words []string) []string {
	var evs []string
	add := func(typ, members string) { evs = append(evs, respEvent(dialect, typ, len(evs), members)) }
	text := strings.Join(words, "")
	msg := "msg_" + id
	add("response.created", `"response":`+respObject(id, model, "in_progress", ""))
	add("response.in_progress", `"response":`+respObject(id, model, "in_progress", ""))
	add("response.output_item.added", fmt.Sprintf(`"output_index":0,"item":{"type":"message","id":%q,"status":"in_progress","role":"assistant","content":[]}`, msg))
	add("response.content_part.added", fmt.Sprintf(`"item_id":%q,"output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}`, msg))
	for _, w := range words {
		add("response.output_text.delta", fmt.Sprintf(`"item_id":%q,"output_index":0,"content_index":0,"delta":%q`, msg, w))
	}
	add("response.output_text.done", fmt.Sprintf(`"item_id":%q,"output_index":0,"content_index":0,"text":%q`, msg, text))
	add("response.content_part.done", fmt.Sprintf(`"item_id":%q,"output_index":0,"content_index":0,"part":{"type":"output_text","text":%q,"annotations":[]}`, msg, text))
	add("response.output_item.done", fmt.Sprintf(`"output_index":0,"item":{"type":"message","id":%q,"status":"completed","role":"assistant","content":[{"type":"output_text","text":%q,"annotations":[]}]}`, msg, text))
	add("response.completed", `"response":`+respObject(id, model, "completed", text))
	return evs
}

// respFailure is how the dialect fails a run at sequence number seq: an
// error event (Groq, as OpenAI) or response.failed (HuggingFace).
func respFailure(dialect, id, model string, seq int) string {
	if dialect == "hf" {
		return respEvent(dialect, "response.failed", seq, `"response":`+respObject(id, model, "failed", ""))
	}
	return respEvent(dialect, "error", seq, `"code":"server_error","message":"The server had an error processing your request.","param":null`)
}

func (s respFake) handler() http.HandlerFunc {
	if s.n == nil {
		s.n = new(atomic.Int64)
	}
	if s.dialect == "" {
		s.dialect = "groq"
	}
	if s.created == nil {
		s.created = new(sync.Map)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/responses/"); ok {
			s.storedOp(w, r, rest)
			return
		}
		if r.URL.Path != "/v1/responses" {
			okJSON("a chat answer")(w, r)
			return
		}
		var req struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		if s.status != 0 && s.status != 200 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(s.status)
			switch s.status {
			case 400:
				io.WriteString(w, `{"error":{"message":"'input' : value must be a string or an array","type":"invalid_request_error","param":"input","code":null}}`)
			case 429:
				io.WriteString(w, `{"error":{"message":"Rate limit reached for model on tokens per minute (TPM): Limit 6000, Used 5990, Requested 120. Please try again in 1.1s.","type":"tokens","code":"rate_limit_exceeded"}}`)
			default:
				io.WriteString(w, `{"error":{"message":"Internal server error","type":"internal_server_error","param":null,"code":null}}`)
			}
			return
		}
		id := fmt.Sprintf("%s_%d", s.prefix, s.n.Add(1))
		s.created.Store(id, req.Model)
		groqHeaders(w)
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			status := "completed"
			if s.plainFailed {
				status = "failed"
			}
			io.WriteString(w, respObject(id, req.Model, status, strings.Join(s.words, "")))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		fl.Flush()
		evs := respStream(s.dialect, id, req.Model, s.words)
		switch {
		case s.afterPreamble != "":
			evs = evs[:2]
			if s.afterPreamble != "cut" {
				evs = append(evs, respFailure(s.dialect, id, req.Model, 2))
			}
		case s.afterDeltas > 0:
			evs = evs[:4+s.afterDeltas]
			if s.errorEvent {
				evs = append(evs, respFailure(s.dialect, id, req.Model, len(evs)))
			}
		}
		for i, ev := range evs {
			if s.delay > 0 {
				select {
				case <-time.After(s.delay):
				case <-r.Context().Done():
					return
				}
			}
			if _, err := io.WriteString(w, ev); err != nil {
				return
			}
			fl.Flush()
			if i == 4 && s.gate != nil {
				select {
				case <-s.gate:
				case <-time.After(5 * time.Second):
				}
			}
		}
	}
}

// storedOp answers an operation on a response this fake created, as
// OpenAI's reference documents them (https://platform.openai.com/docs/
// api-reference/responses/get, .../delete, .../cancel, .../input-items):
//
//	GET    {id}              the response object
//	DELETE {id}              {"id":…,"object":"response","deleted":true}
//	POST   {id}/cancel       the response object, "status":"cancelled"
//	GET    {id}/input_items  {"object":"list","data":[…],"first_id","last_id","has_more"}
//
// and an id it does not keep with a 404 and OpenAI's error object
// ("Response with id '…' not found."). Groq and HuggingFace's router keep
// no state (see the top of this file) and do not serve these; OpenAI
// does, and so do vLLM and the other servers that store responses.
func (s respFake) storedOp(w http.ResponseWriter, r *http.Request, rest string) {
	id, op, _ := strings.Cut(rest, "/")
	w.Header().Set("Content-Type", "application/json")
	if s.status != 0 && s.status != 200 {
		w.WriteHeader(s.status)
		io.WriteString(w, `{"error":{"message":"Internal server error","type":"internal_server_error","param":null,"code":null}}`)
		return
	}
	model, ok := s.created.Load(id)
	if !ok {
		w.WriteHeader(404)
		fmt.Fprintf(w, `{"error":{"message":"Response with id '%s' not found.","type":"invalid_request_error","param":null,"code":null}}`, id)
		return
	}
	text := strings.Join(s.words, "")
	switch {
	case op == "" && r.Method == http.MethodGet:
		io.WriteString(w, respObject(id, model.(string), "completed", text))
	case op == "" && r.Method == http.MethodDelete:
		s.created.Delete(id)
		fmt.Fprintf(w, `{"id":%q,"object":"response","deleted":true}`, id)
	case op == "cancel" && r.Method == http.MethodPost:
		io.WriteString(w, strings.Replace(respObject(id, model.(string), "in_progress", ""), `"status":"in_progress"`, `"status":"cancelled"`, 1))
	case op == "input_items" && r.Method == http.MethodGet:
		fmt.Fprintf(w, `{"object":"list","data":[{"id":"msg_in_%s","type":"message","role":"user","status":"completed","content":[{"type":"input_text","text":"first"}]}],"first_id":"msg_in_%s","last_id":"msg_in_%s","has_more":false}`, id, id, id)
	default:
		w.WriteHeader(405)
		io.WriteString(w, `{"error":{"message":"Method not allowed.","type":"invalid_request_error","param":null,"code":null}}`)
	}
}

// postResponses posts body to the proxy's /v1/responses.
func postResponses(t *testing.T, url, body string, hdr ...string) *http.Response {
	t.Helper()
	return postTo(t, url+"/v1/responses", body, hdr...)
}

// sseEvents splits a stream into its events (each ending with its blank
// line).
func sseEvents(stream string) []string {
	var out []string
	for stream != "" {
		i := strings.Index(stream, "\n\n")
		if i < 0 {
			return append(out, stream)
		}
		out = append(out, stream[:i+2])
		stream = stream[i+2:]
	}
	return out
}

// eventData decodes an event's data line.
func eventData(t *testing.T, ev string) map[string]any {
	t.Helper()
	for _, line := range strings.Split(ev, "\n") {
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			var m map[string]any
			if err := json.Unmarshal([]byte(d), &m); err != nil {
				t.Fatalf("event data is not JSON: %q", ev)
			}
			return m
		}
	}
	t.Fatalf("event without data: %q", ev)
	return nil
}

// responseID reads the id of a plain answer.
func responseID(t *testing.T, body []byte) string {
	t.Helper()
	var v struct{ ID string }
	if err := json.Unmarshal(body, &v); err != nil || v.ID == "" {
		t.Fatalf("not a response object: %s", body)
	}
	return v.ID
}

var helloWords = []string{"The Moon", " drifts", " 3.8 cm", " away each year."}

// TestResponsesPlain: a plain request reaches the upstream at /v1/responses
// with only the model renamed; its answer reaches the client unchanged;
// its usage counts as tokens; the route label and log say responses.
func TestResponsesPlain(t *testing.T) {
	up := newFake(t, respFake{prefix: "resp_g", words: helloWords}.handler())
	p := startProxy(t, testConfig("", upstreamYAML("groq", up.BaseURL(), "k", 1, "    models:\n      moon: llama-3.3-70b-versatile\n")))
	body := `{"model":"moon","input":"Tell me a fun fact about the moon in one sentence.","temperature":0.2}`
	resp := postResponses(t, p.URL, body)
	got := readAll(t, resp)
	if want := respObject("resp_g_1", "llama-3.3-70b-versatile", "completed", strings.Join(helloWords, "")); resp.StatusCode != 200 || string(got) != want {
		t.Fatalf("status %d, body\n%s\nwant the upstream's\n%s", resp.StatusCode, got, want)
	}
	if want := strings.Replace(body, `"moon"`, `"llama-3.3-70b-versatile"`, 1); string(up.LastBody()) != want || up.LastPath() != "/v1/responses" {
		t.Errorf("upstream got %s at %s, want %s at /v1/responses", up.LastBody(), up.LastPath(), want)
	}
	if resp.Header.Get("X-Upstream") != "groq" || resp.Header.Get("X-Cache") != "BYPASS" || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("headers: X-Upstream %q X-Cache %q X-Request-Id %q", resp.Header.Get("X-Upstream"), resp.Header.Get("X-Cache"), resp.Header.Get("X-Request-Id"))
	}
	for name, want := range map[string]float64{
		`switchyard_requests_total{route="responses",status="200"}`:  1,
		`switchyard_tokens_total{upstream="groq",kind="prompt"}`:     respInputTokens,
		`switchyard_tokens_total{upstream="groq",kind="completion"}`: respOutTokens,
	} {
		if got := scrape(t, p.URL, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if !p.WaitLog(`"route":"responses","status":200`) {
		t.Errorf("no request log line for route responses")
	}
}

// TestResponsesStream: a stream, in either dialect, reaches the client event
// by event (the first delta while the upstream holds the rest back),
// byte for byte as the upstream sent it, and its usage (from
// response.completed) counts as tokens.
func TestResponsesStream(t *testing.T) {
	for _, dialect := range []string{"groq", "hf"} {
		t.Run(dialect, func(t *testing.T) {
			gate := make(chan struct{})
			up := newFake(t, respFake{dialect: dialect, prefix: "resp_s", words: helloWords, gate: gate}.handler())
			p := startProxy(t, testConfig("", upstreamYAML("up", up.BaseURL(), "k", 1, "")))
			resp := postResponses(t, p.URL, `{"model":"m","input":"Tell me about the moon.","stream":true}`)
			defer resp.Body.Close()
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d, content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			br := bufio.NewReader(resp.Body)
			var sb strings.Builder
			firstDelta := make(chan error, 1)
			go func() {
				for {
					ev, err := readEvent(br)
					sb.WriteString(ev)
					if err != nil || strings.Contains(ev, "response.output_text.delta") {
						firstDelta <- err
						return
					}
				}
			}()
			select {
			case err := <-firstDelta:
				if err != nil {
					t.Fatalf("reading to the first delta: %v", err)
				}
			case <-time.After(4 * time.Second):
				t.Fatal("the first delta did not reach the client while the upstream held the rest back: the stream is buffered")
			}
			close(gate)
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("reading the rest: %v", err)
			}
			want := strings.Join(respStream(dialect, "resp_s_1", "m", helloWords), "")
			if got := sb.String() + string(rest); got != want {
				t.Errorf("stream\n%q\nwant the upstream's bytes\n%q", got, want)
			}
			if strings.Contains(string(up.LastBody()), "stream_options") {
				t.Errorf("the proxy added stream_options to a Responses body: %s", up.LastBody())
			}
			for name, want := range map[string]float64{
				`switchyard_tokens_total{upstream="up",kind="prompt"}`:     respInputTokens,
				`switchyard_tokens_total{upstream="up",kind="completion"}`: respOutTokens,
			} {
				if got := scrape(t, p.URL, name); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
		})
	}
}

// TestResponsesFailoverBeforeCommit: an upstream that fails before its
// first output (after its preamble, in either dialect's way, or with a 500)
// hands over to the next one invisibly: the client gets the second
// upstream's stream, byte for byte, and nothing of the first. In commit
// mode complete, a stream cut after output fails over too.
func TestResponsesFailoverBeforeCommit(t *testing.T) {
	cases := []struct {
		name string
		a    respFake
		hdr  []string
	}{
		{"groq error event after the preamble", respFake{dialect: "groq", afterPreamble: "error"}, nil},
		{"hf response.failed after the preamble", respFake{dialect: "hf", afterPreamble: "failed"}, nil},
		{"body ends after the preamble", respFake{dialect: "groq", afterPreamble: "cut"}, nil},
		{"HTTP 500", respFake{status: 500}, nil},
		{"commit mode complete: cut after output", respFake{dialect: "hf", afterDeltas: 2}, []string{"X-Stream-Commit", "complete"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.a.prefix, tc.a.words = "resp_first", helloWords
			a := newFake(t, tc.a.handler())
			b := newFake(t, respFake{prefix: "resp_second", words: helloWords}.handler())
			p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "k1", 1, ""), upstreamYAML("b", b.BaseURL(), "k2", 2, "")))
			resp := postResponses(t, p.URL, `{"model":"m","input":"hi","stream":true}`, tc.hdr...)
			got := readAll(t, resp)
			if want := strings.Join(respStream("groq", "resp_second_1", "m", helloWords), ""); resp.StatusCode != 200 || string(got) != want {
				t.Fatalf("status %d, stream\n%q\nwant b's\n%q", resp.StatusCode, got, want)
			}
			if a.Calls() != 1 || b.Calls() != 1 {
				t.Errorf("calls a=%d b=%d, want 1 each", a.Calls(), b.Calls())
			}
			if resp.Header.Get("X-Upstream") != "b" || resp.Header.Get("X-Attempts") != "2" {
				t.Errorf("X-Upstream %q X-Attempts %q, want b, 2", resp.Header.Get("X-Upstream"), resp.Header.Get("X-Attempts"))
			}
		})
	}
}

// TestResponsesPlainFailures: the failure table reads Responses answers as
// chat's: a failed run inside a 200 (HuggingFace) and a 429 fail over; a
// 400 is the client's, relayed at once.
func TestResponsesPlainFailures(t *testing.T) {
	cases := []struct {
		name      string
		a         respFake
		failsOver bool
		status    int
	}{
		{"HF failed run in a 200", respFake{dialect: "hf", plainFailed: true}, true, 200},
		{"429", respFake{status: 429}, true, 200},
		{"400", respFake{status: 400}, false, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.a.prefix, tc.a.words = "resp_a", helloWords
			a := newFake(t, tc.a.handler())
			b := newFake(t, respFake{prefix: "resp_b", words: helloWords}.handler())
			p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "k1", 1, ""), upstreamYAML("b", b.BaseURL(), "k2", 2, "")))
			resp := postResponses(t, p.URL, `{"model":"m","input":"hi"}`)
			body := readAll(t, resp)
			if resp.StatusCode != tc.status || (b.Calls() == 1) != tc.failsOver {
				t.Fatalf("%d, b called %d times: %s", resp.StatusCode, b.Calls(), body)
			}
			if tc.failsOver {
				if id := responseID(t, body); id != "resp_b_1" || resp.Header.Get("X-Attempts") != "2" {
					t.Errorf("answer %s (X-Attempts %q), want b's after 2 attempts", id, resp.Header.Get("X-Attempts"))
				}
				return
			}
			if msg, typ, _ := apiErr(t, body); typ != "invalid_request_error" || !strings.Contains(msg, "'input'") || resp.Header.Get("X-Upstream") != "a" {
				t.Errorf("a's 400 not relayed: %s", body)
			}
		})
	}
}

// TestResponsesFailureAfterCommit: once output reached the client, an
// upstream that breaks off gets the stream ended with a Responses-shaped
// error event numbered after the last event, then an aborted body; an
// upstream's own error event is relayed as it is. Never a clean end,
// never another upstream.
func TestResponsesFailureAfterCommit(t *testing.T) {
	t.Run("cut", func(t *testing.T) {
		a := newFake(t, respFake{prefix: "resp_a", words: helloWords, afterDeltas: 2}.handler())
		b := newFake(t, respFake{prefix: "resp_b", words: helloWords}.handler())
		p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "k1", 1, ""), upstreamYAML("b", b.BaseURL(), "k2", 2, "")))
		resp := postResponses(t, p.URL, `{"model":"m","input":"hi","stream":true}`)
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err == nil {
			t.Errorf("the client saw a clean end of a cut stream")
		}
		evs := sseEvents(string(got))
		sent := respStream("groq", "resp_a_1", "m", helloWords)[:6]
		if len(evs) != len(sent)+1 || strings.Join(evs[:len(sent)], "") != strings.Join(sent, "") {
			t.Fatalf("stream %q: want a's %d events, then the proxy's error event", got, len(sent))
		}
		last := evs[len(evs)-1]
		if !strings.HasPrefix(last, "event: error\ndata: ") {
			t.Errorf("last event %q: want an \"event: error\" frame", last)
		}
		d := eventData(t, last)
		e, _ := d["error"].(map[string]any)
		if d["type"] != "error" || d["code"] != "stream_interrupted" || d["param"] != nil || d["sequence_number"] != float64(len(sent)) ||
			d["message"] == "" || e == nil || e["code"] != "stream_interrupted" || e["type"] != "server_error" {
			t.Errorf("error event %v: want type error, code stream_interrupted, param null, sequence_number %d, and the error object", d, len(sent))
		}
		if b.Calls() != 0 {
			t.Errorf("b was called after the commit")
		}
		if !p.WaitLog(`"stream_error":"stream ended before its terminal event`) {
			t.Errorf("the request log does not say the stream was cut")
		}
	})
	t.Run("upstream error event", func(t *testing.T) {
		a := newFake(t, respFake{prefix: "resp_a", words: helloWords, afterDeltas: 1, errorEvent: true}.handler())
		p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "k1", 1, "")))
		resp := postResponses(t, p.URL, `{"model":"m","input":"hi","stream":true}`)
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err == nil {
			t.Errorf("the client saw a clean end after an error event")
		}
		want := respStream("groq", "resp_a_1", "m", helloWords)[:5]
		want = append(want, respFailure("groq", "resp_a_1", "m", 5))
		if string(got) != strings.Join(want, "") {
			t.Errorf("stream\n%q\nwant a's events and its error event as sent\n%q", got, strings.Join(want, ""))
		}
	})
}

// TestResponsesStickyAcrossUpstreams: a request naming a previous response
// or a conversation goes back to the upstream that created it, though
// another ranks higher; an id the proxy never saw is routed normally; when
// the creator cannot take requests, a 503 names it and why, and nothing
// goes elsewhere.
func TestResponsesStickyAcrossUpstreams(t *testing.T) {
	aOK := respFake{prefix: "resp_a", words: helloWords}.handler()
	down := respFake{status: 500}.handler()
	a := newFake(t, down)
	b := newFake(t, respFake{prefix: "resp_b", words: helloWords}.handler())
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "k1", 1, ""), upstreamYAML("b", b.BaseURL(), "k2", 2, "")))

	// a is failing: b creates the response and serves the conversation.
	resp := postResponses(t, p.URL, `{"model":"m","input":"first"}`)
	created := responseID(t, readAll(t, resp))
	if resp.Header.Get("X-Upstream") != "b" {
		t.Fatalf("first request served by %q, want b", resp.Header.Get("X-Upstream"))
	}
	resp = postResponses(t, p.URL, `{"model":"m","input":"first","conversation":{"id":"conv_42"},"stream":true}`)
	if readAll(t, resp); resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "b" {
		t.Fatalf("first conversation request: %d from %q, want 200 from b", resp.StatusCode, resp.Header.Get("X-Upstream"))
	}
	a.SetHandler(aOK)

	aCalls, bCalls := a.Calls(), b.Calls()
	for i, body := range []string{
		`{"model":"m","input":"more","previous_response_id":"` + created + `"}`,
		`{"model":"m","input":"more","previous_response_id":"` + created + `","stream":true}`,
		`{"model":"m","input":"more","conversation":"conv_42"}`,
	} {
		resp := postResponses(t, p.URL, body)
		if b := readAll(t, resp); resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "b" {
			t.Errorf("continuing request %d: %d from %q, want 200 from b (the creator): %s", i, resp.StatusCode, resp.Header.Get("X-Upstream"), b)
		}
	}
	if a.Calls() != aCalls || b.Calls() != bCalls+3 {
		t.Errorf("calls a %d→%d, b %d→%d: continuing requests must go to b only", aCalls, a.Calls(), bCalls, b.Calls())
	}
	if !strings.Contains(string(b.LastBody()), `"conversation":"conv_42"`) {
		t.Errorf("b got %s", b.LastBody())
	}

	// An id the proxy never saw: routed as any request (a ranks first).
	resp = postResponses(t, p.URL, `{"model":"m","input":"more","previous_response_id":"resp_elsewhere"}`)
	if readAll(t, resp); resp.Header.Get("X-Upstream") != "a" {
		t.Errorf("unknown previous_response_id served by %q, want a (normal routing)", resp.Header.Get("X-Upstream"))
	}

	// The creator fails: 503 naming it, never a reroute to a.
	b.SetHandler(down)
	aCalls = a.Calls()
	sawBreaker := false
	for i := 0; i < 6 && !sawBreaker; i++ {
		bCalls = b.Calls()
		resp := postResponses(t, p.URL, `{"model":"m","input":"more","previous_response_id":"`+created+`"}`)
		body := readAll(t, resp)
		msg, typ, code := apiErr(t, body)
		if resp.StatusCode != 503 || typ != "server_error" || code != "sticky_upstream_unavailable" || !strings.Contains(msg, `upstream "b"`) ||
			!strings.Contains(msg, created) || resp.Header.Get("X-Upstream") != "b" {
			t.Fatalf("creator down, try %d: %d %s (X-Upstream %q)", i, resp.StatusCode, body, resp.Header.Get("X-Upstream"))
		}
		switch {
		case strings.Contains(msg, "breaker open"):
			sawBreaker = true
			if b.Calls() != bCalls {
				t.Errorf("b was called though its breaker is open")
			}
		case !strings.Contains(msg, "HTTP 500"):
			t.Errorf("try %d: the message does not say why: %s", i, msg)
		}
	}
	if !sawBreaker {
		t.Errorf("b's breaker never opened (failure_threshold 3)")
	}
	if a.Calls() != aCalls {
		t.Errorf("a was called %d times for b's response", a.Calls()-aCalls)
	}
	if got := scrape(t, p.URL, `switchyard_responses_sticky_unavailable_total`); got < 2 {
		t.Errorf("switchyard_responses_sticky_unavailable_total = %v", got)
	}
	if got := scrape(t, p.URL, `switchyard_responses_sticky_lookups_total{result="hit"}`); got < 4 {
		t.Errorf(`sticky lookups hit = %v`, got)
	}
}

// TestResponsesStickyAcrossReplicas: replicas sharing memcached share the
// records: a response created through one replica (plain or streamed)
// is continued through another on the same upstream, though that replica
// ranks another first.
func TestResponsesStickyAcrossReplicas(t *testing.T) {
	mc := startMemcached(t)
	a := newFake(t, respFake{status: 500}.handler())
	b := newFake(t, respFake{prefix: "resp_b", words: helloWords}.handler())
	cfg := testConfig(memcachedYAML(mc.Addr()), upstreamYAML("a", a.BaseURL(), "k1", 1, ""), upstreamYAML("b", b.BaseURL(), "k2", 2, ""))
	ps := startReplicas(t, 2, cfg)

	resp := postResponses(t, ps[0].URL, `{"model":"m","input":"first"}`)
	plainID := responseID(t, readAll(t, resp))
	resp = postResponses(t, ps[0].URL, `{"model":"m","input":"second","stream":true}`)
	streamed := readAll(t, resp)
	streamID := ""
	if evs := sseEvents(string(streamed)); len(evs) > 0 {
		if r, ok := eventData(t, evs[0])["response"].(map[string]any); ok {
			streamID, _ = r["id"].(string)
		}
	}
	if streamID == "" || resp.Header.Get("X-Upstream") != "b" {
		t.Fatalf("streamed creation from %q: %q", resp.Header.Get("X-Upstream"), streamed)
	}
	a.SetHandler(respFake{prefix: "resp_a", words: helloWords}.handler())

	for _, id := range []string{plainID, streamID} {
		resp := postResponses(t, ps[1].URL, `{"model":"m","input":"more","previous_response_id":"`+id+`"}`)
		if body := readAll(t, resp); resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "b" {
			t.Errorf("continuing %s on the other replica: %d from %q: %s", id, resp.StatusCode, resp.Header.Get("X-Upstream"), body)
		}
	}
	resp = postResponses(t, ps[1].URL, `{"model":"m","input":"new"}`)
	if readAll(t, resp); resp.Header.Get("X-Upstream") != "a" {
		t.Errorf("a new request on the other replica went to %q, want a (it ranks first)", resp.Header.Get("X-Upstream"))
	}
}

// TestResponsesCache: only stateless requests ("store": false, no
// previous_response_id) are cached; a stored stream answers a plain
// request with its final response; a stored plain answer does not answer
// a stream; and Responses and chat entries never mix.
func TestResponsesCache(t *testing.T) {
	up := newFake(t, respFake{prefix: "resp_c", words: helloWords}.handler())
	p := startProxy(t, testConfig("", upstreamYAML("up", up.BaseURL(), "k", 1, "")))
	step := func(name, path, body, wantCache string, wantCalls int) []byte {
		t.Helper()
		resp := postTo(t, p.URL+path, body)
		got := readAll(t, resp)
		if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != wantCache || up.Calls() != wantCalls {
			t.Fatalf("%s: %d X-Cache %q, upstream calls %d; want 200 %s, %d calls: %s", name, resp.StatusCode, resp.Header.Get("X-Cache"), up.Calls(), wantCache, wantCalls, got)
		}
		return got
	}
	const stateless = `{"model":"m","input":"What is 2+2?","store":false}`
	first := step("stateless plain", "/v1/responses", stateless, "MISS", 1)
	if again := step("stateless plain again", "/v1/responses", stateless, "HIT", 1); string(again) != string(first) {
		t.Errorf("hit %s, want the stored %s", again, first)
	}
	streamBody := strings.Replace(stateless, `"store":false`, `"store":false,"stream":true`, 1)
	streamed := step("stream after a stored plain answer", "/v1/responses", streamBody, "MISS", 2)
	if replay := step("stream again", "/v1/responses", streamBody, "HIT", 2); string(replay) != string(streamed) {
		t.Errorf("replayed stream %q, want %q", replay, streamed)
	}
	plain := step("plain from the stored stream", "/v1/responses", stateless, "HIT", 2)
	if want := respObject("resp_c_2", "m", "completed", strings.Join(helloWords, "")); string(plain) != want {
		t.Errorf("plain answer from the stream\n%s\nwant its response.completed's response\n%s", plain, want)
	}

	step("store true (the default)", "/v1/responses", `{"model":"m","input":"What is 2+2?"}`, "BYPASS", 3)
	step("store true again", "/v1/responses", `{"model":"m","input":"What is 2+2?"}`, "BYPASS", 4)
	step("previous_response_id", "/v1/responses", `{"model":"m","input":"And 3+3?","store":false,"previous_response_id":"resp_c_1"}`, "BYPASS", 5)
	step("conversation", "/v1/responses", `{"model":"m","input":"And 3+3?","store":false,"conversation":"conv_1"}`, "BYPASS", 6)

	// One body both endpoints accept: two questions, two entries.
	const both = `{"model":"m","input":"hi","messages":[{"role":"user","content":"hi"}],"store":false}`
	chat := step("chat", "/v1/chat/completions", both, "MISS", 7)
	step("the same body to responses", "/v1/responses", both, "MISS", 8)
	step("responses again", "/v1/responses", both, "HIT", 8)
	if again := step("chat again", "/v1/chat/completions", both, "HIT", 8); string(again) != string(chat) {
		t.Errorf("chat hit %s, want the chat answer %s", again, chat)
	}
}

// TestResponsesBadInput: requests the proxy rejects itself, each with a
// clear OpenAI-shaped 4xx, none reaching the upstream.
func TestResponsesBadInput(t *testing.T) {
	up := newFake(t, respFake{prefix: "resp_x", words: helloWords}.handler())
	p := startProxy(t, testConfig("", upstreamYAML("up", up.BaseURL(), "k", 1, "")))
	cases := []struct {
		name, body, contentType string
		status                  int
		code, param             string
	}{
		{"missing model", `{"input":"hi"}`, "application/json", 400, "missing_required_parameter", "model"},
		{"wrong Content-Type", `{"model":"m","input":"hi"}`, "text/plain", 415, "unsupported_media_type", ""},
		{"not JSON", `{"model":"m",`, "application/json", 400, "invalid_json", ""},
		{"previous_response_id not a string", `{"model":"m","input":"hi","previous_response_id":42}`, "application/json", 400, "invalid_json", "previous_response_id"},
		{"conversation without an id", `{"model":"m","input":"hi","conversation":{"name":"x"}}`, "application/json", 400, "invalid_json", "conversation"},
		{"store not a boolean", `{"model":"m","input":"hi","store":"no"}`, "application/json", 400, "invalid_json", "store"},
	}
	for _, tc := range cases {
		resp := postResponses(t, p.URL, tc.body, "Content-Type", tc.contentType)
		body := readAll(t, resp)
		var e struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Param   *string `json:"param"`
				Code    *string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		param := ""
		if e.Error.Param != nil {
			param = *e.Error.Param
		}
		if resp.StatusCode != tc.status || e.Error.Code == nil || *e.Error.Code != tc.code || param != tc.param ||
			e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
			t.Errorf("%s: %d %s; want %d code %s param %q", tc.name, resp.StatusCode, body, tc.status, tc.code, tc.param)
		}
	}
	if up.Calls() != 0 {
		t.Errorf("the upstream got %d bad requests", up.Calls())
	}
}
