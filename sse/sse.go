// Package sse splits a server-sent-events byte stream into events without
// changing a byte, and reads the data of one event.
//
// Switchyard relays an upstream's stream event by event: it must know where
// one event ends to flush it, to look at its data (an in-band error, a
// finish_reason, the usage chunk) and to notice a stream cut mid-event. The
// raw bytes of each event, terminator included, are what the client gets.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

var (
	// ErrEventTooLarge is returned when one event exceeds the reader's limit.
	ErrEventTooLarge = errors.New("sse: event too large")
	// ErrTruncated is returned when the stream ends in the middle of an event.
	ErrTruncated = errors.New("sse: stream ended mid-event")
)

// DefaultMaxEventBytes bounds one event (4 MiB): an LLM chunk is a few
// hundred bytes, so anything near this is a broken upstream.
const DefaultMaxEventBytes = 4 << 20

// Reader returns the events of a stream one at a time.
type Reader struct {
	br  *bufio.Reader
	buf []byte
	max int
}

// NewReader returns a Reader over r with events of at most maxBytes
// (DefaultMaxEventBytes when maxBytes <= 0).
func NewReader(r io.Reader, maxBytes int) *Reader {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxEventBytes
	}
	// 2 KiB holds several typical chunks (a few hundred bytes each); a
	// longer line is read in pieces. Every open stream holds one.
	return &Reader{br: bufio.NewReaderSize(r, 2048), max: maxBytes}
}

// Next returns the next event's raw bytes, ending with its blank line. The
// slice is valid until the next call. At the end of the stream it returns
// io.EOF; a stream cut inside an event returns the partial bytes and
// ErrTruncated, unless the cut falls right after a complete line, in which
// case the event is returned with a blank line appended (some servers close
// after "data: [DONE]\n"). Other read errors are returned as they are.
// Blank lines between events are kept at the start of the next event, so
// the events concatenate back to the stream; blank lines after the last
// event are dropped.
func (r *Reader) Next() ([]byte, error) {
	r.buf = r.buf[:0]
	midLine := false // the last ReadSlice stopped at a full buffer, not at '\n'
	content := false // r.buf holds a line that is not blank
	for {
		line, err := r.br.ReadSlice('\n')
		if len(line) > 0 {
			if len(r.buf)+len(line) > r.max {
				return nil, fmt.Errorf("%w (over %d bytes)", ErrEventTooLarge, r.max)
			}
			r.buf = append(r.buf, line...)
		}
		switch {
		case err == nil:
			if !midLine && isBlank(line) {
				if !content { // stray blank lines between events: keep them attached to the next one
					continue
				}
				return r.buf, nil
			}
			midLine = false
			content = true
		case errors.Is(err, bufio.ErrBufferFull):
			midLine = true
			content = true
		case errors.Is(err, io.EOF):
			if !content && onlyBlank(line) {
				return nil, io.EOF // trailing stray blank lines are dropped
			}
			if r.buf[len(r.buf)-1] == '\n' {
				r.buf = append(r.buf, '\n')
				return r.buf, nil
			}
			return r.buf, ErrTruncated
		default:
			return r.buf, err
		}
	}
}

// Ready reports whether a whole event is already buffered, so that Next
// returns it without reading from the underlying reader (and so without
// blocking). It may report false for an event that Next would return at
// once (the end of the stream, an event larger than the buffer).
func (r *Reader) Ready() bool {
	b, _ := r.br.Peek(r.br.Buffered())
	// Blank lines before an event belong to it: the event is complete at
	// the first blank line after a line that is not blank.
	i := 0
	for i < len(b) && (b[i] == '\n' || b[i] == '\r') {
		i++
	}
	b = b[i:]
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

func isBlank(line []byte) bool {
	return len(line) == 1 || (len(line) == 2 && line[0] == '\r')
}

func onlyBlank(b []byte) bool {
	return len(bytes.Trim(b, "\r\n")) == 0
}

// Data returns the event's data: the values of its "data:" fields joined by
// "\n", with one leading space of each value removed. Comment lines and other
// fields (event:, id:, retry:) are ignored. An event with a single data line
// returns a sub-slice of event without allocating. ok is false when the event
// has no data field (a comment or keep-alive).
func Data(event []byte) (data []byte, ok bool) {
	var joined []byte
	n := 0
	for len(event) > 0 {
		i := bytes.IndexByte(event, '\n')
		var line []byte
		if i < 0 {
			line, event = event, nil
		} else {
			line, event = event[:i], event[i+1:]
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if !bytes.HasPrefix(line, []byte("data")) {
			continue
		}
		v := line[4:]
		if len(v) > 0 && v[0] != ':' {
			continue // a field named e.g. "datax"
		}
		if len(v) > 0 {
			v = v[1:]
		}
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
		switch n {
		case 0:
			data = v
		case 1:
			joined = append(append(append(joined, data...), '\n'), v...)
		default:
			joined = append(append(joined, '\n'), v...)
		}
		n++
	}
	if n > 1 {
		return joined, true
	}
	return data, n == 1
}

// EventType returns the value of the event's "event:" field, or nil.
func EventType(event []byte) []byte {
	for len(event) > 0 {
		i := bytes.IndexByte(event, '\n')
		var line []byte
		if i < 0 {
			line, event = event, nil
		} else {
			line, event = event[:i], event[i+1:]
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if v, ok := bytes.CutPrefix(line, []byte("event:")); ok {
			return bytes.TrimPrefix(v, []byte{' '})
		}
	}
	return nil
}

// IsDone reports whether data is the OpenAI end-of-stream marker [DONE].
func IsDone(data []byte) bool {
	return bytes.HasPrefix(data, []byte("[DONE]"))
}
