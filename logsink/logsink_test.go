package logsink

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records what the Writer wrote, one Write call per batch.
type sink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
	blocked chan struct{} // when non-nil, Write waits until it is closed
}

func (s *sink) Write(p []byte) (int, error) {
	if s.blocked != nil {
		<-s.blocked
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.buf.Write(p)
}

func (s *sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func TestLinesKeepTheirOrder(t *testing.T) {
	out := &sink{}
	w := New(out)
	const writers, lines = 4, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(w, "g%d %d\n", g, i)
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines written, want %d", len(got), writers*lines)
	}
	for _, l := range got {
		var g, i int
		if _, err := fmt.Sscanf(l, "g%d %d", &g, &i); err != nil || g < 0 || g >= writers || i != next[g] {
			t.Fatalf("line %q out of order or garbled", l)
		}
		next[g]++
	}
}

func TestAnIdleLineGoesOutWithoutClose(t *testing.T) {
	out := &sink{}
	w := New(out)
	defer w.Close()
	fmt.Fprintln(w, "hello")
	deadline := time.Now().Add(5 * time.Second)
	for out.String() != "hello\n" {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s the line is not out: %q", out.String())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCloseFlushesAndLaterWritesGoDirect(t *testing.T) {
	out := &sink{blocked: make(chan struct{})}
	w := New(out)
	fmt.Fprintln(w, "one") // the background writer takes it and blocks in out.Write
	fmt.Fprintln(w, "two") // pending behind it
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	close(out.blocked)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s")
	}
	fmt.Fprintln(w, "three")
	if err := w.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if got := out.String(); got != "one\ntwo\nthree\n" {
		t.Errorf("wrote %q", got)
	}
}

func TestWritersWaitAboveMaxPending(t *testing.T) {
	out := &sink{blocked: make(chan struct{})}
	w := New(out)
	line := bytes.Repeat([]byte("x"), 64<<10)
	// Up to MaxPending (plus a line) can sit in the blocked write's batch
	// and as much again in pending: three times that must block.
	n := 3 * MaxPending / len(line)
	wrote := make(chan struct{})
	go func() {
		for range n {
			_, _ = w.Write(line)
		}
		close(wrote)
	}()
	select {
	case <-wrote:
		t.Fatalf("all %d writes returned while the output was blocked", n)
	case <-time.After(200 * time.Millisecond):
	}
	close(out.blocked)
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("writes still blocked 5s after the output freed up")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := len(out.String()), n*len(line); got != want {
		t.Errorf("wrote %d bytes, want %d", got, want)
	}
}
