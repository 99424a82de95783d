package integration

// Issue 15, the edge of the server: what a client sees when its request is
// rejected before the handler (413, 431, 400, 408). Every test talks to
// 127.0.0.1 only and bounds its loops and deadlines.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// edgeAddr is the proxy's host:port.
func edgeAddr(p *proxyProc) string { return strings.TrimPrefix(p.URL, "http://") }

// edgeRaw writes payload on a new connection and reads one response, all
// within d. The response body is read whole.
func edgeRaw(t *testing.T, addr, payload string, d time.Duration) (*http.Response, []byte, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(conn, payload); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// edgeOpenAIError checks body is OpenAI's error shape with exactly these
// type and code, and a present, null param.
func edgeOpenAIError(t *testing.T, body []byte, typ, code string) {
	t.Helper()
	var e struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		t.Fatalf("not an OpenAI-shaped error: %q", body)
	}
	var msg, gotType, gotCode string
	_ = json.Unmarshal(e.Error["message"], &msg)
	_ = json.Unmarshal(e.Error["type"], &gotType)
	_ = json.Unmarshal(e.Error["code"], &gotCode)
	if msg == "" || gotType != typ || gotCode != code {
		t.Errorf("error %s: want type %q code %q and a message", body, typ, code)
	}
	if p, ok := e.Error["param"]; !ok || string(p) != "null" {
		t.Errorf("error %s: want \"param\":null", body)
	}
}

// edgeBigBody is a chat body of about n bytes.
func edgeBigBody(n int) []byte {
	head := `{"model":"test-model","messages":[{"role":"user","content":"`
	tail := `"}]}`
	return []byte(head + strings.Repeat("a", max(n-len(head)-len(tail), 0)) + tail)
}

// edgeWriteAllThenRead writes head and body whole before reading a byte,
// as Python's httpx (h11) does, and returns the answer.
func edgeWriteAllThenRead(t *testing.T, addr, head string, body []byte) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatalf("writing the head: %v", err)
	}
	if _, err := conn.Write(body); err != nil {
		t.Fatalf("writing the body: %v (want it drained, then the answer)", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	return resp, b
}

// The oversize bodies below are larger than what the kernel buffers on
// loopback without the proxy reading (the client's send buffer grows to 4
// MiB): a proxy that closes without draining resets the client mid-write,
// every time.

// TestOversizeBodyWithoutExpectGetsReadable413: an SDK sends a body over
// max_body_bytes without Expect: 100-continue. It must read the 413, not a
// connection reset in the middle of its write (which the OpenAI SDKs report
// as a connection error and retry).
func TestOversizeBodyWithoutExpectGetsReadable413(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("max_body_bytes: 4194304\n", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	body := edgeBigBody(7 << 20) // 1.75 × the limit

	t.Run("net/http with Content-Length", func(t *testing.T) {
		req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("%v (want a readable 413)", err)
		}
		b := readAll(t, resp)
		if resp.StatusCode != 413 {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
		edgeOpenAIError(t, b, "invalid_request_error", "request_too_large")
	})
	t.Run("net/http chunked", func(t *testing.T) {
		// No length: Transfer-Encoding: chunked. (net/http sends it as one
		// chunk, which fasthttp rejects by its size line.)
		req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", io.MultiReader(bytes.NewReader(body)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("%v (want a readable 413)", err)
		}
		b := readAll(t, resp)
		if resp.StatusCode != 413 {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
		edgeOpenAIError(t, b, "invalid_request_error", "request_too_large")
	})
	t.Run("write all, then read", func(t *testing.T) {
		head := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
		resp, b := edgeWriteAllThenRead(t, edgeAddr(p), head, body)
		if resp.StatusCode != 413 {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
		edgeOpenAIError(t, b, "invalid_request_error", "request_too_large")
	})
	if up.Calls() != 0 {
		t.Errorf("an oversize body reached the upstream %d times", up.Calls())
	}
}

// TestOversizeHeadersWithBodyGetReadable431: headers over the 8 KiB read
// buffer, followed by a body the proxy never reads: the client reads the
// 431.
func TestOversizeHeadersWithBodyGetReadable431(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	body := edgeBigBody(8 << 20)
	big := strings.Repeat("h", 9<<10)

	t.Run("net/http", func(t *testing.T) {
		req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Big", big)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("%v (want a readable 431)", err)
		}
		b := readAll(t, resp)
		if resp.StatusCode != 431 {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
		edgeOpenAIError(t, b, "invalid_request_error", "headers_too_large")
	})
	t.Run("write all, then read", func(t *testing.T) {
		head := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\nContent-Length: %d\r\n\r\n", big, len(body))
		resp, b := edgeWriteAllThenRead(t, edgeAddr(p), head, body)
		if resp.StatusCode != 431 {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
		edgeOpenAIError(t, b, "invalid_request_error", "headers_too_large")
	})
}

// TestOversizeBodyDrainStopsAtBound: the lingering close that lets a client
// read its 413 is bounded: a client that keeps sending past twice
// max_body_bytes is cut off, and one that keeps trickling is cut off at
// read_timeout.
func TestOversizeBodyDrainStopsAtBound(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("max_body_bytes: 65536\nread_timeout: 1s\n", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	head := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 1<<30)

	t.Run("endless body", func(t *testing.T) {
		conn, err := net.Dial("tcp", edgeAddr(p))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, head)
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		start := time.Now()
		_ = conn.SetWriteDeadline(start.Add(10 * time.Second))
		var sent int
		for sent < 256<<20 { // the proxy must stop reading long before
			n, err := conn.Write(chunk)
			sent += n
			if err != nil {
				break
			}
		}
		if sent >= 256<<20 {
			t.Fatalf("the proxy read %d bytes of an oversize body", sent)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("cut off after %v", d)
		}
	})
	t.Run("trickling body", func(t *testing.T) {
		conn, err := net.Dial("tcp", edgeAddr(p))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, head)
		start := time.Now()
		_ = conn.SetDeadline(start.Add(6 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("reading the 413: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		for { // a byte every 100 ms: never silent for long, never done
			if _, err := conn.Write([]byte("a")); err != nil {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatal("the proxy still reads after 5s (read_timeout: 1s)")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
			t.Errorf("cut off after %v, want about read_timeout (1s)", d)
		}
	})
}

// edgeLogLines returns the proxy's log lines that parse as JSON objects,
// and fails the test on any that does not.
func edgeLogLines(t *testing.T, p *proxyProc) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimRight(p.Logs(), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("a log line that is not JSON: %q", line)
			continue
		}
		out = append(out, m)
	}
	return out
}

// TestRejectedRequestsAreCountedAndLogged: requests fasthttp rejects before
// the handler (413, 431, 400, 408) show in switchyard_requests_total under
// route="rejected" and get one log line each with a reason, without any of
// the request's own text.
func TestRejectedRequestsAreCountedAndLogged(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("max_body_bytes: 4096\nread_timeout: 1s\n", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	addr := edgeAddr(p)
	const secret = "sk-edge-secret-0123456789" // in headers and bodies; never in the log

	auth := "Authorization: Bearer " + secret + "\r\n"
	cases := []struct {
		name, payload string
		status        int
		reason        string
	}{
		{"413", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 100000\r\n\r\n" + secret, 413, "body_too_large"},
		{"431", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth + "X-Big: " + strings.Repeat(secret, 400) + "\r\nContent-Length: 2\r\n\r\n{}", 431, "headers_too_large"},
		{"400 malformed", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "malformed"},
		{"400 bare LF", "POST /v1/chat/completions HTTP/1.1\nHost: x\nAuthorization: Bearer " + secret + "\nContent-Length: 2\n\n{}", 400, "bare_lf"},
		{"408", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 100\r\n\r\n{", 408, "timeout"},
	}
	perStatus := map[int]float64{}
	for _, tc := range cases {
		resp, b, err := edgeRaw(t, addr, tc.payload, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d %s", tc.name, resp.StatusCode, b)
		}
		perStatus[tc.status]++
	}
	for status, want := range perStatus {
		name := fmt.Sprintf(`switchyard_requests_total{route="rejected",status="%d"}`, status)
		if v := scrape(t, p.URL, name); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	// Log lines are written off the request path: wait for the last one.
	if !p.WaitLog(`"reason":"timeout"`) {
		t.Fatalf("no rejection logged with reason timeout")
	}
	got := map[string]int{}
	for _, m := range edgeLogLines(t, p) {
		if m["msg"] != "request rejected" {
			continue
		}
		if m["route"] != "rejected" {
			t.Errorf("rejection logged with route %v", m["route"])
		}
		if m["level"] != "WARN" && m["level"] != "INFO" {
			t.Errorf("rejection logged at %v", m["level"])
		}
		st, _ := m["status"].(float64)
		got[fmt.Sprintf("%d %v", int(st), m["reason"])]++
	}
	for _, tc := range cases {
		if k := fmt.Sprintf("%d %s", tc.status, tc.reason); got[k] != 1 {
			t.Errorf("log lines for %s: %d, want 1 (all: %v)", k, got[k], got)
		}
	}
	if strings.Contains(p.Logs(), secret[:12]) {
		t.Errorf("request text reached the log:\n%s", p.Logs())
	}
}

// TestBareLFRequestGets400AtOnce: a request whose header block ends in bare
// LF line endings used to wait for a CRLFCRLF that never comes until
// read_timeout (30 s), then 408. It gets an OpenAI-shaped 400 at once.
func TestBareLFRequestGets400AtOnce(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	good := "{\"model\":\"test-model\",\n\n\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"
	cases := []struct {
		name, payload string
		status        int
	}{
		{"full request", "POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 2\n\n{}", 400},
		{"headers only", "GET /healthz HTTP/1.1\nHost: x\n\n", 400},
		{"CRLF request line, LF headers", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\nContent-Length: 2\n\n{}", 400},
		{"LF headers, CRLF blank line", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\nContent-Length: 2\n\r\n{}", 400},
		// What must not be mistaken for one: CRLF headers, a body with blank LF lines.
		{"CRLF headers", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200},
		{"body with blank LF lines", fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(good), good), 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, b, err := edgeRaw(t, edgeAddr(p), tc.payload, 3*time.Second)
			if err != nil {
				t.Fatalf("after %v: %v", time.Since(start), err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, b, tc.status)
			}
			if tc.status == 400 {
				edgeOpenAIError(t, b, "invalid_request_error", "bad_request")
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("answered after %v", d)
			}
		})
	}
	// A client that writes its head a line at a time.
	conn, err := net.Dial("tcp", edgeAddr(p))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetDeadline(start.Add(3 * time.Second))
	for _, line := range []string{"GET /healthz HTTP/1.1\n", "Host: x\n", "\n"} {
		if _, err := io.WriteString(conn, line); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("a head written line by line: %v after %v", err, time.Since(start))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 400 {
		t.Errorf("a head written line by line: %d, want 400", resp.StatusCode)
	}
	if up.Calls() != 1 {
		t.Errorf("the upstream got %d requests, want 1 (the CRLF one)", up.Calls())
	}
}
