package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/cachekey"
	"switchyard/config"
	"switchyard/sse"
	"switchyard/upstream"
	"switchyard/verdict"
)

// private is request text an upstream error may quote; no summary may
// contain it.
const private = "my SSN is 078-05-1120"

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout reading " + private }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestErrSummary(t *testing.T) {
	tm := timeouts{whole: 5 * time.Second, firstToken: 2 * time.Second, idle: 10 * time.Second}
	wrap := func(err error) error { return fmt.Errorf("upstream u: %w", err) }
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"in-band", inBandError("u", []byte(`{"error":{"message":"`+private+`","type":"server_error","code":"content_filter"}}`)), "in-band error server_error content_filter"},
		{"in-band, text where the type goes", inBandError("u", []byte(`{"error":{"message":"x","type":"`+private+`","code":"c"}}`)), "in-band error c"},
		{"in-band, string shape", inBandError("u", []byte(`{"error":"`+private+`"}`)), "in-band error"},
		{"in-band, no data", inBandError("u", nil), "in-band error"},
		{"first token", wrap(upstream.ErrFirstTokenTimeout), "no first event within first_token_timeout after 2s"},
		{"idle", fmt.Errorf("upstream u: reading stream: %w", upstream.ErrIdleTimeout), "stream idle for longer than idle_timeout after 10s"},
		{"whole", wrap(upstream.ErrTimeout), "timeout after 5s"},
		{"busy", wrap(upstream.ErrBusy), "connection pool to the upstream exhausted"},
		{"invalid JSON", wrap(errInvalidJSON), errInvalidJSON.Error()},
		{"cut stream", wrap(errCutStream), errCutStream.Error()},
		{"complete bound", wrap(errCompleteBound), errCompleteBound.Error()},
		{"content encoding", fmt.Errorf("upstream u: %w %q", upstream.ErrContentEncoding, "zstd"), "answer in an unsupported Content-Encoding"},
		{"event too large", fmt.Errorf("upstream u: reading stream: %w (over 1 bytes)", sse.ErrEventTooLarge), "stream event too large"},
		{"truncated event", wrap(sse.ErrTruncated), "stream ended mid-event"},
		{"refused", wrap(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), "connection refused"},
		{"reset", wrap(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), "connection reset by peer"},
		{"closed early", wrap(fmt.Errorf("error when reading response headers: %w. Buffer: %q", fasthttp.ErrConnectionClosed, private)), "connection closed before the answer was complete"},
		{"unexpected EOF", wrap(fmt.Errorf("reading body %q: %w", private, io.ErrUnexpectedEOF)), "connection closed before the answer was complete"},
		{"DNS", wrap(&net.DNSError{Err: "no such host", Name: "api.example", IsNotFound: true}), "DNS lookup failed: no such host"},
		{"net timeout", wrap(timeoutErr{}), "timeout"},
		{"unknown, quoting the answer", wrap(fmt.Errorf("cannot find whitespace in the first line of response %q", private)), "transport error (details at log_level debug)"},
	}
	for _, tc := range cases {
		got := errSummary(tc.err, tm)
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		if strings.Contains(got, "SSN") {
			t.Errorf("%s: %q quotes the request", tc.name, got)
		}
	}
}

func TestDescribe(t *testing.T) {
	st := &state{secrets: []string{"sk-SECRET-key-1234"}, secretsB: [][]byte{[]byte("sk-SECRET-key-1234")}}
	st.cfg.Upstreams = []config.Upstream{{Name: "u", Timeout: 7 * time.Second}}
	u := &upstream.Client{Name: "u"}
	resp := func(status int, body string) *attemptResult {
		return &attemptResult{u: u, resp: &upstream.Response{Status: status, Body: []byte(body)}}
	}
	cases := []struct {
		name string
		r    *attemptResult
		want string
	}{
		{"OpenAI shape", resp(400, `{"error":{"message":"'`+private+`' is too long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`),
			"HTTP 400 invalid_request_error context_length_exceeded"},
		{"no code", resp(500, `{"error":{"message":"`+private+`","type":"server_error","code":null}}`), "HTTP 500 server_error"},
		{"numeric code", resp(503, `{"error":{"message":"`+private+`","type":"overloaded","code":503}}`), "HTTP 503 overloaded 503"},
		{"HF string shape", resp(422, `{"error":"`+private+`","error_type":"validation"}`), "HTTP 422 validation"},
		{"not JSON", resp(502, `<html>`+private+`</html>`), "HTTP 502"},
		{"text as the code", resp(400, `{"error":{"message":"x","type":"invalid_request_error","code":"`+private+`"}}`), "HTTP 400 invalid_request_error"},
		{"key as the code", resp(401, `{"error":{"message":"x","type":"auth","code":"sk-SECRET-key-1234"}}`), "HTTP 401 auth [redacted]"},
		{"transport", &attemptResult{u: u, err: fmt.Errorf("upstream u: %w", upstream.ErrTimeout)}, "timeout after 7s"},
		{"in-band 200", &attemptResult{u: u, resp: &upstream.Response{Status: 200}, err: inBandError("u", []byte(`{"error":{"message":"`+private+`","type":"server_error"}}`))}, "in-band error server_error"},
		{"breaker", &attemptResult{u: u, v: verdict.Verdict{Reason: "key_rejected"}}, "key_rejected"},
	}
	for _, tc := range cases {
		if got := st.describe(tc.r); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// The debug log's detail keeps the upstream's words, keys redacted.
	r := resp(400, `{"error":{"message":"'`+private+`' with sk-SECRET-key-1234","type":"x"}}`)
	if d := st.redact(upstreamDetail(r, nil)); !strings.Contains(d, private) || strings.Contains(d, "SECRET") {
		t.Errorf("detail %q", d)
	}
	ib := inBandError("u", []byte(`{"error":{"message":"`+private+`"}}`))
	if d := upstreamDetail(nil, fmt.Errorf("wrapped: %w", ib)); d != private {
		t.Errorf("in-band detail %q", d)
	}
	if !errors.Is(ib, errInBandError) || strings.Contains(ib.Error(), "SSN") {
		t.Errorf("in-band error %q: not errInBandError, or quoting the request", ib)
	}
}

func TestFreshness(t *testing.T) {
	maxAge := func(d time.Duration) cacheControl { return cacheControl{hasMaxAge: true, maxAge: d} }
	cases := []struct {
		name               string
		cc                 cacheControl
		ttl                time.Duration
		wantStore, wantAge time.Duration
	}{
		{"no max-age", cacheControl{}, time.Hour, time.Hour, time.Hour},
		{"max-age below ttl", maxAge(time.Minute), time.Hour, time.Minute, time.Minute},
		{"max-age equal to ttl", maxAge(time.Hour), time.Hour, time.Hour, time.Hour},
		{"max-age above ttl is capped", maxAge(48 * time.Hour), time.Hour, time.Hour, time.Hour},
		{"max-age above a 1s ttl", maxAge(3600 * time.Second), time.Second, time.Second, time.Second},
		{"ttl 0 stores nothing", maxAge(time.Minute), 0, 0, 0},
		{"ttl 0 without max-age", cacheControl{}, 0, 0, 0},
	}
	for _, tc := range cases {
		store, age := freshness(tc.cc, tc.ttl)
		if store != tc.wantStore || age != tc.wantAge {
			t.Errorf("%s: store %v max-age %v, want %v %v", tc.name, store, age, tc.wantStore, tc.wantAge)
		}
	}
}

func TestScopedKey(t *testing.T) {
	cases := []struct{ key, ns, scope, want string }{
		{"switchyard:v1:abcd", "switchyard", "", "switchyard:v1:abcd"},
		{"switchyard:v1:abcd", "switchyard", "0123456789abcdef", "switchyard:0123456789abcdef:v1:abcd"},
		{"", "switchyard", "0123456789abcdef", ""},
		{"other:v1:abcd", "switchyard", "0123456789abcdef", "other:v1:abcd"},
	}
	for _, tc := range cases {
		if got := scopedKey(tc.key, tc.ns, tc.scope); got != tc.want {
			t.Errorf("scopedKey(%q, %q, %q) = %q, want %q", tc.key, tc.ns, tc.scope, got, tc.want)
		}
	}
	// The longest namespace still makes a legal memcached key, and scopes
	// never collide with each other or the unscoped key.
	ns := strings.Repeat("n", 64)
	derived, err := cachekey.Derive(ns, []byte(`{"model":"m","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := scopedKey(derived, ns, keyID("key-a")), scopedKey(derived, ns, keyID("key-b"))
	if len(a) > 250 || strings.ContainsAny(a, " \t\r\n\x00") || a == b || a == derived {
		t.Errorf("scoped keys %q %q (unscoped %q)", a, b, derived)
	}
	text := scopedKey(cachekey.FromText(ns, "name"), ns, keyID("key-a"))
	if text == a || !strings.HasPrefix(text, ns+":"+keyID("key-a")+":v1:") {
		t.Errorf("scoped text key %q", text)
	}
}

func TestKeyID(t *testing.T) {
	a, b := keyID("client-key-aaaa"), keyID("client-key-bbbb")
	if len(a) != 16 || strings.Trim(a, "0123456789abcdef") != "" || a == b || a != keyID("client-key-aaaa") {
		t.Errorf("keyID: %q %q", a, b)
	}
	if strings.Contains(a, "client") || strings.Contains(a, "aaaa") {
		t.Errorf("keyID %q shows the key", a)
	}
}

// TestAuthorizedScope: the scope is the id of the key the client sent,
// whichever of the keys it is.
func TestAuthorizedScope(t *testing.T) {
	s, _ := newStatusServer(t)
	st := s.st.Load()
	for _, tc := range []struct {
		auth, scope string
		ok          bool
	}{
		{"Bearer " + statusToken, keyID(statusToken), true},
		{"Bearer other-inbound-key-0", keyID("other-inbound-key-0"), true},
		{"Bearer nope", "", false},
		{"", "", false},
	} {
		var ctx fasthttp.RequestCtx
		if tc.auth != "" {
			ctx.Request.Header.Set("Authorization", tc.auth)
		}
		scope, ok := s.authorized(&ctx, st)
		if scope != tc.scope || ok != tc.ok {
			t.Errorf("%q: scope %q ok %v, want %q %v", tc.auth, scope, ok, tc.scope, tc.ok)
		}
	}
	// Without auth.keys: one scope, everyone allowed.
	var ctx fasthttp.RequestCtx
	if scope, ok := s.authorized(&ctx, &state{}); scope != "" || !ok {
		t.Errorf("no auth.keys: %q %v", scope, ok)
	}
}

func TestScrubAnswer(t *testing.T) {
	st := &state{secrets: []string{"sk-SECRET-key-1234"}, secretsB: [][]byte{[]byte("sk-SECRET-key-1234")}}
	clean := []byte(`{"choices":[{"message":{"content":"hello"}}]}`)
	before := secretEchoTotal.Get()
	if got := st.scrubAnswer(clean); &got[0] != &clean[0] || secretEchoTotal.Get() != before {
		t.Errorf("a clean answer was copied or counted")
	}
	echo := []byte(`{"choices":[{"message":{"content":"your key is sk-SECRET-key-1234"}}]}`)
	got := st.scrubAnswer(echo)
	if string(got) != `{"choices":[{"message":{"content":"your key is [redacted]"}}]}` || secretEchoTotal.Get() != before+1 {
		t.Errorf("scrubbed %s, counter +%d", got, secretEchoTotal.Get()-before)
	}
	if string(echo) != `{"choices":[{"message":{"content":"your key is sk-SECRET-key-1234"}}]}` {
		t.Errorf("the upstream's buffer was modified: %s", echo)
	}
	if got := (&state{}).scrubAnswer(nil); got != nil {
		t.Errorf("nil: %q", got)
	}
}
