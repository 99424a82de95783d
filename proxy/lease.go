package proxy

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"switchyard/cache"
)

// Coalescing across replicas. In-process coalescing (flights) makes one
// upstream call per key per replica; with memcached shared by several
// replicas, the first replica to miss on a key also takes a lease on it,
// a memcached add of "<key>:lease" that expires after about the upstream
// timeout. Its holder renews it (touch) every half TTL while its call is
// in flight, so a long call or stream keeps it, and a holder that dies
// loses it within one TTL. Another replica's flight leader that finds the
// lease taken polls memcached for the entry (20 ms, then 1.5 times longer
// each time, at most 200 ms apart) and serves it as a HIT (it is read
// from the shared cache); its own in-process followers get it as
// COALESCED. It stops waiting as soon as the lease is gone: its holder
// released it without an entry (an error, an answer not cached) or died
// and it expired. It then goes upstream itself, without taking the lease
// again: the holder's failure has already cost the waiters one wait, a
// second leader would double it, and the calls stay bounded by one per
// replica. A waiter also stops after coalesceWait, as an in-process
// follower does, and on any memcached error.

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
	// Touch sets key's expiry to ttl from now, and returns
	// cache.ErrNotStored if key is absent.
	Touch(key string, ttl time.Duration) error
}

var _ Leases = (*cache.Memcached)(nil)

const (
	leasePollFirst = 20 * time.Millisecond
	leasePollMax   = 200 * time.Millisecond
	// leaseClock is memcached's expiry granularity: an item stored for n
	// seconds lives between n-1 and n seconds.
	leaseClock = time.Second
	// leaseMargin: a holder that took longer than its lease's TTL less
	// this leaves the lease to expire rather than delete it, since by then
	// another replica may hold it.
	leaseMargin = 500 * time.Millisecond
)

// Results of switchyard_cache_leases_total{result}.
const (
	leaseTaken   = "taken"   // this replica took the lease and went upstream
	leaseRenewed = "renewed" // its holder renewed it, its call still in flight
	leaseHit     = "hit"     // waited, and served the entry another replica stored
	leaseGone    = "gone"    // waited; the lease was released or expired without an entry: went upstream
	leaseTimeout = "timeout" // waited coalesceWait, the lease still held: went upstream
	leaseError   = "error"   // memcached failed: went upstream without waiting any further
)

var leaseResults = map[string]*metrics.Counter{
	leaseTaken:   metrics.NewCounter(`switchyard_cache_leases_total{result="taken"}`),
	leaseRenewed: metrics.NewCounter(`switchyard_cache_leases_total{result="renewed"}`),
	leaseHit:     metrics.NewCounter(`switchyard_cache_leases_total{result="hit"}`),
	leaseGone:    metrics.NewCounter(`switchyard_cache_leases_total{result="gone"}`),
	leaseTimeout: metrics.NewCounter(`switchyard_cache_leases_total{result="timeout"}`),
	leaseError:   metrics.NewCounter(`switchyard_cache_leases_total{result="error"}`),
}

// lease is a lease a flight holds.
type lease struct {
	key   string
	until *atomic.Int64               // its expiry (Unix ns), pushed on by each renewal
	renew *atomic.Pointer[time.Timer] // the next renewal
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
	// memcached counts whole seconds from its own clock's last tick: an
	// item stored for n seconds lives between n-1 and n. One second more
	// makes the lease last at least its TTL, so that renewals every half
	// TTL always find it.
	err := s.leases.Add(lk, []byte(c.rid), ttl+leaseClock)
	switch {
	case err == nil:
		fl.lease = s.keepLease(lk, ttl, taken, fl.done)
		leaseResults[leaseTaken].Inc()
		return false
	case !errors.Is(err, cache.ErrNotStored):
		leaseResults[leaseError].Inc()
		s.log.Debug("cache lease", "err", err)
		return false
	}
	raw, result := s.pollLease(c.key, lk, taken.Add(coalesceWait))
	leaseResults[result].Inc()
	if result != leaseHit || !s.serveEntry(ctx, c, raw, cacheHit) {
		// This replica calls the upstream after all: its followers, who
		// have waited as long, wait for that call afresh.
		close(fl.calling)
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

// keepLease returns the lease lk, taken at taken for ttl, and renews it
// every ttl/2 until done is closed (the flight ended), it is released, or
// maxStreamDuration has passed (a flight that never ends must not hold
// the key forever). A renewal that finds it gone (it expired while
// memcached was slow, or memcached lost it) stops renewing, and the lease
// is no longer held: another replica may hold the key by now, so it is
// not deleted either. A renewal that fails is tried again at the next
// tick.
func (s *Server) keepLease(lk string, ttl time.Duration, taken time.Time, done <-chan struct{}) lease {
	l := lease{key: lk, until: new(atomic.Int64), renew: new(atomic.Pointer[time.Timer])}
	l.until.Store(taken.Add(ttl).UnixNano())
	renew := func() {
		select {
		case <-done:
			return
		default:
		}
		at := time.Now()
		if at.Sub(taken) > maxStreamDuration {
			return
		}
		switch err := s.leases.Touch(lk, ttl+leaseClock); {
		case err == nil:
			leaseResults[leaseRenewed].Inc()
			l.until.Store(at.Add(ttl).UnixNano())
		case errors.Is(err, cache.ErrNotStored):
			l.until.Store(0)
			return
		default:
			leaseResults[leaseError].Inc()
			s.log.Debug("cache lease renewal", "err", err)
		}
		l.renew.Load().Reset(ttl / 2)
	}
	l.renew.Store(time.AfterFunc(ttl/2, renew))
	return l
}

// held reports whether a lease is one to release: taken, and not (nearly)
// expired, when another replica may hold the key by now.
func (l lease) held() bool {
	return l.key != "" && time.Until(time.Unix(0, l.until.Load())) >= leaseMargin
}

// releaseLease deletes a lease its holder is done with, and stops its
// renewals.
func (s *Server) releaseLease(l lease) {
	if l.renew != nil {
		l.renew.Load().Stop()
	}
	if !l.held() {
		return
	}
	if err := s.leases.Delete(l.key); err != nil {
		leaseResults[leaseError].Inc()
		s.log.Debug("cache lease release", "err", err)
	}
}
