package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestHeadEnd(t *testing.T) {
	cases := []struct {
		head         string
		ended, bare  bool
		requestStart bool
	}{
		{"POST / HTTP/1.1\r\nHost: x\r\n\r\n{}", true, false, true},
		{"POST / HTTP/1.1\nHost: x\n\n{}", true, true, true},
		{"GET / HTTP/1.1\r\nHost: x\n\n", true, true, true},
		{"GET / HTTP/1.1\r\nHost: x\n\r\n", true, true, true},
		{"GET / HTTP/1.0\n\n", true, true, true},
		{"GET / HTTP/1.1\nHost: x\n\n{\r\n\r\n}", true, false, true}, // fasthttp accepts: a CRLFCRLF is in its buffer
		{"GET / HTTP/1.1\nHost: x\n", false, false, true},
		{"GET / HTTP/1.1\nHost: x\n\r", false, false, true},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r", false, false, true},
		{"GET / HTT", false, false, false},
		{"Hello\n\nworld", true, true, false}, // a body: requestLine says no
	}
	for _, tc := range cases {
		ended, bare := headEnd([]byte(tc.head))
		if ended != tc.ended || bare != tc.bare {
			t.Errorf("headEnd(%q) = %v, %v; want %v, %v", tc.head, ended, bare, tc.ended, tc.bare)
		}
		if got := requestLine([]byte(tc.head)); got != tc.requestStart {
			t.Errorf("requestLine(%q) = %v", tc.head, got)
		}
	}
}

// script is a connection's reads, checked as conn.Read checks them. Past
// the last read it fails with errWouldBlock: where a client that has sent
// everything would leave fasthttp waiting for read_timeout.
type script struct {
	reads []string
	hc    headCheck
}

var errWouldBlock = errors.New("would block")

func (s *script) Read(p []byte) (int, error) {
	if s.hc.before() {
		return 0, errBareLF
	}
	if len(s.reads) == 0 {
		return 0, errWouldBlock
	}
	n := copy(p, s.reads[0])
	if s.reads[0] = s.reads[0][n:]; s.reads[0] == "" {
		s.reads = s.reads[1:]
	}
	if s.hc.after(p[:n]) {
		return n, errBareLF
	}
	return n, nil
}

// TestHeadCheckWithFasthttp reads requests with fasthttp's own parser, as
// the server does (a bufio.Reader over the connection), through the
// bare-LF check.
func TestHeadCheckWithFasthttp(t *testing.T) {
	body := `{"model":"m",` + "\n\n" + `"messages":[{"role":"user","content":"` + strings.Repeat("Hello world. ", 1500) + `"}]}`
	wellFormed := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	cases := []struct {
		name  string
		reads []string // one request
		want  error    // nil: read whole
	}{
		{"well-formed, one read", []string{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"}, nil},
		{"well-formed, body over three reads", []string{wellFormed[:5000], wellFormed[5000:9000], wellFormed[9000:]}, nil},
		{"well-formed, byte by byte", strings.Split("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", ""), nil},
		{"well-formed, terminator split", []string{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r", "\n{\n\n}"}, nil},
		{"bare LF", []string{"POST / HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}"}, errBareLF},
		{"bare LF, no body", []string{"GET / HTTP/1.1\nHost: x\n\n"}, errBareLF},
		{"CRLF request line, LF headers", []string{"POST / HTTP/1.1\r\nHost: x\nContent-Length: 2\n\n{}"}, errBareLF},
		{"LF headers, CRLF blank line", []string{"POST / HTTP/1.1\r\nHost: x\nContent-Length: 2\n\r\n{}"}, errBareLF},
		{"bare LF, byte by byte", strings.Split("GET / HTTP/1.1\nHost: x\n\n", ""), errBareLF},
		{"bare LF, split", []string{"GET / HTTP/1.1\nHo", "st: x\n", "\n"}, errBareLF},
		{"incomplete head", []string{"GET / HTTP/1.1\r\nHost: x\r\n"}, errWouldBlock},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Each request follows a well-formed one on the connection.
			first := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
			s := &script{reads: append([]string{first}, tc.reads...), hc: headCheck{atHead: true}}
			s.reads = s.reads[:1]
			br := bufio.NewReaderSize(s, 8<<10)
			var req fasthttp.Request
			if err := req.Read(br); err != nil {
				t.Fatalf("first request: %v", err)
			}
			s.hc.wrote()
			s.reads = tc.reads
			req.Reset()
			err := req.Read(br)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if cl := req.Header.ContentLength(); cl != len(req.Body()) {
					t.Errorf("body %d bytes, Content-Length %d", len(req.Body()), cl)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("read: %v, want %v", err, tc.want)
			}
		})
	}
}

// BenchmarkHeadCheck is the check's cost per request on a connection: a
// response written, then a request read whole in one read (what almost
// every request pays), or in two (a body past the first read).
func BenchmarkHeadCheck(b *testing.B) {
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:8080\r\nAccept: application/json\r\n" +
		"Content-Type: application/json\r\nUser-Agent: OpenAI/Python 1.54.0\r\nX-Stainless-Lang: python\r\n" +
		"X-Stainless-Package-Version: 1.54.0\r\nX-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\n" +
		"X-Stainless-Runtime: CPython\r\nX-Stainless-Runtime-Version: 3.12.3\r\nAuthorization: Bearer sk-0123456789abcdef\r\n" +
		"X-Stainless-Async: false\r\nX-Stainless-Retry-Count: 0\r\nContent-Length: 84\r\n\r\n" +
		`{"model":"llama-3.1-8b-instant","messages":[{"role":"user","content":"Say hi"}]}`)
	for _, reads := range []int{1, 2} {
		b.Run(fmt.Sprintf("%d reads", reads), func(b *testing.B) {
			var h headCheck
			for b.Loop() {
				h.wrote()
				for range reads {
					if h.before() || h.after(req) {
						b.Fatal("flagged")
					}
				}
			}
		})
	}
}

// TestListenerWrapsOnlyUnusualHeads: a connection whose first bytes are a
// CRLF-terminated head stays a bare *net.TCPConn (fasthttp's writev path);
// one that starts with a bare-LF or unfinished head is wrapped.
func TestListenerWrapsOnlyUnusualHeads(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(inner)
	defer ln.Close()
	cases := []struct {
		first   string
		wrapped bool
	}{
		{"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", false},
		{"POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}", true},
		{"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", true},
	}
	for _, tc := range cases {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, tc.first); err != nil {
			t.Fatal(err)
		}
		if runtime.GOOS != "linux" {
			time.Sleep(50 * time.Millisecond) // no TCP_DEFER_ACCEPT: let the bytes arrive
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		_, wrapped := sc.(*conn)
		if wrapped != tc.wrapped {
			t.Errorf("%q: wrapped %v, want %v", tc.first, wrapped, tc.wrapped)
		}
		// The peek consumed nothing.
		buf := make([]byte, len(tc.first))
		_ = sc.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := io.ReadFull(sc, buf); err != nil && !errors.Is(err, errBareLF) {
			t.Errorf("%q: reading after the peek: %v", tc.first, err)
		} else if string(buf) != tc.first {
			t.Errorf("read %q after the peek", buf)
		}
		sc.Close()
		c.Close()
	}
}
