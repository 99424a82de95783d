package upstream

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/valyala/fasthttp"

	"switchyard/config"
	"switchyard/sse"
)

// The encoders are the standard library's (gzip, zlib) and fasthttp's
// (brotli): not the decoders under test.
func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

func zlibBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

var encoders = map[string]func([]byte) []byte{
	"gzip":    gzipBytes,
	"x-gzip":  gzipBytes,
	"deflate": zlibBytes,
	"br":      func(b []byte) []byte { return fasthttp.AppendBrotliBytes(nil, b) },
}

// encodedServer answers every request with status, content type and body,
// the body encoded as enc (sent as Content-Encoding) when enc is not "".
func encodedServer(status int, ctype, enc string, body []byte) *httptest.Server {
	if enc != "" {
		body = encoders[enc](body)
	}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		if enc != "" {
			w.Header().Set("Content-Encoding", enc)
		}
		w.Header().Set("X-Request-Id", "up-1")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
}

// TestEncodedAnswers: a compressed plain answer or error body nobody asked
// for is decoded, and Content-Encoding is not relayed.
func TestEncodedAnswers(t *testing.T) {
	const answer = `{"id":"chatcmpl-1","choices":[{"message":{"role":"assistant","content":"hello"}}]}`
	const apiErr = `{"error":{"message":"Rate limit reached","type":"rate_limit_exceeded"}}`
	cases := []struct {
		status int
		body   string
		stream bool // asked for a stream, got JSON
	}{
		{200, answer, false},
		{200, answer, true},
		{429, apiErr, false},
		{500, apiErr, true},
	}
	for _, enc := range []string{"gzip", "x-gzip", "deflate", "br"} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%d/stream=%v", enc, tc.status, tc.stream), func(t *testing.T) {
				srv := encodedServer(tc.status, "application/json", enc, []byte(tc.body))
				defer srv.Close()
				c := testClient(t, srv, config.Upstream{})
				resp, err := c.Do(&Request{Body: []byte(`{"model":"m"}`), Stream: tc.stream})
				if err != nil {
					t.Fatal(err)
				}
				if resp.Status != tc.status || string(resp.Body) != tc.body {
					t.Errorf("got %d %q, want %d %q", resp.Status, resp.Body, tc.status, tc.body)
				}
				if got := resp.Header("Content-Encoding"); got != "" {
					t.Errorf("Content-Encoding %q kept for the client", got)
				}
				if got := resp.Header("X-Request-Id"); got != "up-1" {
					t.Errorf("X-Request-Id = %q, want up-1", got)
				}
			})
		}
	}
}

// TestEncodedAnswerFailures: an answer we cannot decode is an upstream
// failure when it is a 2xx; an error answer keeps its status and whatever
// decoded, since the status already says what happened.
func TestEncodedAnswerFailures(t *testing.T) {
	answer := []byte(`{"choices":[{"message":{"content":"hello"}}]}`)
	gz := gzipBytes(answer)
	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-5] ^= 0xff // the CRC-32 in the trailer
	// An error body that compresses to well over maxErrorBody.
	rnd := rand.New(rand.NewPCG(1, 2))
	noise := make([]byte, 4*maxErrorBody)
	for i := range noise {
		noise[i] = byte(rnd.Uint32())
	}
	longError := gzipBytes([]byte(`{"error":{"message":"` + hex.EncodeToString(noise) + `"}}`))
	if len(longError) <= 2*maxErrorBody {
		t.Fatalf("long error body compressed to %d bytes, want over %d", len(longError), 2*maxErrorBody)
	}
	cases := []struct {
		name     string
		status   int
		enc      string
		body     []byte
		wantErr  error  // for a 2xx; nil: any error
		wantText string // in the error
		wantBody string // for an error status
	}{
		{"unknown encoding", 200, "zstd", answer, ErrContentEncoding, `"zstd"`, ""},
		{"list of encodings", 200, "gzip, br", gz, ErrContentEncoding, `"gzip, br"`, ""},
		{"not gzip at all", 200, "gzip", answer, nil, "decoding gzip body", ""},
		{"truncated gzip", 200, "gzip", gz[:len(gz)/2], nil, "decoding gzip body", ""},
		{"gzip with a bad checksum", 200, "gzip", badCRC, kgzip.ErrChecksum, "decoding gzip body", ""},
		{"error body, unknown encoding", 503, "zstd", answer, nil, "", ""},
		{"empty error body", 503, "gzip", nil, nil, "", ""},
		{"error body, truncated gzip", 502, "gzip", longError[:len(longError)/2], nil, "", `{"error":{"message":"`},
		// Compressed, it is still over maxErrorBody: cut, then decoded.
		{"error body over the cap", 502, "gzip", longError, nil, "", `{"error":{"message":"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Encoding", tc.enc)
				w.WriteHeader(tc.status)
				_, _ = w.Write(tc.body)
			}))
			defer srv.Close()
			c := testClient(t, srv, config.Upstream{})
			resp, err := c.Do(&Request{Body: []byte(`{}`)})
			if tc.status/100 == 2 {
				if err == nil {
					t.Fatalf("Do succeeded: %d %q", resp.Status, resp.Body)
				}
				if (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.wantText) ||
					!strings.HasPrefix(err.Error(), "upstream test: ") {
					t.Errorf("Do: %v; want %v, containing %q", err, tc.wantErr, tc.wantText)
				}
				return
			}
			if err != nil {
				t.Fatalf("Do: %v, want the %d answer", err, tc.status)
			}
			if resp.Status != tc.status || !strings.HasPrefix(string(resp.Body), tc.wantBody) {
				t.Errorf("got %d %.40q, want %d starting %q", resp.Status, resp.Body, tc.status, tc.wantBody)
			}
		})
	}
}

// eventServer streams events, each compressed with Flush and sent only when
// the test asks for it (next), so an event must decode without the ones
// after it.
func eventServer(t *testing.T, enc string, events []string, next <-chan struct{}) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Encoding", enc)
		var zw interface {
			io.Writer
			Flush() error
			Close() error
		}
		if enc == "deflate" {
			zw = zlib.NewWriter(w)
		} else {
			zw = gzip.NewWriter(w)
		}
		for _, ev := range events {
			select {
			case <-next:
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Second):
				t.Errorf("server: no request for the next event")
				return
			}
			_, _ = io.WriteString(zw, ev)
			_ = zw.Flush()
			w.(http.Flusher).Flush()
		}
		_ = zw.Close()
	}))
}

// TestEncodedEventStream: a gzip (or deflate) event stream is decoded
// event by event, each as soon as it is sent, and ends cleanly; its
// connection is then reused.
func TestEncodedEventStream(t *testing.T) {
	events := []string{
		"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
		": keep-alive comment\n\nevent: x\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
		"data: [DONE]\n\n",
	}
	for _, enc := range []string{"gzip", "deflate"} {
		t.Run(enc, func(t *testing.T) {
			next := make(chan struct{}, 1)
			srv := eventServer(t, enc, events, next)
			defer srv.Close()
			c := testClient(t, srv, config.Upstream{})
			for round := range 2 {
				next <- struct{}{} // the first event: the headers come with it
				resp, err := c.Do(&Request{Body: []byte(`{"stream":true}`), Stream: true})
				if err != nil {
					t.Fatal(err)
				}
				if resp.Stream == nil {
					t.Fatalf("status %d, no stream: %q", resp.Status, resp.Body)
				}
				if got := resp.Header("Content-Encoding"); got != "" {
					t.Errorf("Content-Encoding %q kept for the client", got)
				}
				var got []string
				for i := 0; ; i++ {
					ev, err := resp.Stream.Next()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatalf("round %d, event %d: %v", round, i, err)
					}
					got = append(got, string(ev))
					if i+1 < len(events) {
						next <- struct{}{} // only now is the next event sent
					}
				}
				resp.Stream.Close(nil)
				if strings.Join(got, "") != strings.Join(events, "") || len(got) != 4 {
					t.Errorf("round %d: events %q, want the %d events of %q", round, got, 4, events)
				}
			}
			if n := c.stream.ConnsCount(); n != 1 {
				t.Errorf("%d stream connections after two streams, want 1 (reused)", n)
			}
		})
	}
}

// TestEncodedEventStreamErrors: a corrupt or cut compressed stream is a
// stream read error, never a clean end.
func TestEncodedEventStreamErrors(t *testing.T) {
	events := gzipBytes([]byte("data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n"))
	badCRC := bytes.Clone(events)
	badCRC[len(badCRC)-5] ^= 0xff
	cases := []struct {
		name    string
		enc     string
		body    []byte
		wantErr error
	}{
		{"bad checksum", "gzip", badCRC, kgzip.ErrChecksum},
		{"cut", "gzip", events[:len(events)-6], io.ErrUnexpectedEOF},
		{"not gzip", "gzip", []byte("data: {\"n\":1}\n\n"), kgzip.ErrHeader},
		{"not zlib", "deflate", []byte("data: {\"n\":1}\n\n"), nil},
		{"data after zlib", "deflate", append(zlibBytes([]byte("data: {\"n\":1}\n\n")), "data: {}\n\n"...), errAfterZlib},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("Content-Encoding", tc.enc)
				_, _ = w.Write(tc.body)
			}))
			defer srv.Close()
			c := testClient(t, srv, config.Upstream{})
			resp, err := c.Do(&Request{Body: []byte(`{}`), Stream: true})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Stream == nil {
				t.Fatalf("status %d, no stream", resp.Status)
			}
			defer resp.Stream.Close(errors.New("test done"))
			for i := 0; i < 10; i++ {
				_, err = resp.Stream.Next()
				if err != nil {
					break
				}
			}
			if err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("Next: %v, want a read error", err)
			}
			if !strings.HasPrefix(err.Error(), "upstream test: reading stream: ") || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Errorf("Next: %v, want a stream read error wrapping %v", err, tc.wantErr)
			}
		})
	}
}

// TestEventStreamUndecodable: an event stream in an encoding we cannot
// stream-decode is refused at once, as an upstream failure.
func TestEventStreamUndecodable(t *testing.T) {
	for _, enc := range []string{"br", "zstd"} {
		t.Run(enc, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("Content-Encoding", enc)
				_, _ = w.Write([]byte("whatever"))
			}))
			defer srv.Close()
			c := testClient(t, srv, config.Upstream{})
			resp, err := c.Do(&Request{Body: []byte(`{}`), Stream: true})
			if err == nil {
				if resp.Stream != nil {
					resp.Stream.Close(errors.New("test done"))
				}
				t.Fatalf("Do succeeded: status %d", resp.Status)
			}
			if !errors.Is(err, ErrContentEncoding) || !strings.Contains(err.Error(), `"`+enc+`"`) {
				t.Errorf("Do: %v, want ErrContentEncoding naming %q", err, enc)
			}
		})
	}
}

// bomb returns a gzip body of n MiB of zeros, about 1 KiB per MiB: one
// member compressed once and repeated (a gzip file may hold many).
func bomb(mib int) []byte {
	member := gzipBytes(make([]byte, 1<<20))
	return bytes.Repeat(member, mib)
}

// allocated returns the bytes allocated while f ran.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestGzipBomb: a small compressed body that decompresses to 1 GiB is cut
// at the body caps, and decoding stops there: a 2xx answer over
// MaxPlainBody is an error, an error body keeps its first maxErrorBody
// bytes, an event stream stops at the SSE event limit.
func TestGzipBomb(t *testing.T) {
	const mib = 1024
	body := bomb(mib)
	t.Logf("bomb: %d bytes, %d MiB decompressed", len(body), mib)
	cases := []struct {
		name     string
		status   int
		ctype    string
		stream   bool
		maxAlloc uint64
	}{
		// The capped buffer grows by doubling up to MaxPlainBody.
		{"plain answer", 200, "application/json", false, 3 * MaxPlainBody},
		{"error body", 500, "application/json", false, 8 << 20},
		// The SSE reader's buffer grows by append up to its event limit.
		{"event stream", 200, "text/event-stream", true, 8 * sse.DefaultMaxEventBytes},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				w.Header().Set("Content-Encoding", "gzip")
				w.WriteHeader(tc.status)
				_, _ = w.Write(body)
			}))
			defer srv.Close()
			c := testClient(t, srv, config.Upstream{})
			var resp *Response
			var err error
			n := allocated(func() {
				resp, err = c.Do(&Request{Body: []byte(`{}`), Stream: tc.stream})
				if err == nil && resp.Stream != nil {
					_, err = resp.Stream.Next()
					resp.Stream.Close(err)
				}
			})
			if n > tc.maxAlloc {
				t.Errorf("allocated %d MiB, want at most %d MiB", n>>20, tc.maxAlloc>>20)
			}
			switch {
			case tc.stream:
				if !errors.Is(err, sse.ErrEventTooLarge) {
					t.Errorf("Next: %v, want sse.ErrEventTooLarge", err)
				}
			case tc.status/100 == 2:
				if !errors.Is(err, errBodyCapped) || !strings.Contains(err.Error(), "decoding gzip body") {
					t.Errorf("Do: %v, want a capped decoding error", err)
				}
			default:
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if len(resp.Body) != maxErrorBody || resp.Body[0] != 0 || resp.Body[maxErrorBody-1] != 0 {
					t.Errorf("error body of %d bytes, want the first %d decoded bytes", len(resp.Body), maxErrorBody)
				}
			}
		})
	}
}
