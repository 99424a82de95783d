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
	var v uint64
	err := m.do(key, func(c *memcache.Client) error {
		var err error
		for range m.maxIncrs {
			v, err = c.Increment(key, delta)
			if !errors.Is(err, memcache.ErrCacheMiss) {
				return err
			}
			exp := int32(0)
			if !expireAt.IsZero() {
				now := m.now()
				exp = expiration(max(expireAt.Sub(now), time.Second), now)
			}
			err = c.Add(&memcache.Item{Key: key, Value: strconv.AppendUint(nil, delta, 10), Expiration: exp})
			if err == nil {
				v = delta
				return nil
			}
			if !errors.Is(err, memcache.ErrNotStored) {
				return err
			}
			// Another client created it between our Increment and Add:
			// increment theirs.
		}
		return err
	})
	if err != nil {
		memcachedIncrErrors.Inc()
		return 0, fmt.Errorf("memcached incr: %w", err)
	}
	return v, nil
}

// Value returns the current value of the counter key, or 0 if it is
// missing. Errors are wrapped as "memcached get: ...".
func (m *Memcached) Value(key string) (uint64, error) {
	b, err := m.Get(key)
	if errors.Is(err, ErrMiss) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	// memcached pads a value that shrank in place with trailing spaces.
	v, err := strconv.ParseUint(string(bytes.TrimRight(b, " ")), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memcached get: counter %q: %w", key, err)
	}
	return v, nil
}
