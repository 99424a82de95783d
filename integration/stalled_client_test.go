package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStalledStreamClientReleasedAfterWriteTimeout: a client that stops
// reading a stream is cut after write_timeout, and the upstream stream is
// released then (not after a 30-minute write deadline); the request is
// logged as a client abort.
func TestStalledStreamClientReleasedAfterWriteTimeout(t *testing.T) {
	released := make(chan time.Time, 1)
	big := strings.Repeat("x", 16<<10)
	up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		deadline := time.Now().Add(20 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			// 16 KiB events as fast as the proxy takes them: they fill the
			// socket buffers once the client stops reading.
			if _, err := fmt.Fprintf(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", big); err != nil {
				released <- time.Now()
				return
			}
			fl.Flush()
		}
	})
	p := startProxy(t, testConfig("write_timeout: 1s\n", upstreamYAML("one", up.BaseURL(), "k", 1, "")))

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"a long answer"}]}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("status line %q: %v", line, err)
	}
	stalled := time.Now() // from here on the client reads nothing
	select {
	case at := <-released:
		// write_timeout 1s after the socket buffers filled (which takes a
		// moment at loopback speed).
		if d := at.Sub(stalled); d > 8*time.Second {
			t.Errorf("upstream released %v after the client stalled, want within a few seconds of write_timeout 1s", d)
		}
	case <-time.After(12 * time.Second):
		t.Fatal("upstream stream still held 12s after the client stopped reading (write_timeout 1s)")
	}
	if !p.WaitLog(`"status":499`) || !strings.Contains(p.Logs(), "client went away") {
		t.Errorf("the stalled client is not logged as a client abort:\n%s", p.Logs())
	}
}
