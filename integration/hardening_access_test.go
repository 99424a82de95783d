package integration

// Issue 15, access rows: who may read /status and /metrics, what
// last_error and the log may say, whose cache entries a client sees, how
// long an entry may live, and where an echoed key may surface.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// getWith sends GET base+path with an optional Authorization header.
func getWith(t *testing.T, base, path, auth string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readAll(t, resp)
}

// cacheSection adds lines (each "  key: value\n") to a test's cache
// section: top is "" (embedded) or memcachedYAML's block.
func cacheSection(top, lines string) string {
	if top == "" {
		return "cache:\n" + lines
	}
	return top + lines
}

// TestStatusNeedsKeyOnAPIListener: with auth.keys and no admin_listen,
// /status and /metrics on the API listener used to answer anyone, and
// /status quotes upstream errors. They need a valid key now; /healthz
// stays open for probes, and admin_listen stays the operator's, open.
func TestStatusNeedsKeyOnAPIListener(t *testing.T) {
	const key = "client-key-status-1111"
	up := newFake(t, okJSON("x"))
	auth := fmt.Sprintf("auth:\n  keys: [%q]\n", key)
	p := startProxy(t, testConfig(auth, upstreamYAML("one", up.BaseURL(), "k", 1, "")))

	for _, path := range []string{"/status", "/metrics", "/status?format=html"} {
		for _, bad := range []string{"", "Bearer wrong-key", "Basic " + key, "Bearer " + key + "x"} {
			r, b := getWith(t, p.URL, path, bad)
			if r.StatusCode != 401 {
				t.Errorf("%s with Authorization %q: %d, want 401: %.200s", path, bad, r.StatusCode, b)
				continue
			}
			if _, typ, code := apiErr(t, b); typ != "authentication_error" || code != "invalid_api_key" {
				t.Errorf("%s: 401 type %q code %q", path, typ, code)
			}
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 without WWW-Authenticate", path)
			}
			if strings.Contains(string(b), "upstreams") || strings.Contains(string(b), "switchyard_") {
				t.Errorf("%s: a 401 that carries the report: %.200s", path, b)
			}
		}
		if r, b := getWith(t, p.URL, path, "Bearer "+key); r.StatusCode != 200 {
			t.Errorf("%s with the key: %d: %.200s", path, r.StatusCode, b)
		}
	}
	if r, _ := getWith(t, p.URL, "/healthz", ""); r.StatusCode != 200 {
		t.Errorf("/healthz without a key: %d, want 200 (probes send none)", r.StatusCode)
	}

	// On admin_listen the operator's endpoints stay open; the API listener
	// still does not serve them, key or not.
	pa := startProxy(t, testConfig(auth+`admin_listen: "127.0.0.1:0"`+"\n", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	for _, path := range []string{"/status", "/metrics", "/healthz"} {
		if r, b := getWith(t, pa.Admin, path, ""); r.StatusCode != 200 {
			t.Errorf("admin %s without a key: %d: %.200s", path, r.StatusCode, b)
		}
	}
	for _, path := range []string{"/status", "/metrics"} {
		if r, _ := getWith(t, pa.URL, path, "Bearer "+key); r.StatusCode != 404 {
			t.Errorf("API listener %s with admin_listen set: %d, want 404", path, r.StatusCode)
		}
	}
}

// TestLastErrorHoldsNoRequestText: upstream error messages often quote
// the request (a 400 naming the bad content, a moderation verdict), and
// /status's last_error and the log's stream_error quoted them verbatim, so
// an operator page showed another client's prompt. They now say the
// upstream's status, type and code, or the proxy's own words.
func TestLastErrorHoldsNoRequestText(t *testing.T) {
	const private = "078-05-1120"
	prompt := "my SSN is " + private
	echo := func(status int, typ, code string) http.HandlerFunc {
		return statusHandler(status, fmt.Sprintf(`{"error":{"message":"could not process 'my SSN is %s'","type":%q,"param":"messages","code":%q}}`, private, typ, code))
	}
	// a fails with a 500, b rejects the request (returned at once): m1.
	a := newFake(t, echo(500, "server_error", "engine_error"))
	b := newFake(t, echo(400, "invalid_request_error", "invalid_value"))
	// c answers 200 with an error object: m2.
	c := newFake(t, echo(200, "server_error", "moderation_failed"))
	// d sends one event, then an in-band error: m3.
	d := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, chunk("m3", "Hel", ""))
		w.(http.Flusher).Flush()
		fmt.Fprintf(w, "data: {\"error\":{\"message\":\"flagged: my SSN is %s\",\"type\":\"server_error\",\"code\":\"content_filter\"}}\n\n", private)
	})
	// e refuses connections: m4.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/v1"
	ln.Close()

	cfg := testConfig("",
		upstreamYAML("a", a.BaseURL(), "ka", 1, "    models: {m1: m1}\n"),
		upstreamYAML("b", b.BaseURL(), "kb", 2, "    models: {m1: m1}\n"),
		upstreamYAML("c", c.BaseURL(), "kc", 1, "    models: {m2: m2}\n"),
		upstreamYAML("d", d.BaseURL(), "kd", 1, "    models: {m3: m3}\n"),
		upstreamYAML("e", closed, "ke", 1, "    models: {m4: m4}\n"))
	cfg = strings.Replace(cfg, "log_level: debug", "log_level: info", 1) // the default level: debug may say more
	p := startProxy(t, cfg)

	body := func(model string, stream bool) string {
		return fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":%q}]}`, model, stream, prompt)
	}
	for _, tc := range []struct {
		model  string
		stream bool
		status int
	}{{"m1", false, 400}, {"m2", false, 502}, {"m3", true, 200}, {"m4", false, 502}} {
		r := post(t, p.URL, body(tc.model, tc.stream), noStore...)
		readAll2(r)
		if r.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.model, r.StatusCode, tc.status)
		}
	}

	want := map[string]string{
		"a": "HTTP 500 server_error engine_error",
		"b": "HTTP 400 invalid_request_error invalid_value",
		"c": "in-band error server_error moderation_failed",
		"d": "in-band error server_error content_filter",
		"e": "connection refused",
	}
	var st obsStatus
	var raw []byte
	deadline := time.Now().Add(3 * time.Second) // a stream's end is recorded after its last byte
	for {
		st, raw = obsFetchStatus(t, p.Admin)
		if u := st.upstream("d"); (u != nil && u.LastError != nil && *u.LastError != "") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, w := range want {
		u := st.upstream(name)
		if u == nil || u.LastError == nil || *u.LastError != w {
			got := "<none>"
			if u != nil && u.LastError != nil {
				got = *u.LastError
			}
			t.Errorf("%s: last_error %q, want %q", name, got, w)
		}
	}
	_, page := obsGetStatus(t, p.Admin, obsBrowserAccept)
	if !p.WaitLog(`"stream_error"`) {
		t.Errorf("no stream_error logged for d's in-band error")
	}
	for where, text := range map[string]string{"/status JSON": string(raw), "/status HTML": string(page), "log": p.Logs()} {
		for _, s := range []string{private, "SSN", "could not process", "flagged"} {
			if i := strings.Index(text, s); i >= 0 {
				t.Errorf("%s quotes request text %q: ...%s...", where, s, text[max(i-150, 0):min(i+80, len(text))])
			}
		}
	}
}

// TestCacheEntriesScopedPerInboundKey: with two auth.keys clients, B used
// to read A's X-Cache-Key entries with any body, overwrite them, share
// A's answers to identical bodies (and learn from Age when A asked), and
// wait on A's requests in flight. Entries are per inbound key now;
// cache.shared_across_keys shares body-derived entries, never named ones.
func TestCacheEntriesScopedPerInboundKey(t *testing.T) {
	const keyA, keyB = "client-key-aaaa-1111", "client-key-bbbb-2222"
	asA := []string{"Authorization", "Bearer " + keyA}
	asB := []string{"Authorization", "Bearer " + keyB}
	with := func(who []string, hdr ...string) []string { return append(append([]string{}, who...), hdr...) }
	onlyIfCached := func(t *testing.T, url, body string, hdr ...string) int {
		t.Helper()
		r := post(t, url, body, append([]string{"Cache-Control", "only-if-cached"}, hdr...)...)
		readAll(t, r)
		return r.StatusCode
	}
	auth := fmt.Sprintf("auth:\n  keys: [%q, %q]\n", keyA, keyB)

	cacheBackends(t, func(t *testing.T, top string) {
		up := newFake(t, okJSON("answer"))
		p := startProxy(t, testConfig(top+auth, upstreamYAML("one", up.BaseURL(), "k", 1, "")))

		// Identical bodies: A's entry is A's.
		b1 := `{"model":"m","messages":[{"role":"user","content":"scoped"}]}`
		readAll(t, post(t, p.URL, b1, asA...))
		waitHit(t, p.URL, b1, asA...)
		if code := onlyIfCached(t, p.URL, b1, asB...); code != 504 {
			t.Errorf("B got A's entry for an identical body: %d, want 504", code)
		}

		// X-Cache-Key: B can neither read nor overwrite A's name.
		name := []string{"X-Cache-Key", "interview-question-7"}
		rA := post(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"A asks"}]}`, with(asA, name...)...)
		ansA := readAll(t, rA)
		_, hitA := waitHit(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"anything"}]}`, with(asA, name...)...)
		if string(hitA) != string(ansA) {
			t.Fatalf("A's named entry is not A's answer")
		}
		if code := onlyIfCached(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"B reads"}]}`, with(asB, name...)...); code != 504 {
			t.Errorf("B read A's X-Cache-Key entry: %d, want 504", code)
		}
		readAll(t, post(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"B writes"}]}`, with(asB, name...)...))
		waitHit(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"x"}]}`, with(asB, name...)...)
		if _, again := waitHit(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"y"}]}`, with(asA, name...)...); string(again) != string(ansA) {
			t.Errorf("B's store replaced A's named entry:\n%s\nwant\n%s", again, ansA)
		}

		// Coalescing follows the scope: B does not wait on A's request.
		up.SetHandler(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(300 * time.Millisecond)
			okJSON("slow")(w, r)
		})
		calls := up.Calls()
		b2 := `{"model":"m","messages":[{"role":"user","content":"together"}]}`
		var wg sync.WaitGroup
		xc := make([]string, 2)
		for i, who := range [][]string{asA, asB} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := post(t, p.URL, b2, who...)
				readAll(t, r)
				xc[i] = r.Header.Get("X-Cache")
			}()
		}
		wg.Wait()
		if got := up.Calls() - calls; got != 2 || xc[0] != "MISS" || xc[1] != "MISS" {
			t.Errorf("A and B at once: %d upstream calls, X-Cache %v; want 2 calls, both MISS", got, xc)
		}
	})

	t.Run("shared_across_keys", func(t *testing.T) {
		up := newFake(t, okJSON("answer"))
		p := startProxy(t, testConfig(cacheSection("", "  shared_across_keys: true\n")+auth, upstreamYAML("one", up.BaseURL(), "k", 1, "")))
		b1 := `{"model":"m","messages":[{"role":"user","content":"shared"}]}`
		readAll(t, post(t, p.URL, b1, asA...))
		waitHit(t, p.URL, b1, asB...) // shared on request
		name := []string{"X-Cache-Key", "named"}
		readAll(t, post(t, p.URL, b1, with(asA, name...)...))
		waitHit(t, p.URL, b1, with(asA, name...)...)
		if code := onlyIfCached(t, p.URL, b1, with(asB, name...)...); code != 504 {
			t.Errorf("with sharing on, B read A's X-Cache-Key entry: %d, want 504", code)
		}
	})
}

// TestClientMaxAgeCappedByCacheTTL: a client's Cache-Control: max-age
// above cache.ttl used to store the answer for max-age, past the
// operator's TTL; and an entry stored before a reload shortened cache.ttl
// was served for the old TTL.
func TestClientMaxAgeCappedByCacheTTL(t *testing.T) {
	cacheBackends(t, func(t *testing.T, top string) {
		up := newFake(t, okJSON("fresh"))
		p := startProxy(t, testConfig(cacheSection(top, "  ttl: 1s\n"), upstreamYAML("one", up.BaseURL(), "k", 1, "")))
		body := `{"model":"m","messages":[{"role":"user","content":"long max-age"}]}`
		readAll(t, post(t, p.URL, body, "Cache-Control", "max-age=3600"))
		waitHit(t, p.URL, body, "Cache-Control", "only-if-cached, max-age=3600")
		time.Sleep(1300 * time.Millisecond)
		for _, cc := range []string{"only-if-cached, max-age=3600", "only-if-cached"} {
			r := post(t, p.URL, body, "Cache-Control", cc)
			b := readAll(t, r)
			if r.StatusCode != 504 {
				t.Errorf("Cache-Control %q 1.3 s after a store with cache.ttl 1s: %d %s (Age %q), want 504: %.100s",
					cc, r.StatusCode, r.Header.Get("X-Cache"), r.Header.Get("Age"), b)
			}
		}
	})

	t.Run("reload shortens ttl", func(t *testing.T) {
		up := newFake(t, okJSON("fresh"))
		cfg := testConfig("cache:\n  ttl: 1h\n", upstreamYAML("one", up.BaseURL(), "k", 1, ""))
		p := startProxy(t, cfg)
		body := `{"model":"m","messages":[{"role":"user","content":"before reload"}]}`
		readAll(t, post(t, p.URL, body))
		waitHit(t, p.URL, body)
		if err := os.WriteFile(p.cfgPath, []byte(strings.Replace(cfg, "ttl: 1h", "ttl: 1s", 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		p.Signal(syscall.SIGHUP)
		if !p.WaitLog(`"msg":"reloaded"`) {
			t.Fatal("no reload logged")
		}
		time.Sleep(1100 * time.Millisecond)
		r := post(t, p.URL, body, "Cache-Control", "only-if-cached")
		readAll(t, r)
		if r.StatusCode != 504 {
			t.Errorf("an entry older than the reloaded cache.ttl: %d %s (Age %q), want 504", r.StatusCode, r.Header.Get("X-Cache"), r.Header.Get("Age"))
		}
	})
}

// TestKeyEchoedIn200NotLeaked: an upstream that echoes its key inside a
// 200 answer (a debugging proxy, a misconfigured gateway) had it relayed
// and cached; error bodies were already scrubbed. Success bodies and
// stream events are scrubbed now too, and each echo is counted.
func TestKeyEchoedIn200NotLeaked(t *testing.T) {
	const key = "sk-echo-SECRET-1234abcd"
	plain := okJSON("your key is " + key)
	stream := sseHandler(streamScript{words: []string{key, " and again ", key}, usage: true})
	up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if bytes.Contains(body, []byte(`"stream":true`)) && !bytes.Contains(body, []byte("as-json")) {
			stream(w, r)
			return
		}
		plain(w, r)
	})
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), key, 1, "")))

	for _, tc := range []struct{ name, body string }{
		{"plain", `{"model":"m","messages":[{"role":"user","content":"echo plain"}]}`},
		{"stream", `{"model":"m","stream":true,"messages":[{"role":"user","content":"echo stream"}]}`},
		{"stream answered as JSON", `{"model":"m","stream":true,"messages":[{"role":"user","content":"as-json"}]}`},
	} {
		r := post(t, p.URL, tc.body)
		b := readAll(t, r)
		if r.StatusCode != 200 || strings.Contains(string(b), key) || !strings.Contains(string(b), "[redacted]") {
			t.Errorf("%s: status %d, body %.300q: want 200 with the key redacted", tc.name, r.StatusCode, b)
		}
		_, hit := waitHit(t, p.URL, tc.body)
		if strings.Contains(string(hit), key) || !strings.Contains(string(hit), "[redacted]") {
			t.Errorf("%s: the cached answer %.300q keeps the key", tc.name, hit)
		}
	}
	m, text := obsMetrics(t, p.Admin)
	if got := m.get("switchyard_secret_echo_total"); got < 3 {
		t.Errorf("switchyard_secret_echo_total = %v, want >= 3", got)
	}
	if strings.Contains(text, key) || strings.Contains(p.Logs(), key) {
		t.Error("the key is in /metrics or the log")
	}
}

// TestKeyEchoInErrorBodiesRedacted holds what already worked: an upstream
// that puts its key in a 400 (returned at once) or a 500 (relayed when it
// is the last failure) error message never shows it to the client, in
// /status or in the log.
func TestKeyEchoInErrorBodiesRedacted(t *testing.T) {
	const key = "sk-errecho-SECRET-5678efgh"
	up := newFake(t, nil)
	// Six 5xx in a row must not open the breaker: every answer here is relayed.
	cfg := strings.Replace(testConfig("", upstreamYAML("one", up.BaseURL(), key, 1, "")), "failure_threshold: 3", "failure_threshold: 100", 1)
	p := startProxy(t, cfg)
	for _, tc := range []struct {
		status int
		body   string
	}{
		{400, `{"error":{"message":"Invalid key format: ` + key + `","type":"invalid_request_error","param":null,"code":"invalid_value"}}`},
		{500, `{"error":{"message":"backend rejected ` + key + ` while serving","type":"server_error","param":null,"code":null}}`},
		{500, `{"error":"internal error for ` + key + `"}`},
	} {
		up.SetHandler(statusHandler(tc.status, tc.body))
		for _, stream := range []bool{false, true} {
			r := post(t, p.URL, fmt.Sprintf(`{"model":"m","stream":%v,"messages":[{"role":"user","content":"q"}]}`, stream), noStore...)
			b := readAll(t, r)
			if r.StatusCode != tc.status || strings.Contains(string(b), key) || strings.Contains(fmt.Sprint(r.Header), key) {
				t.Errorf("%d (stream %v): status %d, body %s", tc.status, stream, r.StatusCode, b)
				continue
			}
			if msg, _, _ := apiErr(t, b); !strings.Contains(msg, "[redacted]") {
				t.Errorf("%d (stream %v): message %q, want the key as [redacted]", tc.status, stream, msg)
			}
		}
	}
	_, st := obsFetchStatus(t, p.Admin)
	if strings.Contains(string(st), key) || strings.Contains(p.Logs(), key) {
		t.Error("the key is in /status or the log")
	}
}
