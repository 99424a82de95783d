package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/openai"
	"switchyard/upstream"
)

// maxTeeBytes bounds how much of a stream is kept for the cache; a longer
// stream is relayed but not cached.
const maxTeeBytes = 8 << 20

var doneEvent = []byte("data: [DONE]\n\n")

// relay is the client's response body for a committed stream. fasthttp
// calls WriteTo after the handler has returned and writes and flushes each
// Write as one chunk, so every event reaches the client as soon as the
// upstream sent it. An error from WriteTo aborts the response (no
// terminating chunk): after an upstream failure the client first gets an
// in-band error event, then a broken stream, never a clean end.
//
// The relay owns the upstream stream: fasthttp calls CloseWithError exactly
// once, with the client write error if the client went away, and that
// closes the upstream connection.
type relay struct {
	s    *Server
	c    *call
	r    *attemptResult // the committed attempt; r.resp.Stream is st
	st   *upstream.Stream
	conn net.Conn // the client's connection, watched while the upstream is silent
	// peekable: conn is a socket the watcher can peek at (see peerClosed).
	peekable bool
	// writeTimeout bounds each write to the client (write_timeout): a
	// client that stops reading releases the stream after it.
	writeTimeout time.Duration
	endBy        time.Time // no write past it: the bound on a whole stream
	// waitingSince is when the relay started waiting on a silent upstream
	// (unix nanoseconds; 0 when it is not waiting): see watchDisconnects.
	waitingSince atomic.Int64
	prompt       int64 // prompt characters, counted before the handler returned

	pending   [][]byte
	cur       []byte
	sawDone   bool
	done      bool
	abort     error
	streamErr error

	tee        []byte
	teeOverrun bool
	usage      openai.Usage
	chars      int64

	// share, when the request leads a coalesced miss, is the stream as
	// its followers see it: the relay's reading state is then shared, and
	// the upstream is read by whichever client has caught up (see
	// liveStream). Nil: the relay alone reads and writes.
	share *liveStream
}

// startRelay answers a committed stream. A plain JSON answer to a stream
// request (an upstream that ignored "stream") is converted to the stream
// it stands for.
func (s *Server) startRelay(ctx *fasthttp.RequestCtx, c *call, r *attemptResult) bool {
	ctx.SetStatusCode(r.resp.Status)
	setUpstreamHeaders(ctx, r.u, r.resp)
	ctx.Response.Header.Set("X-Cache", c.xcache)
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	if !r.streaming() {
		return s.answerConverted(ctx, c, r)
	}
	// The server's write timeout is one deadline for the whole response;
	// a stream sets one per write instead (see WriteTo).
	wt := c.st.cfg.WriteTimeout
	_ = ctx.SetWriteDeadline(time.Now().Add(wt))
	rel := &relay{s: s, c: c, r: r, st: r.resp.Stream, pending: r.events, conn: ctx.Conn(), writeTimeout: wt,
		endBy: time.Now().Add(maxStreamDuration)}
	_, rel.peekable = rel.conn.(syscall.Conn)
	// No ImmediateHeaderFlush: the first event is already here, and the
	// headers leave with it in one write. Unless that event is dropped
	// (the usage chunk the client did not ask for): then the headers must
	// not wait for the next event.
	if len(r.events) > 0 && !c.req.Endpoint.TypedEvents() {
		if ev := openai.ReadEvent(r.events[len(r.events)-1]); rel.clientEvent(r.events[len(r.events)-1], &ev) == nil {
			ctx.Response.ImmediateHeaderFlush = true
		}
	}
	if c.st.policyNeedsChars(r.u.Name) {
		rel.prompt = openai.PromptCharsOf(c.req.Endpoint, c.body)
	}
	if c.flight != nil {
		rel.share = newLiveStream(s, rel, c.flight)
	}
	c.body, c.header = nil, nil // not valid once the handler returns
	if rel.st != nil {
		s.watch(rel)
	}
	ctx.SetBodyStream(rel, -1)
	return true
}

// answerConverted serves a plain JSON answer to a stream request as the
// stream it stands for (the cache's conversion).
func (s *Server) answerConverted(ctx *fasthttp.RequestCtx, c *call, r *attemptResult) bool {
	body := c.st.scrubAnswer(r.resp.Body)
	stream, err := openai.CompletionToStream(body, c.req.IncludeUsage)
	if err != nil {
		// Not a chat.completion: relay what the upstream said.
		ctx.SetBody(body)
		s.finish(c, r, outcomeResult{status: r.resp.Status})
		return false
	}
	ctx.Response.Header.SetContentType("text/event-stream")
	ctx.SetBody(stream)
	s.finish(c, r, outcomeResult{status: r.resp.Status, entry: body, contentType: "application/json",
		cacheable: r.resp.Status == fasthttp.StatusOK})
	return false
}

// maxBatch bounds the events packed into one chunk.
const maxBatch = 32 << 10

// batchPool holds the buffers that pack events which arrived together; a
// stream holds one only while it writes, not while it waits.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// SupportsBodyWriteTo makes fasthttp call WriteTo instead of Read (see
// fasthttp.BodyWriterTo).
func (r *relay) SupportsBodyWriteTo() bool { return true }

// WriteTo relays the events to w, fasthttp's chunked writer: every Write
// is one chunk, flushed. An event goes out as soon as it is read, unless
// more events already wait in the upstream's buffer: those arrived
// together and leave together, in one write (one syscall, not one per
// event). An event is written from the upstream's buffer without a copy
// when it is alone. A non-nil error aborts the response (see relay).
func (r *relay) WriteTo(w io.Writer) (int64, error) {
	if sh := r.share; sh != nil {
		sh.publish()
		return sh.writeTo(&sh.leader, w)
	}
	var written int64
	var batch *[]byte // from batchPool while events are being packed
	release := func() {
		if batch != nil {
			if cap(*batch) <= 2*maxBatch { // not a buffer grown by a huge event
				*batch = (*batch)[:0]
				batchPool.Put(batch)
			}
			batch = nil
		}
	}
	defer release()
	write := func(b []byte) error {
		// Each write gets write_timeout from now: a client that stops
		// reading is cut after it, and its upstream released, however
		// long the stream had run.
		if r.conn != nil {
			dl := time.Now().Add(r.writeTimeout)
			if dl.After(r.endBy) {
				dl = r.endBy
			}
			_ = r.conn.SetWriteDeadline(dl)
		}
		n, err := w.Write(b)
		written += int64(n)
		return err
	}
	for {
		if r.abort != nil {
			return written, r.abort
		}
		if r.done {
			return written, nil
		}
		out := r.next()
		more := r.ready() // false after an abort or the end, too
		switch {
		case len(out) == 0:
		case batch == nil && !more:
			if err := write(out); err != nil {
				return written, err
			}
		default:
			if batch == nil {
				batch = batchPool.Get().(*[]byte)
			}
			*batch = append(*batch, out...)
		}
		if batch != nil && (!more || len(*batch) >= maxBatch) {
			if err := write(*batch); err != nil {
				return written, err
			}
			release() // before next may wait on the upstream
		}
	}
}

// ready reports whether next returns without waiting on the upstream.
func (r *relay) ready() bool {
	return r.abort == nil && !r.done && (len(r.pending) > 0 || r.st == nil || r.st.Ready())
}

// Read implements io.Reader (SetBodyStream wants one); fasthttp uses
// WriteTo.
func (r *relay) Read(p []byte) (int, error) {
	if sh := r.share; sh != nil {
		sh.publish()
		return sh.readInto(&sh.leader, p)
	}
	for len(r.cur) == 0 {
		if r.abort != nil {
			return 0, r.abort
		}
		if r.done {
			return 0, io.EOF
		}
		r.cur = r.next()
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// next returns the next bytes for the client (nil to skip an event).
func (r *relay) next() []byte {
	var raw []byte
	switch {
	case len(r.pending) > 0:
		raw, r.pending = r.pending[0], r.pending[1:]
	case r.st == nil:
		return r.end(io.EOF)
	default:
		if !r.st.Ready() {
			r.waitingSince.Store(time.Now().UnixNano())
		}
		var err error
		raw, err = r.st.Next()
		r.waitingSince.Store(0)
		switch {
		case errors.Is(err, errClientGone):
			r.closeUpstream(err)
			r.abort = err // the client's doing, not the upstream's
			return nil
		case errors.Is(err, errShutdown):
			r.closeUpstream(err)
			r.abort = err // the proxy's doing, not the upstream's
			return r.failEvent("the proxy is shutting down; the stream was cut before its end: retry the request", codeShuttingDown)
		}
		if err != nil {
			return r.end(err)
		}
	}
	// A key the upstream echoed goes neither to the client nor to the
	// cache; a scrubbed event is a copy, so it outlives the stream.
	raw = r.c.st.scrubAnswer(raw)
	if r.c.req.Endpoint.TypedEvents() {
		return r.nextResponse(raw)
	}
	ev := openai.ReadEvent(raw)
	switch {
	case ev.Failed():
		// Relayed (the client's SDK raises it), with any echoed key
		// scrubbed; the abort error fasthttp logs carries no upstream text.
		r.streamErr = inBandError(r.r.u.Name, ev.Data)
		r.abort = errInBandError
		r.closeUpstream(errInBandError)
		return raw // any echoed key already scrubbed
	case !ev.IsData:
		return raw // a comment or keep-alive: relayed, not stored
	case ev.Done:
		return r.end(io.EOF)
	case !ev.Chunk.Valid:
		invalidSSETotal.Inc()
		return nil
	}
	r.keep(raw)
	r.r.finishes.Add(ev.Data, &ev.Chunk)
	if ev.Chunk.HasUsage {
		r.usage = ev.Chunk.Usage
	}
	if r.c.st.policyNeedsChars(r.r.u.Name) {
		r.chars += openai.CompletionChars(ev.Data)
	}
	return r.clientEvent(raw, &ev)
}

// clientEvent is what the client gets of a chunk event: the upstream's
// bytes, unless they carry the usage the proxy asked for and the client
// did not (the usage chunk is dropped: nil; a usage on another chunk is
// cut out of it).
func (r *relay) clientEvent(raw []byte, ev *openai.Event) []byte {
	return clientChunk(raw, ev, r.c.req.IncludeUsage)
}

// clientChunk is clientEvent for any stream, live or stored.
func clientChunk(raw []byte, ev *openai.Event, wantUsage bool) []byte {
	if wantUsage || !ev.IsData || ev.Done || !ev.Chunk.UsageSpan.Found() {
		return raw
	}
	if ev.Chunk.UsageOnly {
		return nil
	}
	data := ev.Chunk.WithoutUsage(ev.Data)
	out := make([]byte, 0, len(data)+8)
	for len(data) > 0 || len(out) == 0 { // one data line per line of data
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		out = append(out, "data: "...)
		out = append(out, line...)
		out = append(out, '\n')
	}
	return append(out, '\n')
}

// end handles the end of the upstream stream (err io.EOF, or [DONE]):
// complete when every choice finished ([DONE] relayed, or appended when
// the upstream closed without it), else a failure (an in-band error event,
// then abort).
func (r *relay) end(err error) []byte {
	if errors.Is(err, io.EOF) && r.c.req.Endpoint.TypedEvents() {
		err = fmt.Errorf("upstream %s: %w", r.r.u.Name, errCutResponse) // its end is a terminal event, not the body's
	}
	if errors.Is(err, io.EOF) {
		if r.r.finishes.Complete() || !r.r.finishes.Any() {
			// The upstream stream stays open: CloseWithError drains what
			// follows [DONE] off the client's path, so [DONE] leaves now.
			// A stream without any choice ([DONE] alone) is relayed as
			// it is, and not cached (see finish).
			r.sawDone, r.done = true, true
			r.keep(doneEvent)
			return doneEvent
		}
		err = fmt.Errorf("upstream %s: %w", r.r.u.Name, errCutStream)
	}
	r.closeUpstream(err)
	r.streamErr = err
	r.abort = err
	return r.failEvent(r.c.st.redact(fmt.Sprintf("upstream %s failed mid-stream: %v", r.r.u.Name, err)), codeStreamInterrupted)
}

// closeUpstream releases the upstream stream: reusable after a clean end,
// closed otherwise.
func (r *relay) closeUpstream(err error) {
	if r.st == nil {
		return
	}
	st := r.st
	r.st = nil
	if errors.Is(err, io.EOF) {
		st.Close(nil) // read to its end: the connection is reusable
	} else {
		st.Close(err)
	}
}

func (r *relay) keep(ev []byte) {
	if r.share != nil {
		// The log is the tee while it holds the whole stream.
		r.tee, r.teeOverrun = r.share.log.append(ev)
		return
	}
	if r.teeOverrun || r.c.key == "" {
		return
	}
	if len(r.tee)+len(ev) > maxTeeBytes {
		r.teeOverrun, r.tee = true, nil
		return
	}
	r.tee = append(r.tee, ev...)
}

// CloseWithError is called once by fasthttp when the response is done; err
// is the client write error (the client went away) or nil.
func (r *relay) CloseWithError(err error) error {
	if r.share != nil {
		r.share.leaderClosed(err) // the stream ends on its own (see liveStream)
		return nil
	}
	r.closeStream(err)
	return nil
}

// closeStream ends the upstream stream and the request: the breaker
// record, the metrics, the cache entry when the stream is complete, the
// flight, the log line. err is how the client's response ended (nil: it
// got everything), or for a live stream how the stream did.
func (r *relay) closeStream(err error) {
	r.s.unwatch(r)
	if st := r.st; st != nil {
		r.st = nil
		if err == nil {
			// After [DONE]: draining the terminator lets the connection be
			// reused, but fasthttp flushes the client's last chunk only
			// after this returns, so drain off the client's path.
			go st.Close(nil)
		} else {
			st.Close(err)
		}
	}
	o := outcomeResult{status: r.r.resp.Status, stream: true, streamErr: r.streamErr, clientErr: err,
		usage: r.usage, chars: r.prompt + r.chars, contentType: "text/event-stream"}
	if r.streamErr == nil && err == nil && r.sawDone {
		o.entry = r.tee
		o.cacheable = !r.teeOverrun && r.complete() // [DONE] alone is no answer worth keeping
		if o.cacheable && r.echoesSplitKey() {
			o.cacheable = false // a key the model spelled across events: never served again
			secretEchoTotal.Inc()
		}
	}
	if r.streamErr == nil && err == nil && !r.sawDone {
		o.clientErr = errStreamNotFinished
	}
	if r.share != nil {
		o.logTo = r.share // the leader's line also waits for its client
	}
	r.s.finish(r.c, r.r, o)
}

var errStreamNotFinished = errors.New("stream not finished")
