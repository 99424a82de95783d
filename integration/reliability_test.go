package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestInboundAuth(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("auth:\n  keys: [\"${SY_TEST_KEY}\"]\n", upstreamYAML("one", up.BaseURL(), "k", 1, "")), "SY_TEST_KEY=sy-client-key-1")
	for _, tc := range []struct {
		auth   string
		status int
	}{
		{"", 401},
		{"Bearer wrong", 401},
		{"Basic sy-client-key-1", 401},
		{"Bearer sy-client-key-1", 200},
		{"bearer sy-client-key-1", 200},
	} {
		req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", strings.NewReader(simpleBody))
		req.Header.Set("Content-Type", "application/json")
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := readAll(t, resp)
		if resp.StatusCode != tc.status {
			t.Errorf("Authorization %q: status %d, want %d: %s", tc.auth, resp.StatusCode, tc.status, b)
		}
		if tc.status == 401 {
			if _, typ, _ := apiErr(t, b); typ != "authentication_error" {
				t.Errorf("type %q", typ)
			}
		}
	}
	// The client's own key never reaches the upstream.
	if got := up.LastHeader().Get("Authorization"); got != "Bearer k" {
		t.Errorf("upstream Authorization %q", got)
	}
}

func TestReloadOnSIGHUP(t *testing.T) {
	a := newFake(t, okJSON("a"))
	b := newFake(t, okJSON("b"))
	slow := newFake(t, sseHandler(streamScript{words: []string{"1", "2", "3", "4", "5", "6"}, delay: 150 * time.Millisecond}))
	cfgA := testConfig("", upstreamYAML("a", a.BaseURL(), "ka", 1, "    models: {m: m}\n"),
		upstreamYAML("s", slow.BaseURL(), "ks", 1, "    models: {slow: slow}\n"))
	p := startProxy(t, cfgA)
	mBody := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	if r := post(t, p.URL, mBody, noStore...); r.Header.Get("X-Upstream") != "a" {
		t.Fatalf("before reload X-Upstream %q", r.Header.Get("X-Upstream"))
	}

	// A stream in flight survives the reload.
	resp := post(t, p.URL, `{"model":"slow","stream":true,"messages":[]}`, noStore...)
	br := bufio.NewReader(resp.Body)
	if _, err := readEvent(br); err != nil {
		t.Fatal(err)
	}

	// An invalid file is rejected and the running config stays.
	if err := os.WriteFile(p.cfgPath, []byte("upstreams: [{name: x, provider: nope}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	if !p.WaitLog("reload rejected") {
		t.Fatalf("no rejection logged:\n%s", p.Logs())
	}
	if r := post(t, p.URL, mBody, noStore...); r.StatusCode != 200 || r.Header.Get("X-Upstream") != "a" {
		t.Fatalf("after a rejected reload: %d %q", r.StatusCode, r.Header.Get("X-Upstream"))
	}

	// A valid file replaces the upstreams.
	cfgB := testConfig("", upstreamYAML("b", b.BaseURL(), "kb", 1, "    models: {m: m}\n"),
		upstreamYAML("s", slow.BaseURL(), "ks", 1, "    models: {slow: slow}\n"))
	if err := os.WriteFile(p.cfgPath, []byte(cfgB), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	if !p.WaitLog(`"msg":"reloaded"`) {
		t.Fatalf("no reload logged:\n%s", p.Logs())
	}
	r := post(t, p.URL, mBody, noStore...)
	readAll(t, r)
	if r.Header.Get("X-Upstream") != "b" {
		t.Errorf("after reload X-Upstream %q", r.Header.Get("X-Upstream"))
	}
	rest, err := io.ReadAll(br)
	resp.Body.Close()
	if err != nil || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("the in-flight stream broke on reload: %v %q", err, rest)
	}
}

func TestHeaderFloodAndSlowClient(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	// Headers over the 8 KiB read buffer: 431 in OpenAI's shape.
	req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", strings.NewReader(simpleBody))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i < 200; i++ {
		req.Header.Set(fmt.Sprintf("X-Flood-%d", i), strings.Repeat("f", 100))
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b := readAll(t, resp)
	if resp.StatusCode != 431 {
		t.Errorf("header flood: status %d %s", resp.StatusCode, b)
	} else {
		apiErr(t, b)
	}
}

func TestSlowlorisClientIsCutOff(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("read_timeout: 1s\n", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	// A client that sends half a request and stalls does not block others,
	// and is disconnected once read_timeout passes.
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"model\"")
	r := post(t, p.URL, simpleBody)
	readAll(t, r)
	if r.StatusCode != 200 {
		t.Errorf("with a stalled client connected: %d", r.StatusCode)
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(6 * time.Second))
	_, err = io.ReadAll(conn) // whatever the server says, it must then close
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the stalled connection was still open after %v", time.Since(start))
	}
}
