package proxy

import (
	"bytes"
	"io"
	"math"
	"sync"

	"github.com/valyala/fasthttp"

	"switchyard/config"
)

// Request bodies. The server streams them (fasthttp's StreamRequestBody):
// an upload reaches its handler as it arrives, and is spooled as it is
// read (see audio.go), never held whole in memory. Every other route
// still gets its body whole, as fasthttp read it before: Guard buffers it
// ahead of the handler (bufferBody), bounded by max_body_bytes, and what
// fasthttp rejected itself on the way (413 over the limit, 400 cut short,
// 408 too slow) is rejected there the same way.

// unreadDiscard is how much of a body a handler left unread fasthttp
// reads away itself after the answer, keeping the connection (its
// maxUnreadStreamBodySize); past it, it closes the connection.
const unreadDiscard = 256 << 10

// HeaderReceived is the fasthttp server's HeaderReceived hook. In
// streaming mode fasthttp reads the first bytes of a body (up to 8 KiB)
// before the handler runs, whatever its declared length: a client that
// declares a body over the limit (max_body_bytes, or max_upload_bytes for
// an upload) and waits for the answer before sending it would wait for
// read_timeout and a 408, instead of its 413. So such a request's parsed
// Content-Length is set to 0: fasthttp reads none of the body, and the
// handler side (declaredLength) finds the client's length in the raw
// headers, answers 413 and closes the connection, lingering (see linger).
func (s *Server) HeaderReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	n := h.ContentLength()
	cfg := &s.st.Load().cfg
	if n <= min(cfg.MaxBodyBytes, cfg.MaxUploadBytes) {
		return fasthttp.RequestConfig{}
	}
	limit := cfg.MaxBodyBytes
	if uploadURI(h.RequestURI()) {
		limit = cfg.MaxUploadBytes
	}
	if n > limit {
		h.SetContentLength(0)
	}
	return fasthttp.RequestConfig{}
}

// uploadURI reports whether a request URI, as the client sent it, is an
// upload route's, with the path normalized as the handler will see it.
func uploadURI(uri []byte) bool {
	var u fasthttp.URI
	if u.Parse(nil, uri) != nil {
		return false
	}
	return uploadRouteOf(u.Path()) != nil
}

// declaredLength is a request's Content-Length as the client sent it
// (-1 chunked, -2 none given; see fasthttp.RequestHeader.ContentLength):
// HeaderReceived sets the parsed one to 0 for a body over its limit; the
// raw headers keep the client's.
func declaredLength(h *fasthttp.RequestHeader) int {
	if n := h.ContentLength(); n != 0 {
		return n
	}
	raw := h.RawHeaders()
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		const name = "content-length:"
		if len(line) > len(name) && bytes.EqualFold(line[:len(name)], []byte(name)) {
			n := 0
			for _, c := range bytes.TrimSpace(line[len(name):]) {
				if c < '0' || c > '9' {
					return 0
				}
				if n > (math.MaxInt-9)/10 {
					return math.MaxInt
				}
				n = n*10 + int(c-'0')
			}
			return n
		}
	}
	return 0
}

// limitedBody reads a streamed request body for bufferBody: at most
// limit bytes (fasthttp.ErrBodyTooLarge past them), and exactly size when
// size is known (fasthttp ends a request's stream with a plain EOF when
// the client closes early). It keeps the first error.
type limitedBody struct {
	r           io.Reader
	n           int
	limit, size int
	err         error
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if left := b.limit + 1 - b.n; len(p) > left {
		p = p[:left]
	}
	n, err := b.r.Read(p)
	b.n += n
	switch {
	case b.n > b.limit:
		err = fasthttp.ErrBodyTooLarge
	case err == io.EOF && b.size >= 0 && b.n < b.size:
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// WriteTo copies the body into w. fasthttp copies a body stream into the
// request's buffer through WriteTo when the stream offers it
// (BodyWriterTo); the buffer's ReadFrom then reads straight into itself,
// without a copy buffer in between.
func (b *limitedBody) WriteTo(w io.Writer) (int64, error) {
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(readerOnly{b})
	}
	return io.Copy(w, readerOnly{b})
}

// SupportsBodyWriteTo tells fasthttp to use WriteTo (see there).
func (b *limitedBody) SupportsBodyWriteTo() bool { return true }

// readerOnly hides limitedBody's WriteTo from the copy WriteTo runs.
type readerOnly struct{ b *limitedBody }

func (r readerOnly) Read(p []byte) (int, error) { return r.b.Read(p) }

var limitedBodies = sync.Pool{New: func() any { return new(limitedBody) }}

// bufferBody reads a request's streamed body, if the server streams it,
// into the request's own body buffer, as fasthttp does when it does not
// stream: the handler then finds it in PostBody. ok is false, with the
// rejection to answer, when the body is over limit or could not be read.
func bufferBody(req *fasthttp.Request, limit int) (r rejection, ok bool) {
	stream := req.BodyStream()
	if stream == nil {
		return r, true
	}
	size := declaredLength(&req.Header)
	if size > limit {
		return rejectBodyTooLarge, false
	}
	size = req.Header.ContentLength() // what fasthttp reads
	lb := limitedBodies.Get().(*limitedBody)
	*lb = limitedBody{r: stream, limit: limit, size: size}
	// SetBodyStream hands the buffer fasthttp read ahead into to the
	// server's stream (which reads from it); SwapBody then copies the
	// stream into a new body buffer of the request, as Body would, but
	// without the warning Body logs for a streamed body.
	req.SetBodyStream(lb, size)
	body := req.SwapBody(nil)
	req.SwapBody(body)
	err := lb.err
	*lb = limitedBody{}
	limitedBodies.Put(lb)
	if err != nil {
		return classifyRejection(err), false
	}
	return r, true
}

// clientBody is an upload's body as its handler reads it: how much was
// read, and how the reading ended.
type clientBody struct {
	r      io.Reader
	n      int64
	done   bool // read to its end
	failed bool // a read failed: the connection is of no further use
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF:
		b.done = true
	case err != nil:
		b.failed = true
	}
	return n, err
}

// settle runs when an upload's handler returns. A body it answered before
// reading to its end (a 401, a 413, a bad form) is still on its way: past
// what fasthttp reads away itself, the connection closes, and a client
// still sending would get a reset instead of the answer. So such a close
// lingers (see linger) over what is left of the body.
func (b *clientBody) settle(ctx *fasthttp.RequestCtx, cfg *config.Config) {
	declared := int64(declaredLength(&ctx.Request.Header))
	read := declared == int64(ctx.Request.Header.ContentLength()) // else HeaderReceived kept fasthttp from reading any
	switch {
	case b.failed:
		ctx.SetConnectionClose()
		return
	case read && (b.done || (declared >= 0 && b.n >= declared)):
		return
	case read && declared >= 0 && declared-b.n <= unreadDiscard:
		return // fasthttp reads it away, and keeps the connection
	}
	left := declared - b.n
	if declared < 0 { // chunked: no length to go by
		left = 2 * int64(cfg.MaxUploadBytes)
	}
	ctx.SetConnectionClose()
	linger(ctx.Conn(), left, cfg.ReadTimeout)
}
