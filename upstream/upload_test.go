package upstream

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"switchyard/config"
	"switchyard/openai"
)

// TestDoSendsBodyStream: a request with a BodyStream goes to the
// endpoint's path with its Content-Type and length, the stream's bytes
// exactly, and can be sent again from a new reader.
func TestDoSendsBodyStream(t *testing.T) {
	var mu sync.Mutex
	var got []struct {
		path, ctype string
		length      int64
		body        []byte
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, struct {
			path, ctype string
			length      int64
			body        []byte
		}{r.URL.Path, r.Header.Get("Content-Type"), r.ContentLength, b})
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "hello world\n")
	}))
	defer srv.Close()
	c := testClient(t, srv, config.Upstream{Endpoints: []string{string(openai.Transcriptions)}})
	body := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB: many writes
	const ctype = "multipart/form-data; boundary=abc"
	for range 2 {
		resp, err := c.Do(&Request{Endpoint: openai.Transcriptions, ContentType: ctype,
			BodyStream: strings.NewReader(string(body)), BodySize: int64(len(body))})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != 200 || string(resp.Body) != "hello world\n" || resp.Header("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("answer %d %q %q", resp.Status, resp.Body, resp.Header("Content-Type"))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d requests", len(got))
	}
	for _, g := range got {
		if g.path != "/v1/audio/transcriptions" || g.ctype != ctype || g.length != int64(len(body)) || !bytes.Equal(g.body, body) {
			t.Errorf("request %s %q %d, body equal %v", g.path, g.ctype, g.length, bytes.Equal(g.body, body))
		}
	}
	if _, err := c.Do(&Request{Endpoint: openai.Transcriptions, Stream: true, BodyStream: strings.NewReader("x"), BodySize: 1}); err == nil {
		t.Error("a streamed answer to a streamed body: no error")
	}
}
