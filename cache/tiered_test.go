package cache

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeFar is a FarStore whose behaviour is its function fields.
type fakeFar struct {
	GetFunc func(key string) ([]byte, error)
	SetFunc func(key string, value []byte, ttl time.Duration) error
}

var _ FarStore = (*fakeFar)(nil)

func (f *fakeFar) Get(key string) ([]byte, error) { return f.GetFunc(key) }

func (f *fakeFar) Set(key string, value []byte, ttl time.Duration) error {
	return f.SetFunc(key, value, ttl)
}

// errFarDown is what farMap answers while it is down, shaped like a
// Memcached error.
var errFarDown = errors.New("memcached get: dial tcp 127.0.0.1:11211: connect: connection refused")

// farMap is a memcached stand-in: a map that never expires anything by
// itself (tests drop entries explicitly, as memcached's expiry, eviction or
// flush_all would), can be down, and refuses values over limit bytes.
type farMap struct {
	mu    sync.Mutex
	m     map[string][]byte
	ttl   map[string]time.Duration // the ttl each key was last stored with
	down  bool
	limit int
	gets  int // Get calls that reached it
}

func newFarMap(limit int) *farMap {
	return &farMap{m: map[string][]byte{}, ttl: map[string]time.Duration{}, limit: limit}
}

func (f *farMap) store() *fakeFar {
	return &fakeFar{
		GetFunc: func(key string) ([]byte, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.gets++
			if f.down {
				return nil, errFarDown
			}
			v, ok := f.m[key]
			if !ok {
				return nil, ErrMiss
			}
			return bytes.Clone(v), nil
		},
		SetFunc: func(key string, value []byte, ttl time.Duration) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(value) > f.limit {
				return ErrTooLarge
			}
			if f.down {
				return errFarDown
			}
			f.m[key], f.ttl[key] = bytes.Clone(value), ttl
			return nil
		},
	}
}

func (f *farMap) getCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets
}

func TestTiered(t *testing.T) {
	const (
		nearMax = 1 << 20 // 64 KiB per near shard
		nearTTL = 10 * time.Second
		farMax  = 100 << 10
	)
	forNear := string(make([]byte, 70<<10)) // over a near shard's share, within farMax
	forNone := string(make([]byte, 200<<10))

	type op struct {
		advance time.Duration // clock step before the op
		do      string        // set, get, far-set (another replica stores), drop (memcached forgets), down, up
		key     string
		value   string        // set: the value; get: the value wanted
		ttl     time.Duration // set
		err     error         // set, get: the error wanted (errors.Is)
		from    string        // get: "near" or "far", where the answer (or error) came from
	}
	tests := []struct {
		name string
		ops  []op
	}{
		{"near hit after set", []op{
			{do: "set", key: "a", value: "1", ttl: time.Hour},
			{do: "get", key: "a", value: "1", from: "near"},
			{do: "get", key: "a", value: "1", from: "near"},
		}},
		{"far miss passes ErrMiss through", []op{
			{do: "get", key: "a", err: ErrMiss, from: "far"},
			{do: "get", key: "a", err: ErrMiss, from: "far"}, // a miss is not remembered
		}},
		{"far hit fills near", []op{
			{do: "far-set", key: "a", value: "1"},
			{do: "get", key: "a", value: "1", from: "far"},
			{do: "get", key: "a", value: "1", from: "near"},
		}},
		{"filled copy expires after near_ttl", []op{
			{do: "far-set", key: "a", value: "1"},
			{do: "get", key: "a", value: "1", from: "far"},
			{advance: nearTTL - time.Nanosecond, do: "get", key: "a", value: "1", from: "near"},
			{advance: time.Nanosecond, do: "get", key: "a", value: "1", from: "far"},
		}},
		{"served up to near_ttl after memcached dropped it, then a miss", []op{
			{do: "set", key: "a", value: "1", ttl: time.Hour},
			{do: "drop", key: "a"},
			{advance: nearTTL - time.Nanosecond, do: "get", key: "a", value: "1", from: "near"},
			{advance: time.Nanosecond, do: "get", key: "a", err: ErrMiss, from: "far"},
		}},
		{"another replica's newer answer shows after near_ttl", []op{
			{do: "set", key: "a", value: "1", ttl: time.Hour},
			{do: "far-set", key: "a", value: "2"},
			{do: "get", key: "a", value: "1", from: "near"},
			{advance: nearTTL, do: "get", key: "a", value: "2", from: "far"},
			{do: "get", key: "a", value: "2", from: "near"},
		}},
		{"no expiry: near keeps near_ttl", []op{
			{do: "set", key: "a", value: "1"},
			{advance: nearTTL - time.Nanosecond, do: "get", key: "a", value: "1", from: "near"},
			{advance: time.Nanosecond, do: "get", key: "a", value: "1", from: "far"},
		}},
		{"ttl shorter than near_ttl is kept in near", []op{
			{do: "set", key: "a", value: "1", ttl: 2 * time.Second},
			{advance: 2*time.Second - time.Nanosecond, do: "get", key: "a", value: "1", from: "near"},
			{advance: time.Nanosecond, do: "get", key: "a", value: "1", from: "far"}, // farMap never expires
		}},
		{"overwrite replaces the near copy", []op{
			{do: "set", key: "a", value: "1", ttl: time.Hour},
			{do: "set", key: "a", value: "2", ttl: time.Hour},
			{do: "get", key: "a", value: "2", from: "near"},
		}},
		{"far down: near still answers what was set, then the far error", []op{
			{do: "down"},
			{do: "set", key: "a", value: "1", ttl: time.Hour, err: errFarDown},
			{do: "get", key: "a", value: "1", from: "near"},
			{advance: nearTTL, do: "get", key: "a", err: errFarDown, from: "far"},
		}},
		{"far down: entries cached before the outage answer from near", []op{
			{do: "far-set", key: "a", value: "1"},
			{do: "get", key: "a", value: "1", from: "far"},
			{do: "down"},
			{do: "get", key: "a", value: "1", from: "near"},
			{do: "get", key: "b", err: errFarDown, from: "far"},
			{do: "up"},
			{do: "get", key: "b", err: ErrMiss, from: "far"},
		}},
		{"too large for near: stored in far, served from far each time", []op{
			{do: "set", key: "big", value: forNear, ttl: time.Hour},
			{do: "get", key: "big", value: forNear, from: "far"},
			{do: "get", key: "big", value: forNear, from: "far"},
		}},
		{"too large for far: ErrTooLarge, stored nowhere", []op{
			{do: "set", key: "huge", value: forNone, ttl: time.Hour, err: ErrTooLarge},
			{do: "get", key: "huge", err: ErrMiss, from: "far"},
		}},
		{"too large for far while down: still ErrTooLarge, nothing near", []op{
			{do: "down"},
			{do: "set", key: "huge", value: forNone, ttl: time.Hour, err: ErrTooLarge},
			{do: "get", key: "huge", err: errFarDown, from: "far"},
		}},
		{"far refusing a newer value keeps the older one in both tiers", []op{
			{do: "set", key: "a", value: "1", ttl: time.Hour},
			{do: "set", key: "a", value: forNone, ttl: time.Hour, err: ErrTooLarge},
			{do: "get", key: "a", value: "1", from: "near"},
			{advance: nearTTL, do: "get", key: "a", value: "1", from: "far"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			far := newFarMap(farMax)
			c := NewTiered(far.store(), nearMax, nearTTL)
			c.near.now = clock.Now
			for i, o := range tt.ops {
				clock.Advance(o.advance)
				switch o.do {
				case "set":
					err := c.Set(o.key, []byte(o.value), o.ttl)
					if !errors.Is(err, o.err) || (o.err == nil && err != nil) {
						t.Fatalf("op %d: Set(%q) = %v, want %v", i, o.key, err, o.err)
					}
					if got, ok := far.ttl[o.key]; err == nil && (!ok || got != o.ttl) {
						t.Fatalf("op %d: far stored %q with ttl %v (present %v), want %v", i, o.key, got, ok, o.ttl)
					}
				case "get":
					gets, hits, misses := far.getCalls(), nearHitsTotal.Get(), nearMissesTotal.Get()
					got, err := c.Get(o.key)
					if o.err != nil && !errors.Is(err, o.err) {
						t.Fatalf("op %d: Get(%q) = %d bytes, %v; want %v", i, o.key, len(got), err, o.err)
					}
					if o.err == nil && (err != nil || string(got) != o.value) {
						t.Fatalf("op %d: Get(%q) = %.20q (%d bytes), %v; want %.20q", i, o.key, got, len(got), err, o.value)
					}
					from := "near"
					if far.getCalls() > gets {
						from = "far"
					}
					if from != o.from {
						t.Fatalf("op %d: Get(%q) answered from %s, want %s", i, o.key, from, o.from)
					}
					wantHits, wantMisses := uint64(1), uint64(0)
					if from == "far" {
						wantHits, wantMisses = 0, 1
					}
					if dh, dm := nearHitsTotal.Get()-hits, nearMissesTotal.Get()-misses; dh != wantHits || dm != wantMisses {
						t.Fatalf("op %d: near hits/misses counted +%d/+%d, want +%d/+%d", i, dh, dm, wantHits, wantMisses)
					}
				case "far-set":
					far.m[o.key] = []byte(o.value)
				case "drop":
					delete(far.m, o.key)
				case "down", "up":
					far.down = o.do == "down"
				default:
					t.Fatalf("op %d: unknown op %q", i, o.do)
				}
			}
			checkInvariants(t, c.near)
		})
	}
}

// TestTieredNearMetrics: the near cache reports its size, evictions and
// refusals under switchyard_cache_near_*, and leaves the embedded cache's
// series alone.
func TestTieredNearMetrics(t *testing.T) {
	far := newFarMap(1 << 20)
	c := NewTiered(far.store(), 1<<20, time.Minute) // 64 KiB per shard
	bytes0, items0, evictions0, oversize0 := embeddedBytes.Load(), embeddedItems.Load(), evictionsTotal.Get(), oversizeTotal.Get()
	nearBytes0, nearItems0, nearEvictions0, nearOversize0 := nearBytes.Load(), nearItems.Load(), nearEvictionsTotal.Get(), nearOversizeTotal.Get()

	// 40 KiB values: each shard holds one, so 40 of them evict at least 24.
	for i := range 40 {
		if err := c.Set("k"+strconv.Itoa(i), make([]byte, 40<<10), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Set("big", make([]byte, 70<<10), time.Hour); err != nil { // too large for a near shard
		t.Fatal(err)
	}

	if d := nearBytes.Load() - nearBytes0; d != c.near.Bytes() || d == 0 {
		t.Errorf("switchyard_cache_near_bytes moved %d, near cache holds %d", d, c.near.Bytes())
	}
	if d := nearItems.Load() - nearItems0; d != int64(c.near.Len()) || d == 0 {
		t.Errorf("switchyard_cache_near_items moved %d, near cache holds %d", d, c.near.Len())
	}
	if d := nearEvictionsTotal.Get() - nearEvictions0; d != uint64(40-c.near.Len()) || d < 24 {
		t.Errorf("switchyard_cache_near_evictions_total moved %d, want %d (40 stored, %d kept)", d, 40-c.near.Len(), c.near.Len())
	}
	if d := nearOversizeTotal.Get() - nearOversize0; d != 1 {
		t.Errorf("switchyard_cache_near_oversize_total moved %d, want 1", d)
	}
	if embeddedBytes.Load() != bytes0 || embeddedItems.Load() != items0 || evictionsTotal.Get() != evictions0 || oversizeTotal.Get() != oversize0 {
		t.Errorf("embedded series moved: bytes %+d, items %+d, evictions %+d, oversize %+d",
			embeddedBytes.Load()-bytes0, embeddedItems.Load()-items0, evictionsTotal.Get()-evictions0, oversizeTotal.Get()-oversize0)
	}
	checkInvariants(t, c.near)
}

// TestTieredConcurrent runs Sets and Gets on few keys from many goroutines
// (for the race detector): every answer is one that was stored.
func TestTieredConcurrent(t *testing.T) {
	far := newFarMap(1 << 20)
	c := NewTiered(far.store(), 1<<20, time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				key := "k" + strconv.Itoa(i%7)
				if (i+g)%3 == 0 {
					if err := c.Set(key, []byte("v-"+key), time.Hour); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				v, err := c.Get(key)
				if err != nil && !errors.Is(err, ErrMiss) {
					t.Error(err)
					return
				}
				if err == nil && string(v) != "v-"+key {
					t.Errorf("Get(%q) = %q", key, v)
					return
				}
			}
		}()
	}
	wg.Wait()
	checkInvariants(t, c.near)
}

func TestNewTieredRejectsNonPositiveTTL(t *testing.T) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewTiered with nearTTL %v did not panic", ttl)
				}
			}()
			NewTiered(newFarMap(1).store(), 1<<20, ttl)
		}()
	}
}
