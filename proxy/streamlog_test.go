package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func testEvent(i int) []byte { return fmt.Appendf(nil, "data: {\"n\":%d}\n\n", i) }

// drainLog plays one client of l against an upstream of n events: it
// writes what poll hands it, reads the upstream when it gets the role, and
// waits otherwise. pause slows it down after each write.
func drainLog(t *testing.T, l *streamLog, rd *logReader, upstream *fakeUpstream, pause time.Duration) ([]byte, error) {
	var got []byte
	deadline := time.After(10 * time.Second)
	for {
		data, act, wake := l.poll(rd)
		switch act {
		case logData:
			got = append(got, data...)
			time.Sleep(pause)
		case logRead:
			ev, end := upstream.next()
			if ev != nil {
				l.append(ev)
			}
			l.release(nil, end, nil, nil)
		case logWait:
			select {
			case <-wake:
			case <-deadline:
				return got, errors.New("waited 10s: lost wake-up")
			}
		case logEnd:
			_, err := l.result()
			return got, err
		case logCut:
			return got, errTooSlow
		}
	}
}

// fakeUpstream hands out n events, one per call, gap apart.
type fakeUpstream struct {
	mu  sync.Mutex
	i   int
	n   int
	gap time.Duration
}

func (u *fakeUpstream) next() ([]byte, bool) {
	time.Sleep(u.gap)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.i == u.n {
		return nil, true
	}
	u.i++
	return testEvent(u.i - 1), false
}

func wantStream(n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, testEvent(i)...)
	}
	return b
}

func TestStreamLogClientsGetTheWholeStreamInOrder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		clients int
		pauses  []time.Duration // per client, cycled
		gap     time.Duration
	}{
		{"one client", 1, []time.Duration{0}, 0},
		{"four clients, same pace", 4, []time.Duration{0}, 100 * time.Microsecond},
		{"eight clients, mixed paces", 8, []time.Duration{0, 200 * time.Microsecond, time.Millisecond}, 50 * time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 200
			l := newStreamLog(1 << 20)
			up := &fakeUpstream{n: n, gap: tc.gap}
			var wg sync.WaitGroup
			for i := range tc.clients {
				rd, ok := l.join()
				if !ok {
					t.Fatal("join refused on a fresh log")
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					got, err := drainLog(t, l, rd, up, tc.pauses[i%len(tc.pauses)])
					if err != nil {
						t.Errorf("client %d: %v", i, err)
					}
					if want := wantStream(n); !bytes.Equal(got, want) {
						t.Errorf("client %d got %d bytes, want the %d of the stream in order", i, len(got), len(want))
					}
				}()
			}
			wg.Wait()
		})
	}
}

// A client that stops reading holds nothing up: the others read the
// upstream on and get the whole stream.
func TestStreamLogStalledClientDoesNotPaceTheOthers(t *testing.T) {
	const n = 100
	l := newStreamLog(1 << 20)
	up := &fakeUpstream{n: n}
	stalled, _ := l.join()
	if _, act, _ := l.poll(stalled); act != logRead {
		t.Fatalf("first poll: %v, want the reader role", act)
	}
	ev, _ := up.next()
	l.append(ev)
	l.release(stalled, false, nil, nil) // the stalled client got event 0 itself, then stops
	rd, _ := l.join()
	start := time.Now()
	got, err := drainLog(t, l, rd, up, 0)
	if err != nil || !bytes.Equal(got, wantStream(n)) {
		t.Fatalf("follower got %d bytes (%v), want the whole stream", len(got), err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("follower took %v", d)
	}
}

func TestStreamLogPollActions(t *testing.T) {
	l := newStreamLog(1 << 10)
	a, _ := l.join()
	b, _ := l.join()
	if _, act, _ := l.poll(a); act != logRead {
		t.Fatalf("a: %v, want logRead", act)
	}
	_, act, wake := l.poll(b)
	if act != logWait || wake == nil {
		t.Fatalf("b while a reads: %v, want logWait", act)
	}
	l.append(testEvent(0))
	select {
	case <-wake:
	default:
		t.Fatal("append did not wake the waiting client")
	}
	if data, act, _ := l.poll(b); act != logData || !bytes.Equal(data, testEvent(0)) {
		t.Fatalf("b after append: %v %q", act, data)
	}
	l.release(a, false, nil, nil)
	if _, act, _ := l.poll(a); act != logRead {
		t.Fatalf("a after release (moved to the end): %v, want logRead", act)
	}
	final := []byte("data: {\"error\":{}}\n\n")
	cut := errors.New("cut")
	l.release(a, true, final, cut)
	for _, rd := range []*logReader{a, b} {
		if _, act, _ := l.poll(rd); act != logEnd {
			t.Fatalf("after the end: %v, want logEnd", act)
		}
	}
	if f, err := l.result(); !bytes.Equal(f, final) || err != cut {
		t.Fatalf("result %q %v", f, err)
	}
	if _, ok := l.join(); ok {
		t.Fatal("joined a stream that failed")
	}
}

func TestStreamLogJoin(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before func(l *streamLog, rd *logReader)
		want   bool
	}{
		{"fresh", func(*streamLog, *logReader) {}, true},
		{"mid-stream", func(l *streamLog, rd *logReader) { l.poll(rd); l.append(testEvent(0)); l.release(rd, false, nil, nil) }, true},
		{"ended cleanly", func(l *streamLog, rd *logReader) { l.poll(rd); l.append(testEvent(0)); l.release(rd, true, nil, nil) }, true},
		{"ended with an error", func(l *streamLog, rd *logReader) { l.poll(rd); l.release(rd, true, nil, errCutStream) }, false},
		{"overrun", func(l *streamLog, rd *logReader) {
			l.poll(rd)
			for i := range 20 {
				l.append(testEvent(i))
			}
			l.release(rd, false, nil, nil)
		}, false},
		{"every client left", func(l *streamLog, rd *logReader) { l.leave(rd) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newStreamLog(64)
			rd, _ := l.join()
			tc.before(l, rd)
			if _, ok := l.join(); ok != tc.want {
				t.Errorf("join: %v, want %v", ok, tc.want)
			}
		})
	}
}

func TestStreamLogLeave(t *testing.T) {
	l := newStreamLog(1 << 10)
	a, _ := l.join()
	b, _ := l.join()
	if l.leave(a) {
		t.Fatal("leave with another client left: last")
	}
	if !l.only(b) {
		t.Fatal("b is not the only client")
	}
	if !l.leave(b) {
		t.Fatal("the last client to leave before the end must end the stream")
	}
	// The last client holds the reader role: nobody else may read.
	c := &logReader{}
	if _, act, _ := l.poll(c); act != logWait {
		t.Fatalf("poll after the last leave: %v, want logWait", act)
	}

	l = newStreamLog(1 << 10)
	a, _ = l.join()
	l.poll(a)
	l.release(a, true, nil, nil)
	if l.leave(a) {
		t.Fatal("leaving an ended stream: last")
	}
}

// Past the bound the log keeps at most limit (plus an event) and cuts a
// client more than limit/2 behind; a client that keeps up gets every byte.
func TestStreamLogBound(t *testing.T) {
	const limit = 1 << 10
	l := newStreamLog(limit)
	fast, _ := l.join()
	slow, _ := l.join()
	var got []byte
	var whole []byte
	for i := range 200 {
		if _, act, _ := l.poll(fast); act != logRead {
			t.Fatalf("event %d: fast client %v, want logRead", i, act)
		}
		ev := testEvent(i)
		w, over := l.append(ev)
		if !over {
			whole = w
		}
		l.release(nil, i == 199, nil, nil)
		data, act, _ := l.poll(fast)
		if act != logData {
			t.Fatalf("event %d: fast client %v, want logData", i, act)
		}
		got = append(got, data...)
		if len(l.buf) > limit+len(ev) {
			t.Fatalf("event %d: log holds %d bytes, bound %d", i, len(l.buf), limit)
		}
	}
	if !bytes.Equal(got, wantStream(200)) {
		t.Fatalf("the fast client got %d bytes, want the whole stream", len(got))
	}
	if !bytes.HasPrefix(wantStream(200), whole) || len(whole) == 0 || len(whole) > limit {
		t.Fatalf("the entry so far (%d bytes) is not a prefix within the bound", len(whole))
	}
	if _, act, _ := l.poll(slow); act != logCut {
		t.Fatalf("the client that never read: %v, want logCut", act)
	}
}
