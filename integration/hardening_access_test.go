package integration

// Issue 15, access rows: who may read /status and /metrics, what
// last_error and the log may say, whose cache entries a client sees, how
// long an entry may live, and where an echoed key may surface.

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
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
