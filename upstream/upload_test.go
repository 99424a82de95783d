package upstream

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

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
}

// TestDoStreamsAnswerToBodyStream: a transcript stream (stream=true on an
// upload) comes back as a Stream whose events arrive one by one, after
// an upload that took longer than first_token_timeout.
func TestDoStreamsAnswerToBodyStream(t *testing.T) {
	events := []string{
		`data: {"type":"transcript.text.delta","delta":"I see"}` + "\n\n",
		`data: {"type":"transcript.text.delta","delta":" skies"}` + "\n\n",
		`data: {"type":"transcript.text.done","text":"I see skies","usage":{"input_tokens":3,"output_tokens":2}}` + "\n\n",
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, _ := io.ReadAll(r.Body); len(b) != 6 {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range events {
			io.WriteString(w, ev)
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
		}
	}))
	defer srv.Close()
	c := testClient(t, srv, config.Upstream{Endpoints: []string{string(openai.Transcriptions)},
		FirstTokenTimeout: 200 * time.Millisecond, IdleTimeout: time.Second, Timeout: 5 * time.Second})
	slow := io.MultiReader(strings.NewReader("abc"), &slowReader{d: 300 * time.Millisecond, b: []byte("def")})
	resp, err := c.Do(&Request{Endpoint: openai.Transcriptions, Stream: true, ContentType: "multipart/form-data; boundary=x",
		BodyStream: slow, BodySize: 6})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Stream == nil {
		t.Fatalf("no stream: %d %q", resp.Status, resp.Body)
	}
	defer resp.Stream.Close(nil)
	var got []string
	for {
		ev, err := resp.Stream.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after %d events: %v", len(got), err)
			}
			break
		}
		got = append(got, string(ev))
	}
	if strings.Join(got, "") != strings.Join(events, "") {
		t.Errorf("events %q, want %q", got, events)
	}
}

// slowReader returns b once, after d.
type slowReader struct {
	d    time.Duration
	b    []byte
	done bool
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	time.Sleep(r.d)
	r.done = true
	return copy(p, r.b), nil
}
