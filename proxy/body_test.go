package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/valyala/fasthttp"
)

func TestDeclaredLength(t *testing.T) {
	for _, tc := range []struct {
		name string
		head string
		cut  bool // HeaderReceived set the parsed length to 0
		want int
	}{
		{"length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\n\r\n", false, 42},
		{"cut to 0", "POST / HTTP/1.1\r\nHost: x\r\ncontent-length:  99999999\r\n\r\n", true, 99999999},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", false, -1},
		{"none", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, -2},
		{"huge", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h fasthttp.RequestHeader
			err := h.Read(bufioReader(tc.head))
			if tc.name == "huge" {
				if err == nil {
					t.Fatal("fasthttp read a length past int")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.cut {
				h.SetContentLength(0)
			}
			if got := declaredLength(&h); got != tc.want {
				t.Errorf("declaredLength = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestBufferBody: a streamed body is read whole into the request, as
// fasthttp does unstreamed; over the limit, cut short or failing, it is
// the rejection fasthttp's own read gave.
func TestBufferBody(t *testing.T) {
	body := strings.Repeat("0123456789", 3000)
	timeout := timeoutErr{}
	for _, tc := range []struct {
		name   string
		r      io.Reader
		size   int
		limit  int
		ok     bool
		reject rejection
	}{
		{"whole", strings.NewReader(body), len(body), 1 << 20, true, rejection{}},
		{"whole in small reads", iotest.OneByteReader(strings.NewReader(body)), len(body), 1 << 20, true, rejection{}},
		{"chunked", strings.NewReader(body), -1, 1 << 20, true, rejection{}},
		{"at the limit", strings.NewReader(body), -1, len(body), true, rejection{}},
		{"declared over the limit", strings.NewReader(body), len(body), 100, false, rejectBodyTooLarge},
		{"chunked over the limit", strings.NewReader(body), -1, 100, false, rejectBodyTooLarge},
		{"cut short", strings.NewReader(body[:100]), len(body), 1 << 20, false, rejectIncomplete},
		{"read timeout", io.MultiReader(strings.NewReader(body[:100]), iotest.ErrReader(timeout)), len(body), 1 << 20, false, rejectTimeout},
		{"reset", iotest.ErrReader(errors.New("read: connection reset")), -1, 1 << 20, false, rejectMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var req fasthttp.Request
			req.SetBodyStream(tc.r, tc.size)
			r, ok := bufferBody(&req, tc.limit)
			if ok != tc.ok || r.reason != tc.reject.reason {
				t.Fatalf("ok %v, rejection %q; want %v, %q", ok, r.reason, tc.ok, tc.reject.reason)
			}
			if ok && (req.IsBodyStream() || !bytes.Equal(req.Body(), []byte(body))) {
				t.Errorf("body not buffered: stream %v, %d bytes", req.IsBodyStream(), len(req.Body()))
			}
		})
	}
	var req fasthttp.Request
	req.SetBody([]byte(body))
	if _, ok := bufferBody(&req, 10); !ok || string(req.Body()) != body {
		t.Error("a body fasthttp already read is left as it is")
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

func TestUploadRouteOf(t *testing.T) {
	for path, want := range map[string]string{
		"/v1/audio/transcriptions":        routeTranscriptions,
		"/openai/v1/audio/transcriptions": routeTranscriptions,
		"/audio/translations":             routeTranslations,
		"/v1/audio/translations":          routeTranslations,
		"/v1/chat/completions":            "",
		"/v1/audio/speech":                "",
		"/openai/audio/translations":      "",
	} {
		r := uploadRouteOf([]byte(path))
		if got := ""; r != nil {
			got = r.label
			if got != want {
				t.Errorf("%s: %q, want %q", path, got, want)
			}
		} else if want != "" {
			t.Errorf("%s: no route, want %q", path, want)
		}
		if uploadURI([]byte(path+"?x=1")) != (want != "") {
			t.Errorf("uploadURI(%s?x=1) = %v", path, !(want != ""))
		}
	}
}
