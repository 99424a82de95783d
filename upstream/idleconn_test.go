package upstream

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"switchyard/config"
)

// tlsClient returns a Client for srv (an httptest TLS server) with the
// given first-token and idle timeouts.
func tlsClient(t *testing.T, srv *httptest.Server, first, idle time.Duration) *Client {
	t.Helper()
	c, err := New(config.Upstream{Name: "tls", Provider: "openai", BaseURL: srv.URL + "/v1", APIKey: "k",
		Timeout: 5 * time.Second, FirstTokenTimeout: first, IdleTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c.stream.TLSConfig.RootCAs = pool
	c.stream.TLSConfig.ServerName = "example.com" // the httptest certificate's name
	return c
}

// TestStreamOutlivesFirstTokenTimeoutOverTLS: over TLS the idle clock sees
// records, not HTTP; a healthy stream longer than the first-token timeout
// must still get its deadline pushed by every event.
func TestStreamOutlivesFirstTokenTimeoutOverTLS(t *testing.T) {
	const events = 8
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range events {
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"%d\"}}]}\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(250 * time.Millisecond) // 2s in all, each gap well within idle
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer srv.Close()
	c := tlsClient(t, srv, 700*time.Millisecond, 700*time.Millisecond)
	for round := range 2 { // the second round reuses the connection
		resp, err := c.Do(&Request{Body: []byte(`{"model":"m","stream":true}`), Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Stream == nil {
			t.Fatalf("round %d: status %d, no stream: %s", round, resp.Status, resp.Body)
		}
		n := 0
		for {
			_, err := resp.Stream.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("round %d: after %d events: %v", round, n, err)
			}
			n++
		}
		resp.Stream.Close(nil)
		if n != events+1 {
			t.Errorf("round %d: %d events, want %d", round, n, events+1)
		}
	}
}

// TestHeadersDribbledOverTLSAreCutAtFirstToken: response headers sent a
// byte at a time must not keep pushing the deadline, over TLS too.
func TestHeadersDribbledOverTLSAreCutAtFirstToken(t *testing.T) {
	const head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		for i := range len(head) { // ~8s for the whole header
			if _, err := conn.Write([]byte{head[i]}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}))
	defer srv.Close()
	c := tlsClient(t, srv, 700*time.Millisecond, 700*time.Millisecond)
	start := time.Now()
	resp, err := c.Do(&Request{Body: []byte(`{"model":"m","stream":true}`), Stream: true})
	d := time.Since(start)
	if err == nil {
		if resp.Stream != nil {
			resp.Stream.Close(errors.New("test done"))
		}
		t.Fatalf("Do succeeded after %v: status %d", d, resp.Status)
	}
	if !errors.Is(err, ErrFirstTokenTimeout) || d > 3*time.Second {
		t.Errorf("Do failed after %v with %v; want ErrFirstTokenTimeout at ~700ms", d, err)
	}
}
