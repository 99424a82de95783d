package proxy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestClassifyRejection(t *testing.T) {
	cases := []struct {
		err    error
		status int
		reason string
		linger bool
	}{
		{fasthttp.ErrBodyTooLarge, 413, reasonBodyTooLarge, true},
		{&fasthttp.ErrSmallBuffer{}, 431, reasonHeadersTooLarge, true},
		{fmt.Errorf("error when reading request headers: %w: buffer size=9", errBareLF), 400, reasonBareLF, true},
		{fmt.Errorf("error when reading request headers: %w", os.ErrDeadlineExceeded), 408, reasonTimeout, false},
		{fmt.Errorf("error when reading request headers: %w", io.EOF), 400, reasonIncomplete, false},
		{io.ErrUnexpectedEOF, 400, reasonIncomplete, false},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), 400, reasonIncomplete, false},
		{fasthttp.ErrDuplicateContentLength, 400, reasonMalformed, true},
		{errors.New("garbage"), 400, reasonMalformed, true},
	}
	for _, tc := range cases {
		r := classifyRejection(tc.err)
		if r.status != tc.status || r.reason != tc.reason || r.linger != tc.linger {
			t.Errorf("%v: %d %s linger %v; want %d %s %v", tc.err, r.status, r.reason, r.linger, tc.status, tc.reason, tc.linger)
		}
	}
}

func TestHasHeaderLine(t *testing.T) {
	raw := []byte("Host: x\r\nTransfer-Encoding: chunked\r\ncontent-LENGTH: 7\r\nX-Content-Length-Note: 1\r\n")
	for name, want := range map[string]bool{"transfer-encoding": true, "content-length": true, "host": true, "content-type": false, "x-content-length": false} {
		if got := hasHeaderLine(raw, name); got != want {
			t.Errorf("%s: %v", name, got)
		}
	}
}
