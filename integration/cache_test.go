package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// cacheBackends runs a test against the embedded cache and a real memcached.
func cacheBackends(t *testing.T, run func(t *testing.T, top string)) {
	t.Run("embedded", func(t *testing.T) { run(t, "") })
	t.Run("memcached", func(t *testing.T) {
		m := startMemcached(t)
		run(t, memcachedYAML(m.Addr()))
	})
}

func TestCacheHitWithReorderedKeys(t *testing.T) {
	cacheBackends(t, func(t *testing.T, top string) {
		up := newFake(t, okJSON("cached answer"))
		p := startProxy(t, testConfig(top, upstreamYAML("one", up.BaseURL(), "k", 1, "")))
		a := `{"model":"m","messages":[{"role":"user","content":"q1"}],"temperature":1}`
		b := `{ "temperature" : 1.0, "messages":[{"content":"q1","role":"user"}], "model":"m" }`
		r1 := post(t, p.URL, a)
		b1 := readAll(t, r1)
		if r1.Header.Get("X-Cache") != "MISS" {
			t.Fatalf("first X-Cache = %q", r1.Header.Get("X-Cache"))
		}
		waitHit(t, p.URL, a) // the store is asynchronous
		r2 := post(t, p.URL, b)
		b2 := readAll(t, r2)
		if r2.Header.Get("X-Cache") != "HIT" {
			t.Fatalf("repeat X-Cache = %q", r2.Header.Get("X-Cache"))
		}
		if string(b1) != string(b2) {
			t.Errorf("hit body differs:\n%s\n%s", b1, b2)
		}
		if r2.Header.Get("Age") == "" {
			t.Error("hit without Age")
		}
		if up.Calls() != 1 {
			t.Errorf("upstream called %d times, want 1", up.Calls())
		}
	})
}

// waitHit waits until body is cached (the store is asynchronous), asking
// with Cache-Control: only-if-cached so that the upstream is never called,
// and returns the hit.
func waitHit(t *testing.T, url, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var r *http.Response
	var b []byte
	for i := 0; i < 100; i++ {
		r = post(t, url, body, append([]string{"Cache-Control", "only-if-cached"}, hdr...)...)
		b = readAll(t, r)
		if r.StatusCode == 200 && r.Header.Get("X-Cache") == "HIT" {
			return r, b
		}
		if r.StatusCode != 504 {
			t.Fatalf("only-if-cached: status %d %s", r.StatusCode, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("never cached; last X-Cache %q: %s", r.Header.Get("X-Cache"), b)
	return nil, nil
}

func TestStreamAndPlainShareEntries(t *testing.T) {
	cacheBackends(t, func(t *testing.T, top string) {
		up := newFake(t, nil)
		p := startProxy(t, testConfig(top, upstreamYAML("one", up.BaseURL(), "k", 1, "")))

		// Stream first, then plain: the plain answer is assembled.
		up.SetHandler(sseHandler(streamScript{words: []string{"Hel", "lo"}, usage: true}))
		streamBody := `{"model":"m","stream":true,"messages":[{"role":"user","content":"s1"}]}`
		first := readAll(t, post(t, p.URL, streamBody))
		// The same stream again is replayed byte for byte.
		_, replay := waitHit(t, p.URL, streamBody)
		if string(replay) != string(first) {
			t.Errorf("replayed stream differs:\n%q\n%q", first, replay)
		}
		_, plain := waitHit(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"s1"}]}`)
		var c struct {
			Object  string
			Choices []struct {
				Message      struct{ Role, Content string }
				FinishReason string `json:"finish_reason"`
			}
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
			}
		}
		if err := json.Unmarshal(plain, &c); err != nil || c.Object != "chat.completion" || c.Choices[0].Message.Content != "Hello" || c.Choices[0].FinishReason != "stop" {
			t.Errorf("assembled completion %s (%v)", plain, err)
		}

		// Plain first, then stream: the stream is synthesized.
		up.SetHandler(okJSON("Synth"))
		readAll(t, post(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"p1"}]}`))
		waitHit(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"p1"}]}`) // stored
		r, ev := waitHit(t, p.URL, `{"model":"m","stream":true,"messages":[{"role":"user","content":"p1"}]}`)
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "text/event-stream") || !strings.Contains(string(ev), `"Synth"`) || !strings.HasSuffix(string(ev), "data: [DONE]\n\n") {
			t.Errorf("synthesized stream %q (%s)", ev, r.Header.Get("Content-Type"))
		}
		if up.Calls() != 2 {
			t.Errorf("upstream calls %d, want 2", up.Calls())
		}
	})
}

func TestCacheControlAndCustomKey(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	body := `{"model":"m","messages":[{"role":"user","content":"cc"}]}`

	r := post(t, p.URL, body, "Cache-Control", "no-store")
	readAll(t, r)
	if r.Header.Get("X-Cache") != "BYPASS" {
		t.Errorf("no-store X-Cache %q", r.Header.Get("X-Cache"))
	}
	time.Sleep(100 * time.Millisecond)
	r = post(t, p.URL, body, "Cache-Control", "no-cache")
	readAll(t, r)
	if r.Header.Get("X-Cache") != "BYPASS" {
		t.Errorf("no-cache X-Cache %q", r.Header.Get("X-Cache"))
	}
	if up.Calls() != 2 {
		t.Errorf("calls %d, want 2 (no-store stored nothing)", up.Calls())
	}
	waitHit(t, p.URL, body) // no-cache stored its fresh answer

	// X-Cache-Key names the entry: different bodies, same key, one call.
	calls := up.Calls()
	readAll(t, post(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"A"}]}`, "X-Cache-Key", "question_software_engineer_medium"))
	waitHit(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"B"}]}`, "X-Cache-Key", "question_software_engineer_medium")
	if up.Calls() != calls+1 {
		t.Errorf("custom key: calls %d, want %d", up.Calls(), calls+1)
	}
}

func TestFailuresAreNotCached(t *testing.T) {
	up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(500)
		fmt.Fprint(w, `{"error":{"message":"boom","type":"server_error"}}`)
	})
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	for i := 0; i < 2; i++ { // the upstream's own error, relayed each time
		r := post(t, p.URL, simpleBody)
		b := readAll(t, r)
		if r.StatusCode != 500 {
			t.Fatalf("status %d %s", r.StatusCode, b)
		}
		apiErr(t, b)
	}
	// A cut stream is not cached either.
	up.SetHandler(sseHandler(streamScript{words: []string{"a", "b", "c"}, cutAfter: 2}))
	sb := `{"model":"m","stream":true,"messages":[{"role":"user","content":"cut"}]}`
	for i := 0; i < 2; i++ {
		r := post(t, p.URL, sb)
		readAll2(r)
		if r.Header.Get("X-Cache") == "HIT" {
			t.Fatal("a cut stream was served from cache")
		}
	}
	// A stream that is only [DONE] is no answer, and is not cached.
	up.SetHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: [DONE]\n\n")
	})
	eb := `{"model":"m","stream":true,"messages":[{"role":"user","content":"empty"}]}`
	for i := 0; i < 2; i++ {
		r := post(t, p.URL, eb)
		readAll2(r)
		if r.Header.Get("X-Cache") == "HIT" {
			t.Fatal("an empty stream was served from cache")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Nor is a 200 that carries an error object.
	up.SetHandler(statusHandler(200, `{"error":{"message":"engine overloaded","type":"server_error"}}`))
	r := post(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"err200"}]}`)
	b := readAll(t, r)
	if r.StatusCode != 502 {
		t.Errorf("200 with an error object: status %d %s", r.StatusCode, b)
	}
	if up.Calls() != 7 {
		t.Errorf("calls %d, want 7", up.Calls())
	}
}

func readAll2(r *http.Response) {
	defer r.Body.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := r.Body.Read(buf); err != nil {
			return
		}
	}
}

func TestCoalescing(t *testing.T) {
	cacheBackends(t, func(t *testing.T, top string) {
		up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(400 * time.Millisecond)
			okJSON("slow")(w, r)
		})
		p := startProxy(t, testConfig(top, upstreamYAML("one", up.BaseURL(), "k", 1, "")))
		const n = 8
		var wg sync.WaitGroup
		bodies := make([]string, n)
		xc := make([]string, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				r := post(t, p.URL, `{"model":"m","messages":[{"role":"user","content":"same"}]}`)
				bodies[i] = string(readAll(t, r))
				xc[i] = r.Header.Get("X-Cache")
			}(i)
		}
		wg.Wait()
		if up.Calls() != 1 {
			t.Errorf("upstream calls %d, want 1 (X-Cache: %v)", up.Calls(), xc)
		}
		for i := 1; i < n; i++ {
			if bodies[i] != bodies[0] {
				t.Errorf("response %d differs", i)
			}
		}
	})
}

func TestMemcachedStoppedMidRun(t *testing.T) {
	m := startMemcached(t)
	up := newFake(t, okJSON("x"))
	// Without the near cache, so that a hit below proves memcached stores
	// again (the near cache would keep answering while memcached is down).
	p := startProxy(t, testConfig(memcachedRoundTripYAML(m.Addr()), upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	body := func(i int) string {
		return fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"q%d"}]}`, i)
	}
	readAll(t, post(t, p.URL, body(0)))
	waitHit(t, p.URL, body(0))

	m.Stop()
	for i := 1; i <= 30; i++ {
		r := post(t, p.URL, body(i))
		b := readAll(t, r)
		if r.StatusCode != 200 {
			t.Fatalf("request %d with memcached down: %d %s", i, r.StatusCode, b)
		}
	}
	m.Start()
	// Caching resumes by itself once the cache breaker lets a probe through.
	deadline := time.Now().Add(15 * time.Second)
	for i := 100; ; i++ {
		readAll(t, post(t, p.URL, body(i)))
		time.Sleep(50 * time.Millisecond)
		r := post(t, p.URL, body(i))
		readAll(t, r)
		if r.Header.Get("X-Cache") == "HIT" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("caching did not resume after memcached came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
