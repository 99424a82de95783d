package proxy

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/openai"
)

// A coalesced stream is live: the requests that follow a stream in flight
// (identical, and themselves first_event streams) get the events already
// sent at once, then each event as it arrives, instead of the whole answer
// at its end. The leader's relay keeps the upstream state (reading,
// checking, accounting: relay.next); a liveStream shares it through a
// streamLog that the leader's client and each follower drain at their own
// pace, the upstream being read by whichever of them has caught up.
//
// The stream's own end (the policy's record, metrics, the cache entry, the
// flight) comes once, when the upstream stream ends or when every client
// has left (the upstream is then closed, as for a lone client who leaves).
// Each client's end is its own: its log line, a 499 if it left.

// errTooSlow ends the response of a client that fell too far behind a
// shared stream (see streamLog).
var errTooSlow = errors.New("client fell too far behind the stream")

// liveStream is a committed stream that identical requests can follow.
type liveStream struct {
	s      *Server
	rel    *relay // the leader's relay: the upstream state, read under the log's reader role
	log    streamLog
	leader consumer // the leader's client
	fl     *flight
	// published: the leader's response started (the handler returned):
	// the stream is offered to followers.
	published bool
	// streamMsg is what the log says of a failed stream, set before the
	// log ends.
	streamMsg string

	// The leader's log line waits for two ends: the stream's (srcStatus,
	// srcMsg) and its client's (leaderOK, leaderErr). The last writes it.
	parts     atomic.Int32
	srcStatus int
	srcMsg    string
	leaderOK  bool
	leaderErr error
}

// consumer is one client draining a liveStream.
type consumer struct {
	rd logReader
	// strip: the client did not ask for the usage the proxy asked the
	// upstream for (see clientChunk).
	strip        bool
	conn         net.Conn
	writeTimeout time.Duration
	endBy        time.Time
	scratch      *[]byte // the leader's own events, copied before another client reads on (from batchPool)
	cur          []byte  // Read's unread bytes
	finalSent    bool
	reachedEnd   bool  // step returned the stream's end
	writeErr     error // the client's write failed
}

// stripsUsage reports whether a client of c must get the stream without
// the usage chunk: it did not ask for it, and the proxy asked for it on
// its behalf (chat and legacy completions; see upstreamBody).
func stripsUsage(c *call) bool {
	return !c.req.IncludeUsage && (c.req.Endpoint == openai.Chat || c.req.Endpoint == openai.Completions)
}

// newLiveStream makes rel's stream one that identical requests can
// follow: fl's followers find it once the leader's response starts.
func newLiveStream(s *Server, rel *relay, fl *flight) *liveStream {
	sh := &liveStream{s: s, rel: rel, fl: fl}
	sh.log.init(maxTeeBytes)
	sh.log.add(&sh.leader.rd)
	sh.leader.strip, sh.leader.conn, sh.leader.writeTimeout, sh.leader.endBy = stripsUsage(rel.c), rel.conn, rel.writeTimeout, rel.endBy
	sh.parts.Store(2)
	fl.share = sh
	return sh
}

// publish offers the stream to the flight's followers; the leader's
// goroutine calls it when its response starts, after the handler returned
// (a follower may end the stream, and with it the leader's call).
func (sh *liveStream) publish() {
	if !sh.published {
		sh.published = true
		sh.s.flights.publish(sh.fl)
	}
}

// soloLeader reports whether the leader's client is the stream's only
// client: then it may cut the upstream when it goes away (see watcher).
func (sh *liveStream) soloLeader() bool { return sh.log.only(&sh.leader.rd) }

// step returns the next bytes for cs's client; err is io.EOF after a
// clean end, else the error its response aborts with.
func (sh *liveStream) step(cs *consumer) ([]byte, error) {
	for {
		data, act, wake := sh.log.poll(&cs.rd)
		switch act {
		case logData:
			if cs.strip {
				data = stripUsage(data)
			}
			if len(data) > 0 {
				return data, nil
			}
		case logCut:
			if !cs.finalSent {
				cs.finalSent = true
				return errorEvent("this client read the stream too slowly and fell too far behind it: the stream was cut", codeStreamInterrupted), nil
			}
			return nil, errTooSlow
		case logEnd:
			final, err := sh.log.result()
			if !cs.finalSent && len(final) > 0 {
				cs.finalSent = true
				return final, nil
			}
			cs.reachedEnd = true
			if err == nil {
				return nil, io.EOF
			}
			return nil, err
		case logWait:
			if !sh.wait(cs, wake) {
				return nil, errStreamNotFinished
			}
		case logRead:
			if out := sh.read(cs); len(out) > 0 {
				return out, nil
			}
		}
	}
}

// wait waits for the log to change, bounded by the client's stream
// deadline.
func (sh *liveStream) wait(cs *consumer, wake <-chan struct{}) bool {
	t := time.NewTimer(time.Until(cs.endBy))
	defer t.Stop()
	select {
	case <-wake:
		return true
	case <-t.C:
		return false
	}
}

// read reads the upstream under the reader role: one event, and those
// already buffered behind it. The leader's client gets what it read from
// the relay itself (comments included, converted for it), copied: another
// client may read on as soon as the role is released. A follower gets
// nothing here; it takes the events from the log.
func (sh *liveStream) read(cs *consumer) []byte {
	rel := sh.rel
	leader := cs == &sh.leader
	var out []byte
	if leader {
		if cs.scratch == nil {
			cs.scratch = batchPool.Get().(*[]byte)
		}
		out = (*cs.scratch)[:0]
	}
	var last []byte
	for {
		last = rel.next()
		if leader {
			out = append(out, last...)
		}
		if rel.abort != nil || rel.done || !rel.ready() || len(out) >= maxBatch {
			break
		}
	}
	if leader {
		*cs.scratch = out
	}
	end := rel.abort != nil || rel.done
	var final []byte
	if rel.abort != nil {
		final = append([]byte(nil), last...)
		if len(final) == 0 { // the upstream was cut for the client that left: followers still get a reason
			final = errorEvent("the stream was cut before its end: retry the request", codeStreamInterrupted)
		}
		if rel.streamErr != nil {
			sh.streamMsg = rel.c.st.describeErr(rel.r.u.Name, rel.streamErr)
		}
	}
	var rd *logReader
	if leader {
		rd = &cs.rd
		cs.finalSent = end && len(last) > 0
	}
	sh.log.release(rd, end, final, rel.abort)
	if end {
		sh.endStream(rel.abort)
	}
	return out
}

// endStream ends the upstream stream once (see relay.closeStream), err
// being how it ended (nil: complete). The caller held the reader role
// last, so the relay's state is its to read.
func (sh *liveStream) endStream(err error) {
	sh.rel.closeStream(err)
}

// requestDone is the stream's part of the leader's log line (see
// outcomeResult.logTo).
func (sh *liveStream) requestDone(status int, msg string) {
	sh.srcStatus, sh.srcMsg = status, msg
	if sh.parts.Add(-1) == 0 {
		sh.logLeader()
	}
}

// leave ends cs's part in the stream, its response done (err: fasthttp's
// close error). The last client to leave before the end closes the
// upstream.
func (sh *liveStream) leave(cs *consumer, err error) {
	if sh.log.leave(&cs.rd) {
		sh.rel.abort = errClientGone // the reader role is the caller's: see streamLog.leave
		sh.log.release(nil, true, nil, errClientGone)
		sh.endStream(errClientGone)
	}
}

// leaderClosed is the relay's CloseWithError for a live stream: the
// leader's client is done.
func (sh *liveStream) leaderClosed(err error) {
	cs := &sh.leader
	sh.leaderOK, sh.leaderErr = clientCompleted(cs, err, &sh.log)
	if b := cs.scratch; b != nil && cap(*b) <= 2*maxBatch {
		cs.scratch = nil
		*b = (*b)[:0]
		batchPool.Put(b)
	}
	sh.leave(cs, err)
	if sh.parts.Add(-1) == 0 {
		sh.logLeader()
	}
}

// clientCompleted reports whether a client got the whole stream, and
// else why not.
func clientCompleted(cs *consumer, err error, l *streamLog) (bool, error) {
	_, logErr := l.result()
	switch {
	case cs.writeErr != nil:
		return false, cs.writeErr
	case !cs.reachedEnd:
		if err == nil {
			err = errStreamNotFinished
		}
		return false, err
	case err != nil && !errors.Is(err, logErr):
		return false, err // the end of the response could not be written
	}
	return true, nil
}

// logLeader writes the leader's log line, once both its client and the
// stream are done: the stream's failure if it failed, else 499 if the
// client left, else the stream's status.
func (sh *liveStream) logLeader() {
	status, msg := sh.srcStatus, sh.srcMsg
	if msg == "" && !sh.leaderOK {
		status, msg = 499, "client went away: "+sh.leaderErr.Error()
	}
	sh.s.logRequest(sh.rel.c, status, msg)
}

// writeTo writes cs's stream to w, fasthttp's chunked writer: every Write
// is one chunk, flushed; each has write_timeout (see relay.WriteTo).
func (sh *liveStream) writeTo(cs *consumer, w io.Writer) (int64, error) {
	var written int64
	for {
		b, err := sh.step(cs)
		if len(b) > 0 {
			if cs.conn != nil {
				dl := time.Now().Add(cs.writeTimeout)
				if dl.After(cs.endBy) {
					dl = cs.endBy
				}
				_ = cs.conn.SetWriteDeadline(dl)
			}
			n, werr := w.Write(b)
			written += int64(n)
			if werr != nil {
				cs.writeErr = werr
				return written, werr
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return written, nil
		case err != nil:
			return written, err
		}
	}
}

// readInto is Read for cs (fasthttp uses writeTo).
func (sh *liveStream) readInto(cs *consumer, p []byte) (int, error) {
	for len(cs.cur) == 0 {
		b, err := sh.step(cs)
		if err != nil {
			return 0, err
		}
		cs.cur = b
	}
	n := copy(p, cs.cur)
	cs.cur = cs.cur[n:]
	return n, nil
}

// follower is the response body of a request that follows a live stream.
type follower struct {
	s  *Server
	c  *call
	sh *liveStream
	cs consumer
}

// followLive answers c by following fl's live stream, when it can still
// be joined from its beginning. It returns false when it cannot: the
// request then waits for the flight's entry.
func (s *Server) followLive(ctx *fasthttp.RequestCtx, c *call, sh *liveStream) bool {
	wt := c.st.cfg.WriteTimeout
	f := &follower{s: s, c: c, sh: sh, cs: consumer{strip: stripsUsage(c), conn: ctx.Conn(), writeTimeout: wt,
		endBy: time.Now().Add(maxStreamDuration)}}
	if !sh.log.add(&f.cs.rd) {
		return false
	}
	s.countCache(c, cacheCoalesced)
	coalescedTotal.Inc()
	_ = ctx.SetWriteDeadline(time.Now().Add(wt))
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType("text/event-stream")
	ctx.Response.Header.Set("X-Cache", cacheCoalesced)
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.ImmediateHeaderFlush = true // the log may not hold an event yet
	c.body, c.header = nil, nil              // not valid once the handler returns
	c.handedOff = true                       // the follower logs the request when its response ends
	ctx.SetBodyStream(f, -1)
	return true
}

// SupportsBodyWriteTo makes fasthttp call WriteTo instead of Read.
func (f *follower) SupportsBodyWriteTo() bool { return true }

// WriteTo relays the stream to the follower's client.
func (f *follower) WriteTo(w io.Writer) (int64, error) { return f.sh.writeTo(&f.cs, w) }

// Read implements io.Reader (SetBodyStream wants one); fasthttp uses
// WriteTo.
func (f *follower) Read(p []byte) (int, error) { return f.sh.readInto(&f.cs, p) }

// CloseWithError is called once by fasthttp when the response is done.
func (f *follower) CloseWithError(err error) error {
	ok, why := clientCompleted(&f.cs, err, &f.sh.log)
	f.sh.leave(&f.cs, err)
	_, logErr := f.sh.log.result()
	status, msg := fasthttp.StatusOK, ""
	switch {
	case errors.Is(logErr, errShutdown):
		status, msg = fasthttp.StatusServiceUnavailable, "cut: "+errShutdown.Error()
	case logErr != nil && f.cs.reachedEnd:
		msg = f.sh.streamMsg
		if msg == "" {
			msg = logErr.Error()
		}
	case !ok:
		status, msg = 499, "client went away: "+why.Error()
	default:
		f.s.successes.Add(1)
	}
	f.s.logRequest(f.c, status, msg)
	return nil
}
