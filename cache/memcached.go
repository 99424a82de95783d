package cache

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/bradfitz/gomemcache/memcache"
	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

const (
	// memcachedItemOverhead is what memcached adds to key and value when
	// checking an item against its size limit (-I): item header, CAS and
	// terminators, rounded up.
	memcachedItemOverhead = 100
	// maxRelativeExpiration is the largest expiration memcached reads as
	// seconds from now; anything larger is an absolute Unix time.
	maxRelativeExpiration = 30 * 24 * 60 * 60
)

// MemcachedOptions configures NewMemcached.
type MemcachedOptions struct {
	// Servers are "host:port" (or unix socket path) addresses. Keys are
	// spread over them by gomemcache's ServerList (crc32(key) mod n, not
	// consistent hashing: changing the list remaps most keys). Names are
	// resolved once, by NewMemcached. A server listed twice gets twice the
	// keys (and one breaker). Required.
	Servers []string
	// Timeout bounds dialing and each network operation. Default 100ms.
	// A blackholed server costs this much per operation on its keys until
	// its breaker opens.
	Timeout time.Duration
	// MaxItemBytes is the servers' item size limit (memcached -I). Values
	// that would exceed it are refused with ErrTooLarge without being sent.
	// Default 1 MiB, memcached's default.
	MaxItemBytes int
	// BreakerDelay is how long a server's breaker stays open before letting
	// one probe operation through. It bounds how long after a server comes
	// back its keys are cached again. Default 5s.
	BreakerDelay time.Duration
	// BreakerFailures is the number of consecutive failed operations on one
	// server that opens its breaker. Default 5.
	BreakerFailures int
}

// Memcached is a cache backed by memcached servers, for sharing entries
// and counters across sidecar replicas. It is safe for concurrent use.
//
// Each server has its own connection pool and circuit breaker, so a dead
// server costs only the keys it holds: operations on keys of live servers
// go on as before. Network and server errors count as failures of the
// server the key maps to; misses, "not stored" and malformed keys do not.
// After BreakerFailures consecutive failures that server's breaker opens:
// its idle connections are closed, and operations on its keys fail at once
// with an error wrapping circuitbreaker.ErrOpen, without touching the
// network. After BreakerDelay the next operation on one of its keys is let
// through as a probe, on a new connection; one success closes the breaker
// again.
//
// A pooled connection that the server closed (the server restarted, or a
// middlebox dropped an idle connection) fails with EOF, a reset or a broken
// pipe. Then every idle connection to that server is closed, since they
// are as old, and the operation is sent once more on a new connection, so
// a restarted server is usable at once rather than after one failure per
// stale connection. (If the server had executed the command before the
// connection broke, the retry repeats it: an Incr counts twice, an Add
// reports ErrNotStored. A restarted server never saw the command.)
type Memcached struct {
	// shards are the distinct servers, in the order first listed.
	shards []*memcachedShard
	// list places keys, exactly as a gomemcache Client over all servers
	// would; byAddr maps each of its addresses to its shard.
	list     *memcache.ServerList
	byAddr   map[net.Addr]*memcachedShard
	maxItem  int
	now      func() time.Time
	maxIncrs int // attempts of the increment/add dance in Incr
	// gauges holds the per-server breaker gauges, exported while this is
	// the reported instance (see report).
	gauges *metrics.Set
}

// memcachedShard is one memcached server: its own client (connection
// pool) and breaker.
type memcachedShard struct {
	name    string // as configured, for metrics and errors
	client  *memcache.Client
	breaker circuitbreaker.CircuitBreaker[any]
	exec    failsafe.Executor[any]
}

// NewMemcached returns a Memcached for o.Servers. It does not connect; a
// server that is down only shows up as failing operations. It returns an
// error if the server list is empty or an address does not resolve.
func NewMemcached(o MemcachedOptions) (*Memcached, error) {
	if len(o.Servers) == 0 {
		return nil, errors.New("memcached: no servers")
	}
	if o.Timeout <= 0 {
		o.Timeout = 100 * time.Millisecond
	}
	if o.MaxItemBytes <= 0 {
		o.MaxItemBytes = 1 << 20
	}
	if o.BreakerDelay <= 0 {
		o.BreakerDelay = 5 * time.Second
	}
	if o.BreakerFailures <= 0 {
		o.BreakerFailures = 5
	}
	list := new(memcache.ServerList)
	if err := list.SetServers(o.Servers...); err != nil {
		return nil, fmt.Errorf("memcached servers: %w", err)
	}
	m := &Memcached{
		list:     list,
		byAddr:   make(map[net.Addr]*memcachedShard, len(o.Servers)),
		maxItem:  o.MaxItemBytes,
		now:      time.Now,
		maxIncrs: 3,
		gauges:   metrics.NewSet(),
	}
	// The list holds the resolved addresses in the order of o.Servers.
	byString := map[string]*memcachedShard{}
	i := 0
	_ = list.Each(func(addr net.Addr) error {
		s := byString[addr.String()]
		if s == nil {
			s = newMemcachedShard(o.Servers[i], addr, o)
			byString[addr.String()] = s
			m.shards = append(m.shards, s)
			m.gauges.NewGauge(fmt.Sprintf(`switchyard_cache_server_breaker_state{server=%q}`, s.name),
				func() float64 { return breakerStateValue(s.breaker.State()) })
		}
		m.byAddr[addr] = s
		i++
		return nil
	})
	m.report()
	return m, nil
}

// newMemcachedShard returns the shard for the server configured as name
// and resolved to addr.
func newMemcachedShard(name string, addr net.Addr, o MemcachedOptions) *memcachedShard {
	client := memcache.NewFromSelector(oneServer{addr})
	client.Timeout = o.Timeout
	client.MaxIdleConns = 64
	client.DialContext = dialCounted
	s := &memcachedShard{name: name, client: client}
	s.breaker = circuitbreaker.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return isBreakerFailure(err) }).
		WithFailureThreshold(uint(o.BreakerFailures)).
		WithSuccessThreshold(1).
		WithDelay(o.BreakerDelay).
		// Connections pooled before the server failed are likely dead
		// (a restarted server does not know them): the probe after the
		// delay, and what follows, must not spend them one by one.
		OnOpen(func(circuitbreaker.StateChangedEvent) { _ = client.Close() }).
		Build()
	s.exec = failsafe.With[any](s.breaker)
	return s
}

// oneServer is the selector of a shard's client: every key goes to addr.
type oneServer struct{ addr net.Addr }

// PickServer returns the one address.
func (o oneServer) PickServer(string) (net.Addr, error) { return o.addr, nil }

// Each calls f with the one address.
func (o oneServer) Each(f func(net.Addr) error) error { return f(o.addr) }

// isBreakerFailure reports whether err says memcached is unhealthy. Cache
// protocol outcomes prove the server answered.
func isBreakerFailure(err error) bool {
	switch {
	case err == nil,
		errors.Is(err, memcache.ErrCacheMiss),
		errors.Is(err, memcache.ErrNotStored),
		errors.Is(err, memcache.ErrCASConflict),
		errors.Is(err, memcache.ErrMalformedKey):
		return false
	}
	return true
}

// isStaleConn reports whether err is what a connection the server closed
// gives: EOF on reading the answer, or a reset or broken pipe on writing
// the request. Timeouts and refused dials are not: the server is slow or
// gone, and repeating the operation at once would not help.
func isStaleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, net.ErrClosed)
}

// shard returns the shard that holds key: the server a gomemcache
// ServerList over all configured servers picks.
func (m *Memcached) shard(key string) (*memcachedShard, error) {
	if len(m.shards) == 1 {
		return m.shards[0], nil
	}
	addr, err := m.list.PickServer(key)
	if err != nil {
		return nil, err
	}
	return m.byAddr[addr], nil
}

// do runs op against the server that holds key, through that server's
// breaker. An op that fails on a stale connection runs once more, after
// the server's idle connections are closed (see Memcached). Failures name
// the server.
func (m *Memcached) do(key string, op func(c *memcache.Client) error) error {
	s, err := m.shard(key)
	if err != nil {
		return err
	}
	err = s.exec.Run(func() error {
		err := op(s.client)
		if isStaleConn(err) {
			_ = s.client.Close()
			memcachedStaleRetries.Inc()
			err = op(s.client)
		}
		return err
	})
	if isBreakerFailure(err) {
		return fmt.Errorf("server %s: %w", s.name, err)
	}
	return err
}

// Add stores value under key for ttl only if key is absent, and returns
// ErrNotStored if it is present: a lock that one client among many takes.
// Other errors are wrapped as "memcached add: ...".
func (m *Memcached) Add(key string, value []byte, ttl time.Duration) error {
	item := &memcache.Item{Key: key, Value: value, Expiration: expiration(ttl, m.now())}
	err := m.do(key, func(c *memcache.Client) error { return c.Add(item) })
	switch {
	case err == nil:
		return nil
	case errors.Is(err, memcache.ErrNotStored):
		return ErrNotStored
	}
	return fmt.Errorf("memcached add: %w", err)
}

// Touch sets key's expiry to ttl from now, and returns ErrNotStored when
// key is absent. Other errors are wrapped as "memcached touch: ...".
func (m *Memcached) Touch(key string, ttl time.Duration) error {
	err := m.do(key, func(c *memcache.Client) error { return c.Touch(key, expiration(ttl, m.now())) })
	switch {
	case err == nil:
		return nil
	case errors.Is(err, memcache.ErrCacheMiss):
		return ErrNotStored
	}
	return fmt.Errorf("memcached touch: %w", err)
}

// Delete removes key; a missing key is not an error. Other errors are
// wrapped as "memcached delete: ...".
func (m *Memcached) Delete(key string) error {
	err := m.do(key, func(c *memcache.Client) error { return c.Delete(key) })
	if err == nil || errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	return fmt.Errorf("memcached delete: %w", err)
}

// Get returns the value stored under key, or ErrMiss. Other errors
// (network, server, breaker open) are wrapped as "memcached get: ...".
// The returned slice belongs to the caller.
func (m *Memcached) Get(key string) ([]byte, error) {
	var it *memcache.Item
	err := m.do(key, func(c *memcache.Client) error {
		var err error
		it, err = c.Get(key)
		return err
	})
	switch {
	case err == nil:
		return it.Value, nil
	case errors.Is(err, memcache.ErrCacheMiss):
		return nil, ErrMiss
	}
	memcachedGetErrors.Inc()
	return nil, fmt.Errorf("memcached get: %w", err)
}

// Set stores value under key for ttl (ttl <= 0 means no expiry; memcached
// may still evict it). A value that would exceed MaxItemBytes together
// with its key and memcached's per-item overhead is refused with
// ErrTooLarge without being sent. Other errors are wrapped as
// "memcached set: ...".
func (m *Memcached) Set(key string, value []byte, ttl time.Duration) error {
	if len(key)+len(value)+memcachedItemOverhead > m.maxItem {
		oversizeTotal.Inc()
		return ErrTooLarge
	}
	item := &memcache.Item{Key: key, Value: value, Expiration: expiration(ttl, m.now())}
	if err := m.do(key, func(c *memcache.Client) error { return c.Set(item) }); err != nil {
		memcachedSetErrors.Inc()
		return fmt.Errorf("memcached set: %w", err)
	}
	return nil
}

// Close closes idle connections and stops reporting this instance's
// breaker states. The Memcached remains usable (it redials on demand).
func (m *Memcached) Close() error {
	m.unreport()
	var errs []error
	for _, s := range m.shards {
		if err := s.client.Close(); err != nil {
			errs = append(errs, fmt.Errorf("server %s: %w", s.name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("memcached close: %w", err)
	}
	return nil
}

// report makes m the instance the breaker gauges describe, in place of
// the previous one (the most recently created instance is reported).
func (m *Memcached) report() {
	reportMu.Lock()
	defer reportMu.Unlock()
	if old := currentMemcached.Swap(m); old != nil {
		metrics.UnregisterSet(old.gauges, false)
	}
	metrics.RegisterSet(m.gauges)
}

// unreport stops reporting m's breakers if m is the reported instance.
func (m *Memcached) unreport() {
	reportMu.Lock()
	defer reportMu.Unlock()
	if currentMemcached.CompareAndSwap(m, nil) {
		metrics.UnregisterSet(m.gauges, false)
	}
}

// worstState is the most severe breaker state over m's servers, on the
// scale of breakerStateValue.
func (m *Memcached) worstState() float64 {
	worst := 0.0
	for _, s := range m.shards {
		worst = max(worst, breakerStateValue(s.breaker.State()))
	}
	return worst
}

// expiration converts a TTL to memcached's expiration field: 0 (never) for
// ttl <= 0; whole seconds from now, rounded up, for up to 30 days; and
// beyond that an absolute Unix time, because memcached reads any value
// over 30 days (2592000 s) as a timestamp — a relative 31 days would be a
// date in 1970, and the item would expire at once. Timestamps past 2038
// are clamped to the largest int32.
func expiration(ttl time.Duration, now time.Time) int32 {
	if ttl <= 0 {
		return 0
	}
	secs := int64(ttl / time.Second)
	if ttl%time.Second != 0 {
		secs++
	}
	if secs <= maxRelativeExpiration {
		return int32(secs)
	}
	abs := now.Unix() + secs
	if abs > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(abs)
}
