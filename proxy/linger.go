package proxy

import (
	"net"
	"os"
	"time"
)

// lingerIdle ends a lingering close when the client has sent nothing for
// this long: it has sent its request and waits for (or has read) the answer
// without closing.
const lingerIdle = time.Second

// lingerSlots bounds the lingering closes in progress; past it a rejected
// connection closes at once, as it did before.
var lingerSlots = make(chan struct{}, 1024)

// linger makes the close of c, whose request ErrorHandler is rejecting, a
// lingering one.
//
// fasthttp answers a request it rejects before reading its body (413, 431,
// 400), then closes the connection at once. Bytes the client is still
// sending arrive at a closed socket, the kernel answers them with a reset,
// and a client that writes its whole body before it reads (every SDK:
// httpx, Node fetch, Go net/http) gets "connection reset by peer" instead
// of the answer: the OpenAI SDKs call that a connection error, and retry.
// As Go's net/http and nginx do, the proxy reads and discards what still
// comes before it really closes.
//
// linger takes a second descriptor of the connection's socket: fasthttp
// writes its answer and closes its own descriptor as usual, the socket
// stays open, and a goroutine drains it through the second descriptor: up
// to maxBytes (main: twice max_body_bytes), for at most timeout
// (read_timeout), ending sooner when the client closes or is silent for
// lingerIdle. Closing the second descriptor closes the socket (a reset if
// the client is still sending past those bounds). Nothing of this runs for
// a request that is not rejected: no wrapper sits between fasthttp and its
// connections for it.
func linger(c net.Conn, maxBytes int64, timeout time.Duration) {
	if wc, ok := c.(*conn); ok {
		c = wc.TCPConn
	}
	tc, ok := c.(*net.TCPConn)
	if !ok || maxBytes <= 0 || timeout <= 0 {
		return
	}
	select {
	case lingerSlots <- struct{}{}:
	default:
		return
	}
	f, err := tc.File() // a dup: closing either descriptor leaves the other open
	if err != nil {
		<-lingerSlots
		return
	}
	go func() {
		defer func() {
			_ = f.Close()
			<-lingerSlots
		}()
		drain(f, maxBytes, timeout)
	}()
}

// drain reads and discards from f until the client closes, a read fails,
// the client is silent for lingerIdle, maxBytes are read or timeout passes.
func drain(f *os.File, maxBytes int64, timeout time.Duration) {
	end := time.Now().Add(timeout)
	buf := make([]byte, 32<<10)
	for left := maxBytes; left > 0; {
		d := time.Now().Add(lingerIdle)
		if d.After(end) {
			d = end
		}
		if f.SetReadDeadline(d) != nil {
			return
		}
		n, err := f.Read(buf[:min(int64(len(buf)), left)])
		left -= int64(n)
		if err != nil { // io.EOF: the client closed; a timeout: a bound
			return
		}
	}
}
