package proxy

import (
	"errors"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"switchyard/cache"
)

// Coalescing across replicas. In-process coalescing (flights) makes one
// upstream call per key per replica; with memcached shared by several
// replicas, the first replica to miss on a key also takes a lease on it,
// a memcached add of "<key>:lease" that expires after about the upstream
// timeout. Another replica's flight leader that finds the lease taken
// polls memcached for the entry (20 ms, then 1.5 times longer each time, at
// most 200 ms apart) and serves it as a HIT (it is read from the shared
// cache); its own in-process followers get it as COALESCED. It stops waiting as soon as the
// lease is gone: its holder released it without an entry (an error, an
// answer not cached) or died and it expired. It then goes upstream itself,
// without taking the lease again: the holder's failure has already cost
// the waiters one wait, a second leader would double it, and the calls
// stay bounded by one per replica. A waiter also stops past the lease's
// TTL (plus memcached's one-second clock) and on any memcached error.
//
// A stream that outlives the lease's TTL (streams have no whole-answer
// deadline) lets the waiters go upstream at the TTL.

// Leases is what coalescing across replicas needs of the store every
// replica shares (cache.Memcached).
type Leases interface {
	// Add stores value under key for ttl only if key is absent, and
	// returns cache.ErrNotStored if it is present.
	Add(key string, value []byte, ttl time.Duration) error
	// Delete removes key; a missing key is not an error.
	Delete(key string) error
	// Get returns the value under key, or an error (a miss: see
	// Options.IsMiss).
	Get(key string) ([]byte, error)
}

var _ Leases = (*cache.Memcached)(nil)

const (
	leasePollFirst = 20 * time.Millisecond
	leasePollMax   = 200 * time.Millisecond
	// leaseClock is memcached's expiry granularity: an item outlives its
	// TTL by up to a second.
	leaseClock = time.Second
	// leaseMargin: a holder that took longer than its lease's TTL less
	// this leaves the lease to expire rather than delete it, since by then
	// another replica may hold it.
	leaseMargin = 500 * time.Millisecond
)

// Results of switchyard_cache_leases_total{result}.
const (
	leaseTaken   = "taken"   // this replica took the lease and went upstream
	leaseHit     = "hit"     // waited, and served the entry another replica stored
	leaseGone    = "gone"    // waited; the lease was released or expired without an entry: went upstream
	leaseTimeout = "timeout" // waited the lease's TTL: went upstream
	leaseError   = "error"   // memcached failed: went upstream without waiting any further
)

var leaseResults = map[string]*metrics.Counter{
	leaseTaken:   metrics.NewCounter(`switchyard_cache_leases_total{result="taken"}`),
	leaseHit:     metrics.NewCounter(`switchyard_cache_leases_total{result="hit"}`),
	leaseGone:    metrics.NewCounter(`switchyard_cache_leases_total{result="gone"}`),
	leaseTimeout: metrics.NewCounter(`switchyard_cache_leases_total{result="timeout"}`),
	leaseError:   metrics.NewCounter(`switchyard_cache_leases_total{result="error"}`),
}

// lease is a lease a flight holds.
type lease struct {
	key   string
	until time.Time // its expiry
}

// leaseKey is the lease's key for an entry's key: a suffix no entry key
// or counter key has.
func leaseKey(key string) string { return key + ":lease" }

// leaseTTL is how long a lease lasts: the longest upstream timeout (a
// plain call's whole-answer deadline), in whole seconds, between one
// second and coalesceWait.
func leaseTTL(st *state) time.Duration {
	var ttl time.Duration
	for _, u := range st.upstreams {
		ttl = max(ttl, u.Timeout())
	}
	ttl = (ttl + time.Second - 1).Truncate(time.Second)
	return min(max(ttl, time.Second), coalesceWait)
}

// awaitLease runs for a flight's leader when leases are on: it takes the
// key's lease, or else waits for the replica holding it and answers with
// its entry (true), handing it to the flight's followers. false: the
// request goes upstream, holding the lease when it got it.
func (s *Server) awaitLease(ctx *fasthttp.RequestCtx, c *call, fl *flight) bool {
	lk := leaseKey(c.key)
	ttl := leaseTTL(c.st)
	taken := time.Now()
	err := s.leases.Add(lk, []byte(c.rid), ttl)
	switch {
	case err == nil:
		fl.lease = lease{key: lk, until: taken.Add(ttl)}
		leaseResults[leaseTaken].Inc()
		return false
	case !errors.Is(err, cache.ErrNotStored):
		leaseResults[leaseError].Inc()
		s.log.Debug("cache lease", "err", err)
		return false
	}
	raw, result := s.pollLease(c.key, lk, taken.Add(ttl+leaseClock))
	leaseResults[result].Inc()
	if result != leaseHit || !s.serveEntry(ctx, c, raw, cacheHit) {
		return false
	}
	s.finishFlight(c, raw)
	return true
}

// pollLease waits, until deadline, for the entry under key to appear or
// the lease lk to go. It returns the entry and leaseHit, or the reason it
// stopped.
func (s *Server) pollLease(key, lk string, deadline time.Time) ([]byte, string) {
	delay := leasePollFirst
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		<-t.C
		raw, err := s.leases.Get(key)
		switch {
		case err == nil:
			return raw, leaseHit
		case !s.isMiss(err):
			return nil, leaseError
		}
		if _, err := s.leases.Get(lk); err != nil {
			if !s.isMiss(err) {
				return nil, leaseError
			}
			// Released: a holder stores its entry before it releases.
			if raw, err := s.leases.Get(key); err == nil {
				return raw, leaseHit
			}
			return nil, leaseGone
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, leaseTimeout
		}
		delay = min(delay*3/2, leasePollMax)
		t.Reset(min(delay, left))
	}
}

// held reports whether a lease is one to release: taken, and not (nearly)
// expired, when another replica may hold the key by now.
func (l lease) held() bool { return l.key != "" && time.Until(l.until) >= leaseMargin }

// releaseLease deletes a lease its holder is done with.
func (s *Server) releaseLease(l lease) {
	if !l.held() {
		return
	}
	if err := s.leases.Delete(l.key); err != nil {
		leaseResults[leaseError].Inc()
		s.log.Debug("cache lease release", "err", err)
	}
}
