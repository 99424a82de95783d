// Package logsink is Switchyard's log output: it takes each log line into
// memory and a background goroutine writes the lines out, in batches when
// they come faster than one write takes.
//
// Every proxied request logs a line. Written straight to stderr, each line
// costs a write syscall and, when stderr is a pipe (a container runtime's
// log driver), a wake-up of the process reading it, inside slog's handler
// lock, which every request goroutine then queues on. Here a line costs a
// copy under a short lock (BenchmarkRequestLine: 2.6-2.8 µs a line written
// directly to a pipe that cat drains, 1.1-1.9 µs through a Writer). Nothing
// waits for a timer: an idle proxy's line goes out at once, and under load
// the lines that arrived during one write leave together in the next.
// Pending lines are bounded (MaxPending); past that, writers wait, as they
// would on a slow stderr.
//
// Close flushes. Lines still in memory when the process dies without Close
// (a crash, SIGKILL) are lost; a Go panic's own report goes to stderr
// directly and is not affected.
package logsink

import (
	"io"
	"sync"
)

// MaxPending bounds the bytes waiting to be written; Write blocks above it.
const MaxPending = 1 << 20

// Writer is an io.Writer that hands lines to a background writer. It is
// safe for concurrent use.
type Writer struct {
	out io.Writer

	mu      sync.Mutex
	room    sync.Cond // signalled when the background writer takes the pending bytes
	pending []byte
	closed  bool

	wake     chan struct{} // capacity 1: "there is something to write"
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// New starts a Writer writing to out. Call Close to flush and stop it.
func New(out io.Writer) *Writer {
	w := &Writer{out: out, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	w.room.L = &w.mu
	go w.run()
	return w
}

// Write queues a copy of p and returns len(p), nil. After Close it writes
// p to the underlying writer directly.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	for len(w.pending) >= MaxPending && !w.closed {
		w.room.Wait()
	}
	if w.closed {
		defer w.mu.Unlock() // keeps lines after Close in order with each other
		return w.out.Write(p)
	}
	w.pending = append(w.pending, p...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // already woken: the line goes with that batch or the next
	}
	return len(p), nil
}

// run writes batches until Close.
func (w *Writer) run() {
	defer close(w.done)
	var spare []byte
	for {
		select {
		case <-w.wake:
		case <-w.stop:
			return
		}
		w.mu.Lock()
		batch := w.pending
		w.pending = spare[:0]
		w.room.Broadcast()
		w.mu.Unlock()
		if len(batch) > 0 {
			// A failed log write has nowhere to be reported; slog's
			// handlers drop it the same way.
			_, _ = w.out.Write(batch)
		}
		if cap(batch) > 64<<10 {
			batch = nil // do not keep a burst's buffer forever
		}
		spare = batch
	}
}

// Close stops the background writer, writes what is pending and returns
// the error of that write. Later writes go straight to the underlying
// writer, after the pending lines. Close is idempotent.
func (w *Writer) Close() error {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done // the batch being written, if any, is out
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	w.room.Broadcast() // writers waiting for room now write directly, after these
	batch := w.pending
	w.pending = nil
	if len(batch) == 0 {
		return nil
	}
	_, err := w.out.Write(batch)
	return err
}
