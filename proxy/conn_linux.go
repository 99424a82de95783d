package proxy

import (
	"net"
	"syscall"
	"time"
)

// deferAccept sets TCP_DEFER_ACCEPT on ln: the kernel completes a
// connection's accept once its first bytes are in (or after about d, all
// the same: the kernel counts it in SYN-ACK retransmissions, the first
// after 1 s), so that Accept can look at them. Failing is harmless: Accept
// then sees no bytes and leaves the connection bare.
func deferAccept(ln net.Listener, d time.Duration) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return
	}
	raw, err := tl.SyscallConn()
	if err != nil {
		return
	}
	secs := max(int((d+time.Second-1)/time.Second), 1)
	_ = raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, secs)
	})
}
