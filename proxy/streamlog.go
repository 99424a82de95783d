package proxy

import "sync"

// streamLog is the broadcast log of one live stream: the events the
// upstream sent, as the cache keeps them (data events and [DONE]), which
// every client of the stream — the request that went upstream and the
// identical requests that follow it — drains at its own pace from its own
// position.
//
// The upstream is read by one reader at a time, whichever client has
// caught up with the log first (poll hands out the role), so the stream
// advances at the pace of its fastest client, never its slowest: a client
// that stops reading holds nothing up, and is cut by its write timeout.
//
// Memory is bounded by limit, the largest stream the cache keeps: while
// the stream fits, buf holds all of it (it is the cache entry, and a new
// client can still join from the start). Past it the stream is overrun:
// no entry, no new clients, and when buf is full again the bytes every
// client has read are dropped; a client more than limit/2 behind the
// upstream at that moment is cut (it gets an error event, then its
// response ends).
type streamLog struct {
	mu    sync.Mutex
	buf   []byte // bytes [base, base+len(buf)) of the stream
	base  int
	limit int
	// overrun: the stream outgrew limit, buf no longer starts at its
	// beginning. closed: every client left before the end. Either way
	// no client joins any more.
	overrun, closed bool
	reading         bool // a client holds the reader role (see poll)
	ended           bool
	final           []byte // the event each client gets after the stream (an in-band error), or nil
	err             error  // nil: a clean end; else each client's response aborts after final
	wake            chan struct{}
	readers         []*logReader
	readersBuf      [4]*logReader // readers' first array: most streams have one or two
}

// logReader is one client's position in a streamLog.
type logReader struct {
	pos int  // bytes of the stream the client has taken
	cut bool // fell too far behind past the bound: see streamLog
}

// logAction is what poll tells a client to do next.
type logAction int

const (
	logData logAction = iota // write the bytes returned
	logRead                  // read the upstream (the reader role), then release
	logWait                  // wait for the channel returned, then poll again
	logEnd                   // the stream is over: see result
	logCut                   // this client fell too far behind: see streamLog
)

func newStreamLog(limit int) *streamLog {
	l := &streamLog{}
	l.init(limit)
	return l
}

// init readies a zero streamLog (one embedded in another struct).
func (l *streamLog) init(limit int) {
	l.limit = limit
	l.readers = l.readersBuf[:0]
}

// join adds a client that starts from the beginning of the stream. It
// fails once the beginning is gone (overrun), every client has left, or
// the stream failed.
func (l *streamLog) join() (*logReader, bool) {
	rd := &logReader{}
	return rd, l.add(rd)
}

// add is join for a reader the caller allocated (at position 0).
func (l *streamLog) add(rd *logReader) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.overrun || l.closed || l.base != 0 || (l.ended && l.err != nil) {
		return false
	}
	l.readers = append(l.readers, rd)
	return true
}

// leave removes a client. It returns last = true when the client was the
// last one and the stream has not ended: the caller then holds the reader
// role and must end the stream (nobody is left to read it).
func (l *streamLog) leave(rd *logReader) (last bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, r := range l.readers {
		if r == rd {
			l.readers = append(l.readers[:i], l.readers[i+1:]...)
			break
		}
	}
	if len(l.readers) > 0 || l.ended || l.closed {
		return false
	}
	l.closed = true
	if l.reading { // cannot happen: a client releases the role before it writes
		return false
	}
	l.reading = true
	return true
}

// only reports whether rd is the stream's one client.
func (l *streamLog) only(rd *logReader) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.readers) == 1 && l.readers[0] == rd
}

// poll returns the client's next step: the bytes past its position (which
// it now has), the reader role when it has caught up and nobody reads,
// or a channel to wait on while another client reads. The bytes are
// shared: never modify them.
func (l *streamLog) poll(rd *logReader) ([]byte, logAction, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch end := l.base + len(l.buf); {
	case rd.cut:
		return nil, logCut, nil
	case rd.pos < end:
		data := l.buf[rd.pos-l.base:]
		rd.pos = end
		return data, logData, nil
	case l.ended:
		return nil, logEnd, nil
	case !l.reading:
		l.reading = true
		return nil, logRead, nil
	}
	if l.wake == nil {
		l.wake = make(chan struct{})
	}
	return nil, logWait, l.wake
}

// append adds an event; only the reader calls it. It returns the whole
// stream while the log holds it (the cache entry so far), else nil and
// overrun = true.
func (l *streamLog) append(ev []byte) (whole []byte, overrun bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf)+len(ev) > l.limit {
		l.overrun = true
		l.compact(len(ev))
	}
	// buf may share its array with bytes handed out by poll: append
	// writes only past them, and compact copies.
	l.buf = append(l.buf, ev...)
	l.notify()
	if l.overrun {
		return nil, true
	}
	return l.buf, false
}

// compact makes room for need bytes past the bound: it drops the bytes
// every client has taken, after cutting the clients more than limit/2
// behind. What is left is at most limit/2, so a compaction copies at most
// half of what the stream added since the last one.
func (l *streamLog) compact(need int) {
	end := l.base + len(l.buf)
	keep := end
	for _, rd := range l.readers {
		if rd.cut {
			continue
		}
		if end-rd.pos > l.limit/2 {
			rd.cut = true
			continue
		}
		keep = min(keep, rd.pos)
	}
	rest := l.buf[keep-l.base:]
	nb := make([]byte, len(rest), len(rest)+need)
	copy(nb, rest)
	l.buf, l.base = nb, keep
}

// release gives the reader role back, after the reader appended what it
// read. rd, when the reader is a client that got those events from the
// upstream directly (the leader), moves to the end. end marks the stream
// over, with the event each client gets after it and the error its
// response aborts with (nil: a clean end).
func (l *streamLog) release(rd *logReader, end bool, final []byte, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rd != nil {
		rd.pos = l.base + len(l.buf)
	}
	if end {
		l.ended, l.final, l.err = true, final, err
	}
	l.reading = false
	l.notify()
}

// result is how the stream ended: the event after it and the abort error.
func (l *streamLog) result() ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.final, l.err
}

// notify wakes the clients waiting in poll. Called with mu held.
func (l *streamLog) notify() {
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
}
