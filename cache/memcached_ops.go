package cache

import (
	"bytes"
	"context"
	"net"
	"strconv"

	"github.com/VictoriaMetrics/metrics"
)

// Every request gomemcache sends is counted on its way out, in
// switchyard_cache_memcached_ops_total{op}, by reading the memcached text
// protocol off the connection's writes: an operation can make several
// requests (Incr: incr, then add and incr again when the counter is
// missing; a retry on a stale connection), and only the wire sees them all.

// maxCommandLine is how much of a command line opConn keeps: enough for
// the verb and, for storage commands, the <bytes> field after a key of up
// to 250 bytes (gomemcache refuses longer keys before sending).
const maxCommandLine = 512

var (
	memcachedOpsGet    = metrics.NewCounter(`switchyard_cache_memcached_ops_total{op="get"}`)
	memcachedOpsSet    = metrics.NewCounter(`switchyard_cache_memcached_ops_total{op="set"}`)
	memcachedOpsAdd    = metrics.NewCounter(`switchyard_cache_memcached_ops_total{op="add"}`)
	memcachedOpsDelete = metrics.NewCounter(`switchyard_cache_memcached_ops_total{op="delete"}`)
	memcachedOpsIncr   = metrics.NewCounter(`switchyard_cache_memcached_ops_total{op="incr"}`)
	memcachedOpsDecr   = metrics.NewCounter(`switchyard_cache_memcached_ops_total{op="decr"}`)
	memcachedOpsOther  = metrics.NewCounter(`switchyard_cache_memcached_ops_total{op="other"}`)
)

// dialCounted is the DialContext of every shard's client: a plain dial
// (gomemcache's ctx carries its Timeout) whose connection counts requests.
func dialCounted(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &opConn{Conn: c}, nil
}

// opConn is a connection to memcached that counts the requests written to
// it. gomemcache uses a connection from one goroutine at a time.
type opConn struct {
	net.Conn
	scanner requestScanner
}

// Write writes p and counts the requests whose command line it completes.
func (c *opConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.scanner.scan(p[:n], countOp)
	return n, err
}

// requestScanner splits the byte stream a client writes to memcached into
// requests: a command line ending in \n, followed, for the storage
// commands, by a data block of the length the line announces and \r\n.
type requestScanner struct {
	line []byte // the current command line, up to maxCommandLine bytes
	skip int    // data block bytes (with their \r\n) still to pass
}

// scan consumes p, calling done with the verb of each command line it
// completes.
func (s *requestScanner) scan(p []byte, done func(verb []byte)) {
	for len(p) > 0 {
		if s.skip > 0 {
			k := min(s.skip, len(p))
			s.skip -= k
			p = p[k:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.keep(p)
			return
		}
		s.keep(p[:i])
		p = p[i+1:]
		line := bytes.TrimSuffix(s.line, []byte("\r"))
		s.line = s.line[:0]
		verb := field(line, 0)
		if len(verb) == 0 {
			continue
		}
		if isStorageVerb(verb) {
			if n, err := strconv.Atoi(string(field(line, 4))); err == nil && n >= 0 {
				s.skip = n + 2
			}
		}
		done(verb)
	}
}

// field returns the i-th space-separated field of line, or nil.
func field(line []byte, i int) []byte {
	for {
		line = bytes.TrimLeft(line, " ")
		if len(line) == 0 {
			return nil
		}
		end := bytes.IndexByte(line, ' ')
		if end < 0 {
			end = len(line)
		}
		if i == 0 {
			return line[:end]
		}
		line = line[end:]
		i--
	}
}

// keep appends b to the current line, up to maxCommandLine bytes.
func (s *requestScanner) keep(b []byte) {
	if room := maxCommandLine - len(s.line); room > 0 {
		s.line = append(s.line, b[:min(len(b), room)]...)
	}
}

// isStorageVerb reports whether a command of this verb carries a data
// block ("<verb> <key> <flags> <exptime> <bytes> [cas] [noreply]").
func isStorageVerb(verb []byte) bool {
	switch string(verb) {
	case "set", "add", "replace", "append", "prepend", "cas":
		return true
	}
	return false
}

// countOp counts one request by its verb.
func countOp(verb []byte) {
	switch string(verb) {
	case "get", "gets":
		memcachedOpsGet.Inc()
	case "set":
		memcachedOpsSet.Inc()
	case "add":
		memcachedOpsAdd.Inc()
	case "delete":
		memcachedOpsDelete.Inc()
	case "incr":
		memcachedOpsIncr.Inc()
	case "decr":
		memcachedOpsDecr.Inc()
	default:
		memcachedOpsOther.Inc()
	}
}
