package cache

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// embeddedShards is the number of independently locked LRU shards of
	// an Embedded made by NewEmbedded.
	embeddedShards = 16
	// entryOverhead is the bytes charged per LRU entry on top of its key
	// and value: the entry struct, its map slot and list links.
	entryOverhead = 96
	// minCounterSweep is the counter-map size below which expired counters
	// are only dropped when touched.
	minCounterSweep = 1024
)

// Embedded is an in-process LRU cache bounded by bytes, with a TTL per
// entry, plus a map of expiring counters. It is safe for concurrent use.
//
// Keys are spread over 16 shards by hash, each with its own lock, LRU list
// and an equal share of the byte budget, so the whole cache never holds
// more than maxBytes. An entry is charged len(key)+len(value)+96 bytes.
// Expired entries are dropped lazily: when a Get finds them, or when
// eviction reaches them at the cold end of the list.
//
// The zero value is not usable; call NewEmbedded.
type Embedded struct {
	// now is the clock; tests replace it before first use.
	now func() time.Time
	// series receives the size, eviction and oversize metrics.
	series *lruSeries

	seed     maphash.Seed
	shards   []shard
	shardMax int64 // byte budget of each shard

	bytes atomic.Int64 // sum of shard bytes
	items atomic.Int64 // sum of shard entries

	cmu      sync.Mutex
	counters map[string]counter
	sweepAt  int // counter-map size that triggers the next sweep of expired counters
}

type shard struct {
	mu    sync.Mutex
	m     map[string]*lruEntry
	head  lruEntry // sentinel: head.next is the most recently used, head.prev the least
	bytes int64
	_     [64]byte // keep neighbouring shards' locks off one cache line
}

type lruEntry struct {
	key        string
	value      []byte
	expires    int64 // UnixNano; 0 means never
	size       int64
	prev, next *lruEntry
}

type counter struct {
	value   uint64
	expires int64 // UnixNano; 0 means never
}

// NewEmbedded returns an empty Embedded that holds at most maxBytes bytes
// of entries (keys, values and per-entry overhead). Each of its 16 shards
// gets maxBytes/16, which is also the largest entry it accepts; with
// maxBytes below 16*(96+1) nothing can be stored and every Set returns
// ErrTooLarge.
//
// It reports to the switchyard_cache_bytes, _items, _evictions_total and
// _oversize_total metrics.
func NewEmbedded(maxBytes int64) *Embedded {
	return newEmbedded(maxBytes, embeddedShards, &embeddedSeries)
}

func newEmbedded(maxBytes int64, nshards int, series *lruSeries) *Embedded {
	e := &Embedded{
		now:      time.Now,
		series:   series,
		seed:     maphash.MakeSeed(),
		shards:   make([]shard, nshards),
		shardMax: max(maxBytes, 0) / int64(nshards),
		counters: make(map[string]counter),
		sweepAt:  minCounterSweep,
	}
	for i := range e.shards {
		s := &e.shards[i]
		s.m = make(map[string]*lruEntry)
		s.head.next, s.head.prev = &s.head, &s.head
	}
	return e
}

func (e *Embedded) shard(key string) *shard {
	if len(e.shards) == 1 {
		return &e.shards[0]
	}
	return &e.shards[maphash.String(e.seed, key)%uint64(len(e.shards))]
}

// Get returns the value stored under key, or ErrMiss if there is none or
// it has expired. A hit marks the entry as most recently used.
//
// The returned slice aliases the cached copy (no copy is made): callers
// must not modify it. It stays valid after the entry is overwritten or
// evicted, because Set never reuses a stored slice.
func (e *Embedded) Get(key string) ([]byte, error) {
	s := e.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	ent, ok := s.m[key]
	if !ok {
		return nil, ErrMiss
	}
	if ent.expires != 0 && e.now().UnixNano() >= ent.expires {
		e.remove(s, ent)
		return nil, ErrMiss
	}
	if s.head.next != ent {
		unlink(ent)
		pushFront(s, ent)
	}
	return ent.value, nil
}

// Set stores a copy of value under key, replacing any previous value, for
// ttl (ttl <= 0 means no expiry; the entry then leaves only by eviction).
// Least recently used entries of the key's shard are evicted until the new
// one fits. An entry larger than a shard's budget is refused with
// ErrTooLarge, and any previous value under key is dropped.
func (e *Embedded) Set(key string, value []byte, ttl time.Duration) error {
	size := int64(len(key)) + int64(len(value)) + entryOverhead
	s := e.shard(key)
	if size > e.shardMax {
		e.series.oversize.Inc()
		s.mu.Lock()
		if old, ok := s.m[key]; ok {
			e.remove(s, old)
		}
		s.mu.Unlock()
		return ErrTooLarge
	}
	var expires int64
	if ttl > 0 {
		expires = unixNano(e.now().Add(ttl))
	}
	ent := &lruEntry{
		key:     strings.Clone(key), // the caller's key may alias a request buffer
		value:   make([]byte, len(value)),
		expires: expires,
		size:    size,
	}
	copy(ent.value, value)

	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[key]; ok {
		e.remove(s, old)
	}
	for s.bytes+size > e.shardMax {
		e.remove(s, s.head.prev)
		e.series.evictions.Inc()
	}
	s.m[ent.key] = ent
	pushFront(s, ent)
	s.bytes += size
	e.bytes.Add(size)
	e.items.Add(1)
	e.series.bytes.Add(size)
	e.series.items.Add(1)
	return nil
}

// Bytes returns the bytes currently charged to entries (keys, values and
// per-entry overhead), including expired entries not yet dropped.
func (e *Embedded) Bytes() int64 { return e.bytes.Load() }

// Len returns the number of entries, including expired entries not yet
// dropped. Counters are not included.
func (e *Embedded) Len() int { return int(e.items.Load()) }

// remove drops ent from s. s.mu must be held.
func (e *Embedded) remove(s *shard, ent *lruEntry) {
	unlink(ent)
	delete(s.m, ent.key)
	s.bytes -= ent.size
	e.bytes.Add(-ent.size)
	e.items.Add(-1)
	e.series.bytes.Add(-ent.size)
	e.series.items.Add(-1)
}

func unlink(ent *lruEntry) {
	ent.prev.next = ent.next
	ent.next.prev = ent.prev
	ent.prev, ent.next = nil, nil
}

func pushFront(s *shard, ent *lruEntry) {
	ent.prev = &s.head
	ent.next = s.head.next
	s.head.next.prev = ent
	s.head.next = ent
}

// unixNano is t.UnixNano clamped to the int64 range (UnixNano is undefined
// after the year 2262); the far future maps to "never expires".
func unixNano(t time.Time) int64 {
	if t.Year() >= 2262 {
		return 0
	}
	if t.Year() < 1678 {
		return 1 // long expired
	}
	return t.UnixNano()
}

// Incr adds delta to the counter key and returns the new value. A missing
// or expired counter is created with value delta, expiring at expireAt
// (the zero time means never); the expiry of an existing counter is not
// changed. Values wrap around at 2^64 like memcached's incr. Counters are
// kept apart from the LRU and are never evicted; expired ones are dropped
// when touched or by an occasional sweep. The error is always nil.
func (e *Embedded) Incr(key string, delta uint64, expireAt time.Time) (uint64, error) {
	return e.IncrFrom(key, delta, 0, expireAt)
}

// IncrFrom is Incr, except that a missing or expired counter is created
// with value seed+delta (see Memcached.IncrFrom). The error is always nil.
func (e *Embedded) IncrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error) {
	return e.update(key, func(v uint64) uint64 { return v + delta }, seed+delta, expireAt), nil
}

// DecrFrom subtracts delta from the counter key, flooring at 0 like
// memcached's decr, and returns the new value. A missing or expired
// counter is created with value seed−delta (at least 0), expiring at
// expireAt. The error is always nil.
func (e *Embedded) DecrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error) {
	floor := func(v uint64) uint64 {
		if v < delta {
			return 0
		}
		return v - delta
	}
	return e.update(key, floor, floor(seed), expireAt), nil
}

// update sets the counter key to next(value) when it exists, else creates
// it with value created and expiry expireAt, and returns the new value.
func (e *Embedded) update(key string, next func(uint64) uint64, created uint64, expireAt time.Time) uint64 {
	now := e.now().UnixNano()
	e.cmu.Lock()
	defer e.cmu.Unlock()
	if c, ok := e.counters[key]; ok && (c.expires == 0 || now < c.expires) {
		c.value = next(c.value)
		e.counters[key] = c
		return c.value
	}
	if len(e.counters) >= e.sweepAt {
		for k, c := range e.counters {
			if c.expires != 0 && now >= c.expires {
				delete(e.counters, k)
			}
		}
		e.sweepAt = max(2*len(e.counters), minCounterSweep)
	}
	var expires int64
	if !expireAt.IsZero() {
		expires = unixNano(expireAt)
	}
	e.counters[strings.Clone(key)] = counter{value: created, expires: expires}
	return created
}

// Value returns the current value of the counter key, or 0 if it is
// missing or expired. The error is always nil.
func (e *Embedded) Value(key string) (uint64, error) {
	v, _, err := e.Lookup(key)
	return v, err
}

// Lookup returns the current value of the counter key and whether it
// exists (0, false when it is missing or expired). The error is always
// nil.
func (e *Embedded) Lookup(key string) (uint64, bool, error) {
	now := e.now().UnixNano()
	e.cmu.Lock()
	defer e.cmu.Unlock()
	c, ok := e.counters[key]
	if !ok {
		return 0, false, nil
	}
	if c.expires != 0 && now >= c.expires {
		delete(e.counters, key)
		return 0, false, nil
	}
	return c.value, true, nil
}
