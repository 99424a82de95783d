package upstream

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/config"
)

// testClient returns a Client for srv (an httptest server on 127.0.0.1)
// built from u, with every timeout bounded.
func testClient(t *testing.T, srv *httptest.Server, u config.Upstream) *Client {
	t.Helper()
	u.BaseURL = srv.URL + "/v1"
	if u.Name == "" {
		u.Name = "test"
	}
	if u.Provider == "" {
		u.Provider = config.ProviderOpenAI
	}
	if u.APIKey == "" {
		u.APIKey = "k"
	}
	u.Timeout, u.FirstTokenTimeout, u.IdleTimeout = 5*time.Second, 2*time.Second, 2*time.Second
	c, err := New(u)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// headerRecorder is a fake upstream that answers a small JSON body and
// keeps the headers of the last request.
type headerRecorder struct {
	mu   sync.Mutex
	last http.Header
}

func (h *headerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.last = r.Header.Clone()
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"choices":[]}`))
}

func (h *headerRecorder) got() http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// peekFunc is a HeaderPeeker made of a function.
type peekFunc func(string) []byte

func (f peekFunc) Peek(name string) []byte { return f(name) }

// clientHeaders returns a Request.ClientHeaders over m, recording the
// names asked for.
func clientHeaders(m map[string]string, asked *[]string) HeaderPeeker {
	return peekFunc(func(name string) []byte {
		*asked = append(*asked, name)
		for k, v := range m {
			if strings.EqualFold(k, name) {
				return []byte(v)
			}
		}
		return nil
	})
}

func TestClientHeaders(t *testing.T) {
	// Headers a client might send that must never reach the upstream
	// unless listed.
	hostile := map[string]string{
		"Authorization": "Bearer client-key",
		"X-Trace-Id":    "t1",
		"X-Other":       "o",
		"X-HF-Bill-To":  "client-org",
		"X-Empty":       "",
		"X-Split":       "a\r\nX-Injected: 1",
	}
	cases := []struct {
		name   string
		u      config.Upstream
		client map[string]string // nil: no ClientHeaders
		want   map[string]string // headers that must arrive, exactly
		absent []string          // headers that must not arrive
	}{
		{
			name: "static headers",
			u:    config.Upstream{Headers: map[string]string{"X-HF-Bill-To": "my-org", "X-Team": "search"}},
			want: map[string]string{"X-Hf-Bill-To": "my-org", "X-Team": "search"},
		},
		{
			name:   "static header with an empty value is not sent",
			u:      config.Upstream{Headers: map[string]string{"X-Unset": "", "X-Team": "search"}},
			want:   map[string]string{"X-Team": "search"},
			absent: []string{"X-Unset"},
		},
		{
			name:   "forwarded when listed and present",
			u:      config.Upstream{ForwardHeaders: []string{"X-Trace-Id"}},
			client: hostile,
			want:   map[string]string{"X-Trace-Id": "t1"},
			absent: []string{"X-Other", "X-Hf-Bill-To"},
		},
		{
			name:   "listed but absent or empty",
			u:      config.Upstream{ForwardHeaders: []string{"X-Missing", "X-Empty"}},
			client: hostile,
			absent: []string{"X-Missing", "X-Empty", "X-Trace-Id"},
		},
		{
			name:   "explicit empty list forwards none",
			u:      config.Upstream{Provider: config.ProviderHuggingFace, ForwardHeaders: []string{}},
			client: hostile,
			absent: []string{"X-Hf-Bill-To", "X-Trace-Id"},
		},
		{
			name:   "huggingface default forwards X-HF-Bill-To",
			u:      config.Upstream{Provider: config.ProviderHuggingFace},
			client: hostile,
			want:   map[string]string{"X-Hf-Bill-To": "client-org"},
			absent: []string{"X-Trace-Id", "X-Other"},
		},
		{
			name:   "groq default forwards none",
			u:      config.Upstream{Provider: config.ProviderGroq},
			client: hostile,
			absent: []string{"X-Hf-Bill-To", "X-Trace-Id", "X-Other"},
		},
		{
			name:   "static value wins over the client's",
			u:      config.Upstream{Provider: config.ProviderHuggingFace, Headers: map[string]string{"x-hf-bill-to": "my-org"}},
			client: hostile,
			want:   map[string]string{"X-Hf-Bill-To": "my-org"},
		},
		{
			name:   "client value with a line break is not sent",
			u:      config.Upstream{ForwardHeaders: []string{"X-Split", "X-Trace-Id"}},
			client: hostile,
			want:   map[string]string{"X-Trace-Id": "t1"},
			absent: []string{"X-Split", "X-Injected"},
		},
		{
			name:   "nil ClientHeaders",
			u:      config.Upstream{Provider: config.ProviderHuggingFace, ForwardHeaders: []string{"X-Trace-Id"}},
			absent: []string{"X-Trace-Id", "X-Hf-Bill-To"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &headerRecorder{}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			c := testClient(t, srv, tc.u)
			for _, stream := range []bool{false, true} { // both HostClients
				var asked []string
				r := &Request{Body: []byte(`{"model":"m"}`), Stream: stream, RequestID: "req-1"}
				if tc.client != nil {
					r.ClientHeaders = clientHeaders(tc.client, &asked)
				}
				resp, err := c.Do(r)
				if err != nil {
					t.Fatalf("stream=%v: %v", stream, err)
				}
				if resp.Status != 200 {
					t.Fatalf("stream=%v: status %d", stream, resp.Status)
				}
				h := rec.got()
				for k, v := range tc.want {
					if got := h.Values(k); len(got) != 1 || got[0] != v {
						t.Errorf("stream=%v: %s = %q, want [%q]", stream, k, got, v)
					}
				}
				for _, k := range tc.absent {
					if got, ok := h[http.CanonicalHeaderKey(k)]; ok {
						t.Errorf("stream=%v: %s = %q, want it absent", stream, k, got)
					}
				}
				// The proxy's own headers are always its own.
				for k, v := range map[string]string{"Authorization": "Bearer k", "Accept-Encoding": "identity",
					"Content-Type": "application/json", "X-Request-Id": "req-1"} {
					if got := h.Values(k); len(got) != 1 || got[0] != v {
						t.Errorf("stream=%v: %s = %q, want [%q]", stream, k, got, v)
					}
				}
				for _, name := range asked {
					if config.ReservedHeader(name) {
						t.Errorf("stream=%v: ClientHeaders asked for %s", stream, name)
					}
				}
			}
		})
	}
}

// TestHeadersFromConfig goes from a config file to the wire: the static
// header's ${VAR} is expanded by config.Parse and the client sends the
// result, and the parsed huggingface default forwards X-HF-Bill-To.
func TestHeadersFromConfig(t *testing.T) {
	t.Setenv("SWITCHYARD_TEST_BILL_TO", "my-org")
	rec := &headerRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	cfg, err := config.Parse(strings.NewReader(`
upstreams:
  - name: hf
    provider: huggingface
    base_url: ` + srv.URL + `/v1
    api_key: hf_key
    timeout: 5s
    headers:
      X-Bill: ${SWITCHYARD_TEST_BILL_TO}
      X-Unset: ${SWITCHYARD_TEST_UNSET}
`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg.Upstreams[0])
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	_, err = c.Do(&Request{Body: []byte(`{}`), ClientHeaders: clientHeaders(map[string]string{"X-HF-Bill-To": "client-org"}, &asked)})
	if err != nil {
		t.Fatal(err)
	}
	h := rec.got()
	if got := h.Get("X-Bill"); got != "my-org" {
		t.Errorf("X-Bill = %q, want my-org (from the environment)", got)
	}
	if _, ok := h["X-Unset"]; ok {
		t.Errorf("X-Unset sent for an unset variable: %q", h["X-Unset"])
	}
	if got := h.Get("X-HF-Bill-To"); got != "client-org" {
		t.Errorf("X-HF-Bill-To = %q, want the client's client-org", got)
	}
	if got := h.Get("Authorization"); got != "Bearer hf_key" {
		t.Errorf("Authorization = %q, want the api_key", got)
	}
}

// TestNewRefusesUnsafeHeaders: config.Validate refuses these; New refuses
// them too, so a hand-built config cannot forward the client's
// Authorization or inject a header line.
func TestNewRefusesUnsafeHeaders(t *testing.T) {
	cases := []struct {
		name string
		u    config.Upstream
	}{
		{"static Authorization", config.Upstream{Headers: map[string]string{"authorization": "Bearer x"}}},
		{"static Host", config.Upstream{Headers: map[string]string{"Host": "evil.example"}}},
		{"static hop-by-hop", config.Upstream{Headers: map[string]string{"Transfer-Encoding": "chunked"}}},
		{"static value with CR LF", config.Upstream{Headers: map[string]string{"X-A": "a\r\nX-Injected: 1"}}},
		{"static name with LF", config.Upstream{Headers: map[string]string{"X-A\nX-B": "a"}}},
		{"static empty name", config.Upstream{Headers: map[string]string{"": "a"}}},
		{"forwarded Authorization", config.Upstream{ForwardHeaders: []string{"X-A", "Authorization"}}},
		{"forwarded Content-Length", config.Upstream{ForwardHeaders: []string{"content-length"}}},
		{"forwarded name with NUL", config.Upstream{ForwardHeaders: []string{"X-A\x00"}}},
		{"forwarded empty name", config.Upstream{ForwardHeaders: []string{""}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.u
			u.Name, u.Provider, u.BaseURL = "x", config.ProviderOpenAI, "http://127.0.0.1:1/v1"
			if c, err := New(u); err == nil {
				t.Errorf("New succeeded (static %v, forward %v)", c.static, c.forward)
			}
		})
	}
}

func TestClientParamAccessors(t *testing.T) {
	groq := []string{"n", "logprobs", "top_logprobs", "logit_bias"}
	cases := []struct {
		name          string
		u             config.Upstream
		unsupported   []string
		drop          bool
		maxRetryAfter time.Duration
	}{
		{"groq default", config.Upstream{Provider: config.ProviderGroq}, groq, false, 0},
		{"groq explicit none", config.Upstream{Provider: config.ProviderGroq, UnsupportedParams: []string{}}, []string{}, false, 0},
		{"huggingface default", config.Upstream{Provider: config.ProviderHuggingFace}, []string{}, false, 0},
		{"explicit list and drop", config.Upstream{Provider: config.ProviderOpenAI, UnsupportedParams: []string{"seed"}, DropParams: true},
			[]string{"seed"}, true, 0},
		{"max_retry_after", config.Upstream{Provider: config.ProviderGroq, Retry: config.Retry{MaxRetryAfter: 3 * time.Second}},
			groq, false, 3 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.u
			u.Name, u.BaseURL = "x", "http://127.0.0.1:1/v1"
			c, err := New(u)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.UnsupportedParams(); got == nil || !reflect.DeepEqual(got, tc.unsupported) {
				t.Errorf("UnsupportedParams() = %#v, want %#v", got, tc.unsupported)
			}
			if got := c.DropParams(); got != tc.drop {
				t.Errorf("DropParams() = %v, want %v", got, tc.drop)
			}
			if got := c.MaxRetryAfter(); got != tc.maxRetryAfter {
				t.Errorf("MaxRetryAfter() = %v, want %v", got, tc.maxRetryAfter)
			}
		})
	}
	// The client keeps its own copy: the defaults table stays as it was.
	c, err := New(config.Upstream{Name: "x", Provider: config.ProviderGroq, BaseURL: "http://127.0.0.1:1/v1"})
	if err != nil {
		t.Fatal(err)
	}
	c.UnsupportedParams()[0] = "changed"
	if config.DefaultUnsupportedParams[config.ProviderGroq][0] != "n" {
		t.Errorf("editing a client's list changed config.DefaultUnsupportedParams")
	}
}

// TestSetHeadersAllocs: headers are precomputed at New, so setting them on
// a reused request allocates nothing.
func TestSetHeadersAllocs(t *testing.T) {
	c, err := New(config.Upstream{Name: "x", Provider: config.ProviderHuggingFace, BaseURL: "http://127.0.0.1:1/v1", APIKey: "k",
		Headers: map[string]string{"X-Team": "search"}, ForwardHeaders: []string{"X-HF-Bill-To", "X-Trace-Id"}})
	if err != nil {
		t.Fatal(err)
	}
	org, trace := []byte("org"), []byte("t1")
	client := func(name string) []byte {
		switch name {
		case "X-HF-Bill-To":
			return org
		case "X-Trace-Id":
			return trace
		}
		return nil
	}
	var h fasthttp.RequestHeader
	allocs := testing.AllocsPerRun(100, func() {
		h.Reset()
		c.setHeaders(&h, peekFunc(client))
	})
	if allocs != 0 {
		t.Errorf("setHeaders: %v allocations per request, want 0", allocs)
	}
	if got := string(h.Peek("X-Trace-Id")); got != "t1" {
		t.Errorf("X-Trace-Id = %q, want t1", got)
	}
}
