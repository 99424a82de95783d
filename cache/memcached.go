package cache

import (
	"errors"
	"fmt"
	"math"
	"time"

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
	// resolved once, by NewMemcached. Required.
	Servers []string
	// Timeout bounds dialing and each network operation. Default 100ms.
	// A blackholed server costs this much per operation until the breaker
	// opens.
	Timeout time.Duration
	// MaxItemBytes is the servers' item size limit (memcached -I). Values
	// that would exceed it are refused with ErrTooLarge without being sent.
	// Default 1 MiB, memcached's default.
	MaxItemBytes int
	// BreakerDelay is how long the breaker stays open before letting one
	// probe operation through. Default 5s.
	BreakerDelay time.Duration
	// BreakerFailures is the number of consecutive failed operations that
	// opens the breaker. Default 5.
	BreakerFailures int
}

// Memcached is a cache backed by memcached servers, for sharing entries
// and counters across sidecar replicas. It is safe for concurrent use.
//
// Every operation runs through a circuit breaker. Network and server errors
// count as failures; misses, "not stored" and malformed keys do not. After
// BreakerFailures consecutive failures the breaker opens and operations fail
// immediately with an error wrapping circuitbreaker.ErrOpen, without
// touching the network. After BreakerDelay the next operation is let
// through as a probe; one success closes the breaker again.
type Memcached struct {
	client   *memcache.Client
	breaker  circuitbreaker.CircuitBreaker[any]
	exec     failsafe.Executor[any]
	maxItem  int
	now      func() time.Time
	maxIncrs int // attempts of the increment/add dance in Incr
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
	ss := new(memcache.ServerList)
	if err := ss.SetServers(o.Servers...); err != nil {
		return nil, fmt.Errorf("memcached servers: %w", err)
	}
	client := memcache.NewFromSelector(ss)
	client.Timeout = o.Timeout
	client.MaxIdleConns = 64

	cb := circuitbreaker.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return isBreakerFailure(err) }).
		WithFailureThreshold(uint(o.BreakerFailures)).
		WithSuccessThreshold(1).
		WithDelay(o.BreakerDelay).
		Build()
	m := &Memcached{
		client:   client,
		breaker:  cb,
		exec:     failsafe.With[any](cb),
		maxItem:  o.MaxItemBytes,
		now:      time.Now,
		maxIncrs: 3,
	}
	currentMemcached.Store(m)
	return m, nil
}

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

// do runs op against the server that holds key, through the breaker.
func (m *Memcached) do(key string, op func(c *memcache.Client) error) error {
	return m.exec.Run(func() error { return op(m.client) })
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
// breaker state. The Memcached remains usable (it redials on demand).
func (m *Memcached) Close() error {
	currentMemcached.CompareAndSwap(m, nil)
	if err := m.client.Close(); err != nil {
		return fmt.Errorf("memcached close: %w", err)
	}
	return nil
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
