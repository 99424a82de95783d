package cache

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Incr adds delta to the counter key and returns the new value. A missing
// counter is created with value delta, expiring at expireAt (the zero time
// means never; an expireAt less than a second away counts as one second
// away); the expiry of an existing counter is not changed. Values wrap
// around at 2^64 (memcached's incr). Concurrent Incr calls from any number
// of clients are counted exactly. Errors are wrapped as
// "memcached incr: ...".
func (m *Memcached) Incr(key string, delta uint64, expireAt time.Time) (uint64, error) {
	return m.IncrFrom(key, delta, 0, expireAt)
}

// IncrFrom is Incr for a counter that may have been lost (a memcached
// restart, an eviction): a missing counter is created with value
// seed+delta rather than delta, so a caller that knew the count can carry
// it over. When several clients find it missing at once, the first add
// wins and the others increment the value it created: every delta is
// counted once, and the seed of one client is used. Errors are wrapped as
// "memcached incr: ...".
func (m *Memcached) IncrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error) {
	return m.counterOp(key, false, delta, seed+delta, expireAt)
}

// DecrFrom subtracts delta from the counter key and returns the new
// value; memcached floors it at 0. A missing counter is created with
// value seed−delta (at least 0), expiring at expireAt, as IncrFrom does.
// Errors are wrapped as "memcached decr: ..." and counted as
// switchyard_cache_errors_total{op="incr"} (one series for counter
// updates).
func (m *Memcached) DecrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error) {
	created := uint64(0)
	if seed > delta {
		created = seed - delta
	}
	return m.counterOp(key, true, delta, created, expireAt)
}

// counterOp runs memcached's incr or decr on key, creating the counter
// with value created when it is missing (the increment/add dance, at most
// maxIncrs rounds when other clients race to create it).
// A pooled connection that a restarted memcached closed costs no failed
// update: do retries the whole dance once on a fresh connection.
func (m *Memcached) counterOp(key string, decr bool, delta, created uint64, expireAt time.Time) (uint64, error) {
	verb := "incr"
	if decr {
		verb = "decr"
	}
	var v uint64
	err := m.do(key, func(c *memcache.Client) error {
		update := func() error {
			var err error
			if decr {
				v, err = c.Decrement(key, delta)
			} else {
				v, err = c.Increment(key, delta)
			}
			return err
		}
		var err error
		for range m.maxIncrs {
			err = update()
			if !errors.Is(err, memcache.ErrCacheMiss) {
				return err
			}
			exp := int32(0)
			if !expireAt.IsZero() {
				now := m.now()
				exp = expiration(max(expireAt.Sub(now), time.Second), now)
			}
			item := &memcache.Item{Key: key, Value: strconv.AppendUint(nil, created, 10), Expiration: exp}
			err = c.Add(item)
			if err == nil {
				v = created
				return nil
			}
			if !errors.Is(err, memcache.ErrNotStored) {
				return err
			}
			// Another client created it between our update and add:
			// update theirs.
		}
		return err
	})
	if err != nil {
		memcachedIncrErrors.Inc()
		return 0, fmt.Errorf("memcached %s: %w", verb, err)
	}
	return v, nil
}

// Value returns the current value of the counter key, or 0 if it is
// missing. Errors are wrapped as "memcached get: ...".
func (m *Memcached) Value(key string) (uint64, error) {
	v, _, err := m.Lookup(key)
	return v, err
}

// Lookup returns the current value of the counter key and whether it
// exists: a counter that is missing (never created, expired, or lost in
// a memcached restart) reads 0, false. Like the updates, it retries once
// on a fresh connection when a pooled one had been closed by a restarted
// server. Errors are wrapped as "memcached get: ...".
func (m *Memcached) Lookup(key string) (uint64, bool, error) {
	b, err := m.Fetch(key)
	if errors.Is(err, ErrMiss) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	// memcached pads a value that shrank in place with trailing spaces.
	v, err := strconv.ParseUint(string(bytes.TrimRight(b, " ")), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("memcached get: counter %q: %w", key, err)
	}
	return v, true, nil
}

// Fetch is Get, for small shared state (the quota policy's rate-limit
// views). Like every operation, it runs once more on a fresh connection
// when a pooled one had been closed by a restarted server (see do), so a
// background reader does not spend the breaker's failures on dead
// connections.
func (m *Memcached) Fetch(key string) ([]byte, error) { return m.Get(key) }

// Put is Set for small shared state, except that a value over
// MaxItemBytes is refused with ErrTooLarge without counting it as an
// oversize answer.
func (m *Memcached) Put(key string, value []byte, ttl time.Duration) error {
	if len(key)+len(value)+memcachedItemOverhead > m.maxItem {
		return ErrTooLarge
	}
	return m.Set(key, value, ttl)
}
