package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	binenc "encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// embFake is an upstream's /v1/embeddings as OpenAI documents it
// (https://platform.openai.com/docs/api-reference/embeddings/create and
// https://platform.openai.com/docs/api-reference/embeddings/object):
//
//	{"object":"list",
//	 "data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292,...]}],
//	 "model":"text-embedding-3-small",
//	 "usage":{"prompt_tokens":8,"total_tokens":8}}
//
// One data element per input: input is a string, an array of strings, an
// array of tokens or an array of token arrays. dimensions sets the vector
// length (text-embedding-3 and later). encoding_format "base64" sends each
// vector as the base64 of its little-endian float32 values, which is what
// openai-python and openai-node ask for by default and decode
// (https://github.com/openai/openai-node/pull/1312). A vector depends only
// on the model, the input element and its position, so the same question
// gets the same bytes, as embeddings do. The fake keeps the last answer it
// wrote, to check the proxy relays it byte for byte.
type embFake struct {
	mu   sync.Mutex
	last []byte
}

// embDefaultDims is the fake's vector length without dimensions (OpenAI's
// text-embedding-3-small has 1536; a test needs few).
const embDefaultDims = 8

func (e *embFake) handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/embeddings" {
		statusHandler(404, `{"error":{"message":"Invalid URL (POST `+r.URL.Path+`)","type":"invalid_request_error","param":null,"code":null}}`)(w, r)
		return
	}
	var req struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		Dimensions     int             `json:"dimensions"`
		EncodingFormat string          `json:"encoding_format"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model == "" || len(req.Input) == 0 {
		statusHandler(400, `{"error":{"message":"'input' and 'model' are required","type":"invalid_request_error","param":null,"code":null}}`)(w, r)
		return
	}
	var inputs []json.RawMessage
	if req.Input[0] == '[' {
		if err := json.Unmarshal(req.Input, &inputs); err != nil || len(inputs) == 0 {
			statusHandler(400, `{"error":{"message":"'$.input' is invalid.","type":"invalid_request_error","param":null,"code":null}}`)(w, r)
			return
		}
		if inputs[0][0] != '"' && inputs[0][0] != '[' { // one array of tokens
			inputs = []json.RawMessage{req.Input}
		}
	} else {
		inputs = []json.RawMessage{req.Input}
	}
	dims := req.Dimensions
	if dims <= 0 {
		dims = embDefaultDims
	}
	var b bytes.Buffer
	b.WriteString("{\n  \"object\": \"list\",\n  \"data\": [")
	tokens := 0
	for i, in := range inputs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\n    {\n      \"object\": \"embedding\",\n      \"index\": %d,\n      \"embedding\": ", i)
		vec := embVector(req.Model, in, i, dims)
		if req.EncodingFormat == "base64" {
			raw := make([]byte, 4*len(vec))
			for j, f := range vec {
				binenc.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(f))
			}
			b.WriteString(strconv.Quote(base64.StdEncoding.EncodeToString(raw)))
		} else {
			b.WriteByte('[')
			for j, f := range vec {
				if j > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strconv.FormatFloat(float64(f), 'g', -1, 32))
			}
			b.WriteByte(']')
		}
		b.WriteString("\n    }")
		tokens += len(strings.Fields(string(in)))
	}
	fmt.Fprintf(&b, "\n  ],\n  \"model\": %q,\n  \"usage\": {\n    \"prompt_tokens\": %d,\n    \"total_tokens\": %d\n  }\n}\n", req.Model, tokens, tokens)
	e.mu.Lock()
	e.last = bytes.Clone(b.Bytes())
	e.mu.Unlock()
	groqHeaders(w)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("openai-model", req.Model)
	w.Header().Set("X-Request-Id", "req_emb_1")
	_, _ = w.Write(b.Bytes())
}

// Last returns the last answer the fake wrote.
func (e *embFake) Last() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

// embVector is the fake's deterministic vector for one input element.
func embVector(model string, in json.RawMessage, index, dims int) []float32 {
	vec := make([]float32, dims)
	for j := range vec {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%d", model, in, index, j))
		vec[j] = float32(int16(binenc.BigEndian.Uint16(sum[:]))) / 32768
	}
	return vec
}

// newEmbFake starts an upstream whose /v1/embeddings is an embFake (every
// other path answers OpenAI's 404).
func newEmbFake(t *testing.T) (*fake, *embFake) {
	t.Helper()
	e := &embFake{}
	return newFake(t, e.handle), e
}

// TestEmbeddingsRelayedByteIdentical: a float and a base64 answer reach
// the client byte for byte as the upstream wrote them, the second time
// from the cache (X-Cache HIT, upstream not called), bytes unchanged. The
// model alias is the one edit on the way up.
func TestEmbeddingsRelayedByteIdentical(t *testing.T) {
	cacheBackends(t, func(t *testing.T, top string) {
		up, emb := newEmbFake(t)
		p := startProxy(t, testConfig(top, upstreamYAML("oai", up.BaseURL(), "sk-emb-key", 1,
			"    models:\n      embed-small: text-embedding-3-small\n")))
		for _, format := range []string{"float", "base64"} {
			body := `{"model":"embed-small","input":["first text","second text"],"encoding_format":"` + format + `"}`
			calls := up.Calls()
			resp := postTo(t, p.URL+"/v1/embeddings", body)
			got := readAll(t, resp)
			if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "MISS" || resp.Header.Get("X-Upstream") != "oai" {
				t.Fatalf("%s: status %d X-Cache %q X-Upstream %q: %s", format, resp.StatusCode, resp.Header.Get("X-Cache"), resp.Header.Get("X-Upstream"), got)
			}
			want := emb.Last()
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: answer changed on the way:\n got %q\nwant %q", format, got, want)
			}
			if !strings.Contains(string(up.LastBody()), `"model":"text-embedding-3-small"`) {
				t.Errorf("%s: alias not rewritten upstream: %s", format, up.LastBody())
			}
			if format == "base64" && !strings.Contains(string(got), `"embedding": "`) {
				t.Errorf("base64 answer has no string embedding: %s", got)
			}
			embWaitCached(t, p.URL, body)
			resp = postTo(t, p.URL+"/v1/embeddings", body)
			hit := readAll(t, resp)
			if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "HIT" || !bytes.Equal(hit, want) {
				t.Fatalf("%s: second call: status %d X-Cache %q, body equal %v:\n%q", format, resp.StatusCode, resp.Header.Get("X-Cache"), bytes.Equal(hit, want), hit)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("%s: cached answer Content-Type %q", format, ct)
			}
			if n := up.Calls() - calls; n != 1 {
				t.Errorf("%s: upstream called %d times for a miss and hits, want 1", format, n)
			}
		}
		if !p.WaitLog(`"route":"embeddings"`) {
			t.Error("no request log line with route embeddings")
		}
	})
}

// embWaitCached waits until an embeddings body is cached (the store is
// asynchronous), asking with Cache-Control: only-if-cached so that the
// upstream is never called.
func embWaitCached(t *testing.T, url, body string) {
	t.Helper()
	for range 100 {
		r := postTo(t, url+"/v1/embeddings", body, "Cache-Control", "only-if-cached")
		b := readAll(t, r)
		if r.StatusCode == 200 && r.Header.Get("X-Cache") == "HIT" {
			return
		}
		if r.StatusCode != 504 {
			t.Fatalf("only-if-cached: status %d %s", r.StatusCode, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("embeddings answer never cached: %s", body)
}

// TestEmbeddingsCacheKey: the key covers model, input, dimensions and
// encoding_format (any change is a MISS), not key order, whitespace or
// user (a HIT). An input array is one entry: the whole array hits, a part
// of it misses. Each row runs after the previous ones, on one proxy.
func TestEmbeddingsCacheKey(t *testing.T) {
	up, _ := newEmbFake(t)
	p := startProxy(t, testConfig("", upstreamYAML("oai", up.BaseURL(), "sk-emb-key", 1, "")))
	rows := []struct {
		name, path, body, want string
	}{
		{"first", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"the cat sat","dimensions":4,"encoding_format":"float"}`, "MISS"},
		{"same body", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"the cat sat","dimensions":4,"encoding_format":"float"}`, "HIT"},
		{"key order and whitespace", "/v1/embeddings", "{ \"encoding_format\" : \"float\",\n \"dimensions\": 4.0, \"input\":\"the cat sat\", \"model\":\"text-embedding-3-small\" }", "HIT"},
		{"user dropped", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"the cat sat","dimensions":4,"encoding_format":"float","user":"end-user-42"}`, "HIT"},
		{"groq base path", "/openai/v1/embeddings", `{"model":"text-embedding-3-small","input":"the cat sat","dimensions":4,"encoding_format":"float"}`, "HIT"},
		{"base URL without /v1", "/embeddings", `{"model":"text-embedding-3-small","input":"the cat sat","dimensions":4,"encoding_format":"float"}`, "HIT"},
		{"other dimensions", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"the cat sat","dimensions":8,"encoding_format":"float"}`, "MISS"},
		{"other encoding_format", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"the cat sat","dimensions":4,"encoding_format":"base64"}`, "MISS"},
		{"encoding_format left out", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"the cat sat","dimensions":4}`, "MISS"},
		{"other input", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"the cat sat down","dimensions":4,"encoding_format":"float"}`, "MISS"},
		{"other model", "/v1/embeddings", `{"model":"text-embedding-3-large","input":"the cat sat","dimensions":4,"encoding_format":"float"}`, "MISS"},
		{"input as an array", "/v1/embeddings", `{"model":"text-embedding-3-small","input":["the cat sat","a dog ran"],"dimensions":4,"encoding_format":"float"}`, "MISS"},
		{"the same array", "/v1/embeddings", `{"model":"text-embedding-3-small","input":["the cat sat","a dog ran"],"dimensions":4,"encoding_format":"float"}`, "HIT"},
		{"the array reordered", "/v1/embeddings", `{"model":"text-embedding-3-small","input":["a dog ran","the cat sat"],"dimensions":4,"encoding_format":"float"}`, "MISS"},
		{"one element of a cached array", "/v1/embeddings", `{"model":"text-embedding-3-small","input":["a dog ran"],"dimensions":4,"encoding_format":"float"}`, "MISS"},
	}
	for _, r := range rows {
		calls := up.Calls()
		resp := postTo(t, p.URL+r.path, r.body)
		b := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d %s", r.name, resp.StatusCode, b)
		}
		if got := resp.Header.Get("X-Cache"); got != r.want {
			t.Errorf("%s: X-Cache %q, want %q", r.name, got, r.want)
		}
		wantCalls := 0
		if r.want == "MISS" {
			wantCalls = 1
		}
		if n := up.Calls() - calls; n != wantCalls {
			t.Errorf("%s: upstream called %d times, want %d", r.name, n, wantCalls)
		}
		if r.want == "MISS" {
			embWaitCached(t, p.URL, r.body)
		}
	}
}

// TestEmbeddingsFailoverBeforeAnswer: a failing first upstream (500, 429,
// a reset connection) is invisible to the client: the second answers, and
// its answer is cached.
func TestEmbeddingsFailoverBeforeAnswer(t *testing.T) {
	cases := map[string]http.HandlerFunc{
		"500": statusHandler(500, `{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`),
		"429": statusHandler(429, `{"error":{"message":"Rate limit reached for text-embedding-3-small","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, "Retry-After", "20"),
		"connection reset": func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		},
		"200 with invalid JSON": statusHandler(200, `{"object":"list","data":[`),
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			a := newFake(t, h)
			b, emb := newEmbFake(t)
			p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, ""), upstreamYAML("b", b.BaseURL(), "kb", 2, "")))
			body := `{"model":"text-embedding-3-small","input":"failover"}`
			resp := postTo(t, p.URL+"/v1/embeddings", body)
			got := readAll(t, resp)
			if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "b" || resp.Header.Get("X-Attempts") != "2" || !bytes.Equal(got, emb.Last()) {
				t.Fatalf("status %d X-Upstream %q X-Attempts %q: %s", resp.StatusCode, resp.Header.Get("X-Upstream"), resp.Header.Get("X-Attempts"), got)
			}
			if a.Calls() != 1 || a.LastPath() != "/v1/embeddings" {
				t.Errorf("a: %d calls, last at %q", a.Calls(), a.LastPath())
			}
			embWaitCached(t, p.URL, body)
			resp = postTo(t, p.URL+"/v1/embeddings", body)
			if hit := readAll(t, resp); resp.Header.Get("X-Cache") != "HIT" || !bytes.Equal(hit, got) || a.Calls()+b.Calls() != 2 {
				t.Errorf("after failover: X-Cache %q, calls a=%d b=%d", resp.Header.Get("X-Cache"), a.Calls(), b.Calls())
			}
		})
	}
}

// TestEmbeddingsAllFailed: when every upstream fails, the client gets the
// proxy's OpenAI-shaped 502 listing each attempt (no upstream text), and
// nothing is cached: the next request goes upstream again.
func TestEmbeddingsAllFailed(t *testing.T) {
	a := newFake(t, statusHandler(500, `{"error":{"message":"a broke on input secret-text","type":"server_error","param":null,"code":null}}`))
	b := newFake(t, statusHandler(503, `upstream connect error`))
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "sk-secret-a", 1, ""), upstreamYAML("b", b.BaseURL(), "sk-secret-b", 2, "")))
	body := `{"model":"text-embedding-3-small","input":"secret-text"}`
	for i := range 2 {
		resp := postTo(t, p.URL+"/v1/embeddings", body)
		got := readAll(t, resp)
		if resp.StatusCode != 502 {
			t.Fatalf("#%d: status %d %s", i, resp.StatusCode, got)
		}
		msg, typ, code := apiErr(t, got)
		if !strings.Contains(msg, "a: HTTP 500") || !strings.Contains(msg, "b: HTTP 503") || typ != "server_error" || code != "upstream_error" {
			t.Errorf("#%d: %q %q %q", i, msg, typ, code)
		}
		if strings.Contains(string(got), "secret-text") || strings.Contains(string(got), "sk-secret") {
			t.Errorf("#%d: upstream text or a key in the answer: %s", i, got)
		}
		if resp.Header.Get("X-Cache") != "MISS" {
			t.Errorf("#%d: X-Cache %q, want MISS (a failure is never cached)", i, resp.Header.Get("X-Cache"))
		}
	}
	if a.Calls() != 2 || b.Calls() != 2 {
		t.Errorf("calls a=%d b=%d, want 2 each", a.Calls(), b.Calls())
	}
	if got := scrape(t, p.URL, `switchyard_requests_total{route="embeddings",status="502"}`); got != 2 {
		t.Errorf(`switchyard_requests_total{route="embeddings",status="502"} = %v, want 2`, got)
	}
}

// TestEmbeddingsBadInput: requests the proxy refuses itself, in OpenAI's
// error shape, without calling any upstream.
func TestEmbeddingsBadInput(t *testing.T) {
	up, _ := newEmbFake(t)
	p := startProxy(t, testConfig("", upstreamYAML("oai", up.BaseURL(), "k", 1, "")))
	cases := []struct {
		name, method, ct, body string
		status                 int
		param, code            string
	}{
		{"missing model", "POST", "application/json", `{"input":"hello"}`, 400, "model", "missing_required_parameter"},
		{"empty model", "POST", "application/json", `{"model":"","input":"hello"}`, 400, "model", "missing_required_parameter"},
		{"missing input", "POST", "application/json", `{"model":"text-embedding-3-small"}`, 400, "input", "missing_required_parameter"},
		{"null input", "POST", "application/json", `{"model":"text-embedding-3-small","input":null}`, 400, "input", "missing_required_parameter"},
		{"wrong Content-Type", "POST", "text/plain", `{"model":"text-embedding-3-small","input":"hello"}`, 415, "", "unsupported_media_type"},
		{"multipart body", "POST", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"input\"\r\n\r\nhello\r\n--x--\r\n", 415, "", "unsupported_media_type"},
		{"invalid JSON", "POST", "application/json", `{"model":"text-embedding-3-small","input":"hello"`, 400, "", "invalid_json"},
		{"not an object", "POST", "application/json", `["text-embedding-3-small"]`, 400, "", "invalid_json"},
		{"GET", "GET", "", "", 405, "", "method_not_allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, p.URL+"/v1/embeddings", strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if c.ct != "" {
				req.Header.Set("Content-Type", c.ct)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b := readAll(t, resp)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, b)
			}
			var e struct {
				Error struct {
					Param *string `json:"param"`
				} `json:"error"`
			}
			_ = json.Unmarshal(b, &e)
			_, _, code := apiErr(t, b)
			param := ""
			if e.Error.Param != nil {
				param = *e.Error.Param
			}
			if code != c.code || param != c.param {
				t.Errorf("code %q param %q, want %q %q: %s", code, param, c.code, c.param, b)
			}
		})
	}
	if up.Calls() != 0 {
		t.Errorf("upstream called %d times for bad requests", up.Calls())
	}
}

// TestEmbeddingsOnlyToUpstreamsServingThem: a Groq upstream (no
// embeddings by default) and one whose endpoints leave embeddings out are
// never called for embeddings, even ranked first; with no upstream
// serving embeddings the model gets a 404 that says why.
func TestEmbeddingsOnlyToUpstreamsServingThem(t *testing.T) {
	groq := newFake(t, okJSON("groq"))
	listed := newFake(t, okJSON("chat only"))
	oai, emb := newEmbFake(t)
	groqYAML := strings.Replace(upstreamYAML("groq", groq.BaseURL(), "gsk_k", 1, ""), "provider: openai", "provider: groq", 1)
	chatOnly := upstreamYAML("chatonly", listed.BaseURL(), "k2", 1, "    endpoints: [chat/completions, completions]\n")
	p := startProxy(t, testConfig("", groqYAML, chatOnly, upstreamYAML("oai", oai.BaseURL(), "k3", 2, "")))
	for i := range 3 {
		resp := postTo(t, p.URL+"/v1/embeddings", fmt.Sprintf(`{"model":"text-embedding-3-small","input":"text %d"}`, i))
		got := readAll(t, resp)
		if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "oai" || !bytes.Equal(got, emb.Last()) {
			t.Fatalf("#%d: status %d X-Upstream %q: %s", i, resp.StatusCode, resp.Header.Get("X-Upstream"), got)
		}
	}
	if groq.Calls() != 0 || listed.Calls() != 0 {
		t.Errorf("upstreams without embeddings called: groq %d, chatonly %d", groq.Calls(), listed.Calls())
	}

	p2 := startProxy(t, testConfig("", groqYAML, chatOnly))
	resp := postTo(t, p2.URL+"/v1/embeddings", `{"model":"text-embedding-3-small","input":"x"}`)
	got := readAll(t, resp)
	msg, typ, code := apiErr(t, got)
	if resp.StatusCode != 404 || code != "model_not_found" || typ != "invalid_request_error" ||
		!strings.Contains(msg, "/v1/embeddings") || !strings.Contains(msg, "groq, chatonly") {
		t.Errorf("no upstream serving embeddings: %d %s", resp.StatusCode, got)
	}
	if groq.Calls() != 0 || listed.Calls() != 0 {
		t.Errorf("upstreams without embeddings called: groq %d, chatonly %d", groq.Calls(), listed.Calls())
	}
}
