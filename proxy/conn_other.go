//go:build !linux

package proxy

import (
	"net"
	"time"
)

// deferAccept does nothing outside Linux: without TCP_DEFER_ACCEPT a new
// connection's first bytes are rarely in at Accept, and it is left bare
// (no bare-LF check; a bare-LF head waits for read_timeout).
func deferAccept(net.Listener, time.Duration) {}
