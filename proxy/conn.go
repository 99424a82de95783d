package proxy

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// Bare-LF heads. fasthttp ends a header block at a blank line only when a
// CRLFCRLF is in its read buffer (so that it frames a stream as a strict
// peer would), and otherwise waits for more: a request written with bare
// LF line endings waited for read_timeout, then got 408. fasthttp offers
// no hook between its reads, so the check has to sit in the connection;
// but fasthttp writes an answer over its 4 KiB write buffer with one
// writev only to a bare *net.TCPConn (a wrapped connection costs a second
// write syscall, about 5 µs on loopback per 16 KiB answer). So the
// listener looks at what a new connection sent first and wraps only a
// connection whose first bytes are not a CRLF-terminated head; every SDK's
// connection stays a bare *net.TCPConn and pays nothing per request.

// errBareLF fails the read that finds a request head ending in bare LF.
var errBareLF = errors.New("request head ends in bare LF line endings")

// maxHeadScan is how much of a request head is looked at to find its end;
// fasthttp answers 431 well before (its read buffer, 8 KiB, bounds a head).
const maxHeadScan = 16 << 10

// peekSize is how much of a new connection's first bytes Accept looks at:
// fasthttp's read buffer, the most a head can be.
const peekSize = 8 << 10

var (
	crlfcrlf = []byte("\r\n\r\n")
	peekBufs = sync.Pool{New: func() any { return new([peekSize]byte) }}
)

// NewListener returns ln for fasthttp to serve, with the bare-LF check on
// the connections that need it (see above); Server.ErrorHandler answers
// what it finds. On Linux the listener has the kernel accept a connection
// once its first bytes are in (TCP_DEFER_ACCEPT), so that Accept sees
// them, or after acceptWait all the same; elsewhere every connection is
// left bare.
func NewListener(ln net.Listener) net.Listener {
	deferAccept(ln, acceptWait)
	return &listener{Listener: ln}
}

// acceptWait is how long the kernel holds a new connection for its first
// bytes before it is accepted without them (and left bare). Clients send
// their request right after connecting; a silent one waits this long more
// for its 408 (read_timeout runs from the accept).
const acceptWait = time.Second

type listener struct{ net.Listener }

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok && !crlfHead(tc) {
		return &conn{TCPConn: tc, heads: headCheck{atHead: true}}, nil
	}
	return c, nil
}

// crlfHead peeks (without consuming) at what the client has sent so far
// and reports whether it holds the CRLFCRLF that ends a well-formed head,
// or nothing at all (a client that has not spoken: nothing to judge).
func crlfHead(tc *net.TCPConn) bool {
	raw, err := tc.SyscallConn()
	if err != nil {
		return true
	}
	buf := peekBufs.Get().(*[peekSize]byte)
	defer peekBufs.Put(buf)
	n := 0
	_ = raw.Read(func(fd uintptr) bool {
		n, _, _ = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait
	})
	return n <= 0 || bytes.Contains(buf[:n], crlfcrlf)
}

// conn is a connection whose first bytes were not a CRLF-terminated head:
// each of its requests' heads is checked for a bare-LF end. Read and Write
// run on the connection's serving goroutine.
type conn struct {
	*net.TCPConn
	heads headCheck
}

func (c *conn) Read(p []byte) (int, error) {
	if c.heads.before() {
		return 0, errBareLF
	}
	n, err := c.TCPConn.Read(p)
	if n > 0 && c.heads.after(p[:n]) {
		return n, errBareLF
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	c.heads.wrote()
	return c.TCPConn.Write(p)
}

// headCheck finds request heads that end in bare LF, from the reads and
// writes of one connection.
//
// fasthttp reads a request's head through its bufio.Reader: the read that
// starts a request fills the reader's buffer, and when the head parsed from
// it is incomplete (or, with bare LF, never complete), fasthttp reads again
// into the same buffer, after what it holds. So the first read's bytes are
// still in place when the second read begins: before blocking for more,
// that read checks them. A request served from its first read never gets
// there.
type headCheck struct {
	atHead bool   // the next read starts a request: the first, or one after a write
	first  []byte // what the read that started the request returned, until the next read
	head   []byte // a head split across reads, as collected so far
}

// wrote records a write (a response, or 100 Continue): the next read starts
// a request.
func (h *headCheck) wrote() {
	h.atHead, h.first, h.head = true, nil, nil
}

// before runs at the start of a read and reports whether the request's
// first read holds a head that ended in bare LF. A head that has not ended
// is followed through the reads that come (after).
func (h *headCheck) before() bool {
	if h.first == nil {
		return false
	}
	first := h.first
	h.first = nil
	// Not a request line: a body (after 100 Continue), or the buffer
	// already moved on past a head fasthttp parsed.
	if !methodStart(first) {
		return false
	}
	if ended, bare := headEnd(first); ended {
		return bare && requestLine(first)
	}
	h.head = append(make([]byte, 0, 2*len(first)), first[:min(len(first), maxHeadScan)]...)
	return false
}

// after runs with what a read returned and reports whether it completes a
// split head that ended in bare LF.
func (h *headCheck) after(b []byte) bool {
	if h.atHead {
		h.atHead = false
		h.first = b
		return false
	}
	if h.head == nil {
		return false
	}
	h.head = append(h.head, b[:min(len(b), maxHeadScan-len(h.head))]...)
	ended, bare := headEnd(h.head)
	if !ended && len(h.head) < maxHeadScan {
		return false
	}
	bare = bare && requestLine(h.head)
	h.head = nil
	return bare
}

// methodStart reports whether b starts like a request line: capital
// letters (a method, or the start of one) up to a space.
func methodStart(b []byte) bool {
	i := 0
	for i < len(b) && b[i] >= 'A' && b[i] <= 'Z' {
		i++
	}
	return i > 0 && (i == len(b) || b[i] == ' ')
}

// headEnd reports whether h holds the blank line that ends a request head,
// and whether that head ends in bare LF: the blank line, or the line
// before it, ends in LF without CR. A CRLFCRLF anywhere ends it properly
// for fasthttp, which then accepts the bare-LF blank line before it.
func headEnd(h []byte) (ended, bare bool) {
	if bytes.Contains(h, crlfcrlf) {
		return true, false
	}
	for i := 0; ; {
		j := bytes.IndexByte(h[i:], '\n')
		if j < 0 {
			return false, false
		}
		j += i
		switch {
		case j+1 >= len(h):
			return false, false
		case h[j+1] == '\n':
			return true, true
		case h[j+1] == '\r':
			if j+2 >= len(h) {
				return false, false
			}
			if h[j+2] == '\n' {
				return true, true // not a CRLFCRLF: that was checked above
			}
		}
		i = j + 1
	}
}

// requestLine reports whether h starts with an HTTP/1.x request line, so
// that the body of a pipelined request is never taken for a head.
func requestLine(h []byte) bool {
	i := bytes.IndexByte(h, '\n')
	if i < 0 {
		return false
	}
	line := bytes.TrimSuffix(h[:i], []byte("\r"))
	return bytes.HasSuffix(line, []byte(" HTTP/1.1")) || bytes.HasSuffix(line, []byte(" HTTP/1.0"))
}

var _ net.Conn = (*conn)(nil)
