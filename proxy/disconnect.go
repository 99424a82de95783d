package proxy

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// fasthttp gives a stream handler no signal when its client disconnects:
// the only sign is the next write's error, and while the upstream is
// silent (a model thinking) there is no write, so the upstream keeps its
// connection and keeps generating billed tokens. The watcher closes that
// gap: every watchInterval it peeks (without consuming a byte) at the
// connection of each stream that has waited on its upstream for longer
// than that, and aborts the upstream stream of one whose client is gone.

// watchInterval is how often silent streams' clients are checked: the
// upstream is released within about twice this after the client left.
const watchInterval = 250 * time.Millisecond

var (
	// errClientGone ends an upstream stream whose client disconnected.
	errClientGone = errors.New("client disconnected")
	// errShutdown ends the streams still open when the shutdown grace is
	// over (AbortStreams).
	errShutdown = errors.New("the proxy is shutting down")
)

// watcher holds the open streams: the watcher checks the clients of those
// whose connection can be peeked at, and AbortStreams ends them all.
type watcher struct {
	mu      sync.Mutex
	relays  map[*relay]struct{}
	running bool
}

// watch adds an open stream. The watcher's goroutine runs only while
// there are streams.
func (s *Server) watch(r *relay) {
	w := &s.watcher
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.relays == nil {
		w.relays = map[*relay]struct{}{}
	}
	w.relays[r] = struct{}{}
	if !w.running {
		w.running = true
		go s.watchDisconnects()
	}
}

// unwatch removes a relay (its response is done).
func (s *Server) unwatch(r *relay) {
	w := &s.watcher
	w.mu.Lock()
	delete(w.relays, r)
	w.mu.Unlock()
}

func (s *Server) watchDisconnects() {
	w := &s.watcher
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	var silent []*relay
	for range t.C {
		now := time.Now().UnixNano()
		silent = silent[:0]
		w.mu.Lock()
		if len(w.relays) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		for r := range w.relays {
			if since := r.waitingSince.Load(); r.peekable && since != 0 && now-since >= int64(watchInterval) {
				silent = append(silent, r)
			}
		}
		w.mu.Unlock()
		for _, r := range silent {
			// A live stream's upstream is cut for its leader's client only
			// while no follower shares it (see liveStream).
			if (r.share == nil || r.share.soloLeader()) && peerClosed(r.conn) {
				r.r.resp.Stream.Abort(errClientGone)
			}
		}
	}
}

// peerClosed reports whether the peer of conn has closed it (or reset
// it): a peek that reads nothing at the end of the stream. Bytes the
// client sent (a pipelined request) stay unread.
func peerClosed(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var buf [1]byte
	// Control, not Read: Read would check the socket's read deadline
	// (fasthttp leaves read_timeout on it, long past by the time a slow
	// stream needs watching) and take the read lock fasthttp holds while
	// it waits for the next keep-alive request.
	_ = raw.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = (n == 0 && err == nil) || errors.Is(err, syscall.ECONNRESET)
	})
	return closed
}

// AbortStreams ends every stream still open with an in-band error event
// saying the proxy is shutting down (its client's SDK raises it, and can
// retry elsewhere), and waits up to wait for those events to be written.
// It returns how many streams were open. Call it when the shutdown grace
// is over, before the process exits and cuts them silently.
func (s *Server) AbortStreams(wait time.Duration) int {
	w := &s.watcher
	w.mu.Lock()
	open := make([]*relay, 0, len(w.relays))
	for r := range w.relays {
		open = append(open, r)
	}
	w.mu.Unlock()
	for _, r := range open {
		r.r.resp.Stream.Abort(errShutdown)
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		n := len(w.relays)
		w.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return len(open)
}
