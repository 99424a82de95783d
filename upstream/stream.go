package upstream

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/valyala/fasthttp"

	"switchyard/sse"
)

// Stream is an upstream's open event stream. It owns the fasthttp response
// until Close. A watchdog closes the connection when no event arrives within
// the first-token timeout, or when the stream then goes silent for longer than
// the idle timeout, so Next never blocks past those bounds.
type Stream struct {
	name   string
	resp   *fasthttp.Response
	body   fasthttp.ReadCloserWithError
	events *sse.Reader
	idle   time.Duration
	start  time.Time

	mu       sync.Mutex // guards closed and the watchdog's close
	closed   bool
	timer    *time.Timer
	fired    error // the timeout the watchdog enforced, if it fired
	gotFirst bool
	// FirstEvent is when the first data event arrived (zero before).
	FirstEvent time.Time
}

// newStream takes over resp, whose body is in Content-Encoding enc
// (identity, gzip or deflate).
func newStream(name string, resp *fasthttp.Response, enc encoding, first, idle time.Duration) *Stream {
	body, ok := resp.BodyStream().(fasthttp.ReadCloserWithError)
	if !ok {
		panic("BUG: fasthttp streamed body does not implement ReadCloserWithError")
	}
	s := &Stream{name: name, resp: resp, body: body, idle: idle, start: time.Now()}
	var src io.Reader = body
	switch enc {
	case encIdentity:
	case encGzip, encDeflate:
		src = &decodingReader{enc: enc, src: body}
	default:
		panic("BUG: newStream called for a " + enc.String() + " body")
	}
	s.events = sse.NewReader(src, 0)
	if first <= 0 {
		first = time.Millisecond
	}
	s.timer = time.AfterFunc(first, func() { s.expire(ErrFirstTokenTimeout) })
	return s
}

func (s *Stream) expire(why error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.gotFirst {
		why = ErrIdleTimeout
	}
	s.fired = why
	_ = s.body.CloseWithError(why)
}

// Next returns the next event's raw bytes (valid until the next call), io.EOF
// at a clean end, or an error wrapped with the upstream's name: a timeout
// (ErrFirstTokenTimeout, ErrIdleTimeout), a cut (sse.ErrTruncated) or a read
// error.
func (s *Stream) Next() ([]byte, error) {
	// The idle clock runs only while waiting on the upstream, not while
	// the caller writes the previous event to a slow client; an event
	// already buffered involves no wait.
	wait := s.gotFirst && !s.events.Ready()
	if wait {
		s.timer.Reset(s.idle)
	}
	ev, err := s.events.Next()
	if wait {
		s.timer.Stop()
	}
	if err != nil {
		s.mu.Lock()
		fired := s.fired
		s.mu.Unlock()
		if fired != nil {
			err = fired
		}
		if errors.Is(err, io.EOF) {
			return ev, err
		}
		return ev, fmt.Errorf("upstream %s: reading stream: %w", s.name, err)
	}
	if _, isData := sse.Data(ev); isData && !s.gotFirst {
		s.mu.Lock()
		s.gotFirst = true
		s.mu.Unlock()
		s.FirstEvent = time.Now()
		s.timer.Stop() // from now on, armed only inside Next
	}
	return ev, nil
}

// Ready reports whether the next event is already buffered: Next returns
// it without waiting on the upstream.
func (s *Stream) Ready() bool { return s.events.Ready() }

// drain reads what is left of a stream after [DONE] (normally just the
// chunked terminator) so that its connection can go back to the pool;
// otherwise every stream would pay a new TCP and TLS handshake. The watchdog
// bounds the wait.
func (s *Stream) drain() error {
	const maxEvents = 16  // a well-behaved server sends nothing after [DONE]
	s.timer.Reset(s.idle) // a server that never ends the body is cut off
	for range maxEvents {
		if _, err := s.events.Next(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
	return errTrailingData
}

var (
	errTrailingData = errors.New("data after the end of the stream")
	errAfterZlib    = errors.New("data after the end of the deflate stream")
)

// Close stops the watchdog and releases the upstream response. With a nil
// err it first drains the stream, and the connection is reused if that
// reaches a clean end; any other err closes the connection (the client went
// away, or the stream failed).
func (s *Stream) Close(err error) {
	if err == nil {
		err = s.drain()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.timer.Stop()
	_ = s.body.CloseWithError(err)
	s.mu.Unlock()
	fasthttp.ReleaseResponse(s.resp)
}

// decodingReader decompresses a streamed body. The decoder is made on the
// first Read, because making it reads the gzip or zlib header: that wait
// on the upstream then happens in Next, under the watchdog. Decoding
// errors (a corrupt or cut stream: gzip.ErrChecksum, io.ErrUnexpectedEOF,
// ...) are returned from Read as they are, and Next reports them as stream
// read errors. Decompressed size needs no cap here: the SSE reader bounds
// each event and the watchdog the stream.
//
// The body is read to its end before the decoder's io.EOF is returned, or
// Close could not reuse the connection: gzip does so itself (it looks for
// a next member), zlib stops at its checksum, so Read checks that the body
// ends there.
type decodingReader struct {
	enc encoding
	src io.Reader
	dec io.Reader
	err error // from making the decoder; sticky
}

func (d *decodingReader) Read(p []byte) (int, error) {
	if d.dec == nil {
		if d.err != nil {
			return 0, d.err
		}
		if d.enc == encGzip {
			d.dec, d.err = gzip.NewReader(d.src)
		} else {
			// zlib would wrap a reader that is not an io.ByteReader in
			// its own bufio.Reader, hiding what follows its end from
			// bodyEnd: give it ours.
			br := bufio.NewReader(d.src)
			d.src = br
			d.dec, d.err = zlib.NewReader(br)
		}
		if d.err != nil {
			d.dec = nil // zlib returns a non-nil reader with its error
			return 0, d.err
		}
	}
	n, err := d.dec.Read(p)
	if err == io.EOF && d.enc == encDeflate {
		err = bodyEnd(d.src)
	}
	return n, err
}

// bodyEnd reads r's end: io.EOF when nothing follows, errAfterZlib when
// something does, or r's read error.
func bodyEnd(r io.Reader) error {
	var b [1]byte
	for range 100 { // a reader may return 0, nil; not forever
		n, err := r.Read(b[:])
		if n > 0 {
			return errAfterZlib
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// Abort ends the stream from outside, for a reason of the caller's (the
// client left): a Next blocked on the upstream returns err at once, as
// when a watchdog fires. The caller still Closes the stream.
func (s *Stream) Abort(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.fired != nil {
		return
	}
	s.fired = err
	_ = s.body.CloseWithError(err)
}
