package sse_test

import (
	"bytes"
	"io"
	"testing"

	"switchyard/sse"
)

// benchEvent is a typical chat.completion.chunk event (~230 bytes).
const benchEvent = `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"llama-3.3-70b-versatile",` +
	`"choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}]}` + "\n\n"

// loopReader returns buf over and over, in reads of at most chunk bytes
// (the size a TCP read of a stream typically returns).
type loopReader struct {
	buf   []byte
	off   int
	chunk int
}

func (r *loopReader) Read(p []byte) (int, error) {
	if len(p) > r.chunk {
		p = p[:r.chunk]
	}
	n := copy(p, r.buf[r.off:])
	r.off = (r.off + n) % len(r.buf)
	return n, nil
}

func benchNext(b *testing.B, chunk int) {
	events := bytes.Repeat([]byte(benchEvent), 64)
	r := sse.NewReader(&loopReader{buf: events, chunk: chunk}, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchEvent)))
	for b.Loop() {
		ev, err := r.Next()
		if err != nil || len(ev) != len(benchEvent) {
			b.Fatalf("%q, %v", ev, err)
		}
	}
}

// BenchmarkReaderNext is one event per op, read from a stream delivered in
// 4 KiB reads (several events per read).
func BenchmarkReaderNext(b *testing.B) { benchNext(b, 4096) }

// BenchmarkReaderNextOnePerRead delivers each read one event's worth of
// bytes, as a server flushing per event does.
func BenchmarkReaderNextOnePerRead(b *testing.B) { benchNext(b, len(benchEvent)) }

// BenchmarkData extracts a single-line event's data (no copy).
func BenchmarkData(b *testing.B) {
	ev := []byte(benchEvent)
	b.ReportAllocs()
	for b.Loop() {
		if d, ok := sse.Data(ev); !ok || len(d) == 0 {
			b.Fatal("no data")
		}
	}
}

var _ io.Reader = (*loopReader)(nil)
