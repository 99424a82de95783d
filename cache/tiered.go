package cache

import (
	"errors"
	"time"
)

// FarStore is what a [Tiered] needs of the shared store behind its near
// cache: [Memcached] in production, a fake in tests. Get returns ErrMiss
// for an absent key; Set returns ErrTooLarge for a value it refuses by
// size.
type FarStore interface {
	Get(key string) ([]byte, error)
	Set(key string, value []byte, ttl time.Duration) error
}

var _ FarStore = (*Memcached)(nil)

// Tiered is a two-tier cache: a small in-process LRU, the near cache, in
// front of a store shared by every replica, the far store (memcached). A
// hit in the near cache costs no network round trip; a miss there asks the
// far store and keeps what it answers in the near cache. It is safe for
// concurrent use.
//
// Staleness: the near cache keeps an entry for at most nearTTL, and never
// asks memcached again meanwhile. So an answer can be served for up to
// nearTTL after memcached dropped it (expiry, eviction, flush_all, a
// restart) or another replica stored a newer answer under the same key.
// Entries stored with a TTL shorter than nearTTL keep that TTL in the
// near cache too.
//
// Tiered holds only answers (Get and Set). Quota counters (Incr, Value)
// stay on memcached alone, so that every replica shares one count.
//
// The near cache reports to the switchyard_cache_near_* metrics, never to
// the embedded cache's switchyard_cache_bytes, _items, _evictions_total or
// _oversize_total.
type Tiered struct {
	near    *Embedded
	far     FarStore
	nearTTL time.Duration
}

// NewTiered returns a Tiered in front of far whose near cache holds at most
// nearMaxBytes bytes (split over 16 shards like an [Embedded]: an entry
// larger than nearMaxBytes/16 is only kept in far) and keeps each entry at
// most nearTTL. A nearTTL <= 0 is a programmer error (config validation
// rejects it) and panics.
func NewTiered(far FarStore, nearMaxBytes int64, nearTTL time.Duration) *Tiered {
	if nearTTL <= 0 {
		panic("BUG: cache.NewTiered: nearTTL must be positive")
	}
	return &Tiered{
		near:    newEmbedded(nearMaxBytes, embeddedShards, &nearSeries),
		far:     far,
		nearTTL: nearTTL,
	}
}

// Get returns the value stored under key: from the near cache if it holds
// it, else from the far store, whose answer is then kept in the near cache
// for nearTTL (a value too large for the near cache is only returned). The
// far store's error is returned unchanged: ErrMiss for a miss, anything
// else for a failure.
//
// A value from the near cache aliases its stored copy: callers must not
// modify it (see [Embedded.Get]).
func (t *Tiered) Get(key string) ([]byte, error) {
	if v, err := t.near.Get(key); err == nil {
		nearHitsTotal.Inc()
		return v, nil
	}
	nearMissesTotal.Inc()
	v, err := t.far.Get(key)
	if err != nil {
		return nil, err
	}
	_ = t.near.Set(key, v, t.nearTTL) // only ErrTooLarge: far still has it
	return v, nil
}

// Set stores value under key in the far store for ttl (ttl <= 0: no
// expiry), then in the near cache for the shorter of ttl and nearTTL.
//
// If the far store fails, the near copy is still stored (this replica keeps
// answering it for nearTTL while memcached is down) and the far error is
// returned. If the far store refuses the value as too large, the near
// cache is left alone and ErrTooLarge is returned: the near cache never
// holds what memcached would not. A value the near cache alone refuses by
// size is only in the far store, and Set returns nil.
func (t *Tiered) Set(key string, value []byte, ttl time.Duration) error {
	err := t.far.Set(key, value, ttl)
	if errors.Is(err, ErrTooLarge) {
		return err
	}
	nearTTL := t.nearTTL
	if ttl > 0 && ttl < nearTTL {
		nearTTL = ttl
	}
	_ = t.near.Set(key, value, nearTTL) // only ErrTooLarge, counted by the near cache
	return err
}
