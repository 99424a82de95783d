package cache

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Embedded.now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// size is what Embedded charges for an entry.
func size(key, value string) int64 { return int64(len(key) + len(value) + entryOverhead) }

// checkInvariants verifies that every shard's map, list and byte count
// agree, and that the instance totals are their sums.
func checkInvariants(t *testing.T, e *Embedded) {
	t.Helper()
	var bytes int64
	var items int
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		var sb int64
		n := 0
		for ent := s.head.next; ent != &s.head; ent = ent.next {
			if ent.next.prev != ent {
				t.Fatalf("shard %d: broken links at %q", i, ent.key)
			}
			if s.m[ent.key] != ent {
				t.Fatalf("shard %d: list entry %q not in map", i, ent.key)
			}
			if ent.size != size(ent.key, string(ent.value)) {
				t.Fatalf("shard %d: entry %q charged %d, want %d", i, ent.key, ent.size, size(ent.key, string(ent.value)))
			}
			sb += ent.size
			n++
		}
		if n != len(s.m) {
			t.Fatalf("shard %d: list has %d entries, map %d", i, n, len(s.m))
		}
		if sb != s.bytes {
			t.Fatalf("shard %d: bytes %d, entries sum to %d", i, s.bytes, sb)
		}
		if s.bytes > e.shardMax {
			t.Fatalf("shard %d: bytes %d over budget %d", i, s.bytes, e.shardMax)
		}
		s.mu.Unlock()
		bytes += sb
		items += n
	}
	if e.Bytes() != bytes || e.Len() != items {
		t.Fatalf("Bytes/Len = %d/%d, shards hold %d/%d", e.Bytes(), e.Len(), bytes, items)
	}
}

func TestEmbeddedGetSet(t *testing.T) {
	type op struct {
		advance time.Duration // clock step before the op
		set     bool          // Set (else Get)
		key     string
		value   string // value to set, or want from Get
		ttl     time.Duration
		miss    bool // Get wants ErrMiss
	}
	tests := []struct {
		name string
		ops  []op
	}{
		{"miss on empty", []op{{key: "a", miss: true}}},
		{"set then get", []op{{set: true, key: "a", value: "1"}, {key: "a", value: "1"}, {key: "b", miss: true}}},
		{"empty value is a hit", []op{{set: true, key: "a", value: ""}, {key: "a", value: ""}}},
		{"overwrite", []op{{set: true, key: "a", value: "1"}, {set: true, key: "a", value: "22"}, {key: "a", value: "22"}}},
		{"ttl alive just before expiry", []op{{set: true, key: "a", value: "1", ttl: time.Minute}, {advance: time.Minute - time.Nanosecond, key: "a", value: "1"}}},
		{"ttl expired at deadline", []op{{set: true, key: "a", value: "1", ttl: time.Minute}, {advance: time.Minute, key: "a", miss: true}}},
		{"zero ttl never expires", []op{{set: true, key: "a", value: "1"}, {advance: 100 * 365 * 24 * time.Hour, key: "a", value: "1"}}},
		{"negative ttl never expires", []op{{set: true, key: "a", value: "1", ttl: -time.Second}, {advance: time.Hour, key: "a", value: "1"}}},
		{"overwrite resets ttl", []op{
			{set: true, key: "a", value: "1", ttl: time.Second},
			{advance: 900 * time.Millisecond, set: true, key: "a", value: "2", ttl: time.Second},
			{advance: 900 * time.Millisecond, key: "a", value: "2"},
			{advance: 100 * time.Millisecond, key: "a", miss: true},
		}},
		{"overwrite of expired", []op{
			{set: true, key: "a", value: "1", ttl: time.Second},
			{advance: 2 * time.Second, set: true, key: "a", value: "2"},
			{key: "a", value: "2"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			e := NewEmbedded(1 << 20)
			e.now = clock.Now
			for i, o := range tt.ops {
				clock.Advance(o.advance)
				if o.set {
					if err := e.Set(o.key, []byte(o.value), o.ttl); err != nil {
						t.Fatalf("op %d: Set(%q): %v", i, o.key, err)
					}
					continue
				}
				got, err := e.Get(o.key)
				switch {
				case o.miss && !errors.Is(err, ErrMiss):
					t.Fatalf("op %d: Get(%q) = %q, %v; want ErrMiss", i, o.key, got, err)
				case !o.miss && (err != nil || string(got) != o.value):
					t.Fatalf("op %d: Get(%q) = %q, %v; want %q", i, o.key, got, err, o.value)
				}
			}
			checkInvariants(t, e)
		})
	}
}

func TestEmbeddedSetCopiesValue(t *testing.T) {
	e := NewEmbedded(1 << 20)
	v := []byte("hello")
	if err := e.Set("k", v, 0); err != nil {
		t.Fatal(err)
	}
	v[0] = 'J'
	got, _ := e.Get("k")
	if string(got) != "hello" {
		t.Fatalf("stored value changed with the caller's slice: %q", got)
	}
	// A slice returned by Get stays intact when the entry is replaced.
	if err := e.Set("k", []byte("world"), 0); err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello" {
		t.Fatalf("earlier Get result changed after overwrite: %q", got)
	}
}

func TestEmbeddedLRUEviction(t *testing.T) {
	// One shard with room for exactly three 10-byte entries.
	one := size("k1", "vvvvvvvv")
	e := newEmbedded(3*one, 1, &embeddedSeries)
	evicted := evictionsTotal.Get()
	set := func(k string) {
		t.Helper()
		if err := e.Set(k, []byte("vvvvvvvv"), 0); err != nil {
			t.Fatalf("Set(%q): %v", k, err)
		}
	}
	has := func(keys ...string) {
		t.Helper()
		for _, k := range []string{"k1", "k2", "k3", "k4", "k5"} {
			_, err := e.Get(k)
			want := false
			for _, w := range keys {
				want = want || w == k
			}
			if (err == nil) != want {
				t.Fatalf("Get(%q) err=%v, want present=%v (want %v)", k, err, want, keys)
			}
		}
	}
	set("k1")
	set("k2")
	set("k3")
	if e.Bytes() != 3*one || e.Len() != 3 {
		t.Fatalf("Bytes/Len = %d/%d, want %d/3", e.Bytes(), e.Len(), 3*one)
	}
	// Touch k1 so k2 is the least recently used.
	if _, err := e.Get("k1"); err != nil {
		t.Fatal(err)
	}
	set("k4") // evicts k2
	if _, err := e.Get("k2"); !errors.Is(err, ErrMiss) {
		t.Fatalf("k2 should have been evicted, got %v", err)
	}
	// Order is now (most recent first) k4, k1, k3: Get refreshes in the
	// order we read, so read them explicitly: k3, then k1, then k4.
	for _, k := range []string{"k3", "k1", "k4"} {
		if _, err := e.Get(k); err != nil {
			t.Fatalf("Get(%q): %v", k, err)
		}
	}
	set("k5") // evicts k3, the least recently read
	has("k1", "k4", "k5")
	if got := evictionsTotal.Get() - evicted; got != 2 {
		t.Fatalf("evictions counted %d, want 2", got)
	}
	checkInvariants(t, e)

	// A bigger entry evicts as many as needed.
	if err := e.Set("big", make([]byte, 2*one-size("big", "")), 0); err != nil {
		t.Fatal(err)
	}
	if e.Len() != 2 || e.Bytes() != 3*one {
		t.Fatalf("after big Set: Len/Bytes = %d/%d, want 2/%d", e.Len(), e.Bytes(), 3*one)
	}
	has("k5") // k1 and k4 were the two least recent (has() refreshed in k1..k5 order)
	checkInvariants(t, e)
}

func TestEmbeddedBytesAccounting(t *testing.T) {
	clock := newFakeClock()
	e := newEmbedded(1000, 1, &embeddedSeries)
	e.now = clock.Now
	globalBytes, globalItems := embeddedBytes.Load(), embeddedItems.Load()
	steps := []struct {
		do        func() error
		wantBytes int64
		wantLen   int
	}{
		{func() error { return e.Set("a", make([]byte, 100), 0) }, size("a", "") + 100, 1},
		{func() error { return e.Set("b", make([]byte, 50), time.Second) }, 2*size("a", "") + 150, 2},
		{func() error { return e.Set("a", make([]byte, 10), 0) }, 2*size("a", "") + 60, 2},   // overwrite smaller
		{func() error { return e.Set("b", make([]byte, 300), 0) }, 2*size("a", "") + 310, 2}, // overwrite bigger
		{func() error { return e.Set("c", make([]byte, 500), 0) }, 2*size("a", "") + 800, 2}, // evicts a (LRU)
		{func() error { _, err := e.Get("a"); return ignoreMiss(err) }, 2*size("a", "") + 800, 2},
		{func() error { return e.Set("d", nil, time.Second) }, 2*size("a", "") + 500, 2}, // 3 won't fit: evicts b
		{func() error { clock.Advance(time.Second); _, err := e.Get("d"); return ignoreMiss(err) }, size("c", "") + 500, 1},
		{func() error { return e.Set("c", make([]byte, 2000), 0) }, 0, 0}, // too large: old c dropped
	}
	for i, s := range steps {
		err := s.do()
		if err != nil && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("step %d: %v", i, err)
		}
		if e.Bytes() != s.wantBytes || e.Len() != s.wantLen {
			t.Fatalf("step %d: Bytes/Len = %d/%d, want %d/%d", i, e.Bytes(), e.Len(), s.wantBytes, s.wantLen)
		}
		if d := embeddedBytes.Load() - globalBytes; d != e.Bytes() {
			t.Fatalf("step %d: global bytes gauge moved %d, instance holds %d", i, d, e.Bytes())
		}
		if d := embeddedItems.Load() - globalItems; d != int64(e.Len()) {
			t.Fatalf("step %d: global items gauge moved %d, instance holds %d", i, d, e.Len())
		}
		checkInvariants(t, e)
	}
}

func ignoreMiss(err error) error {
	if errors.Is(err, ErrMiss) {
		return nil
	}
	return err
}

func TestEmbeddedTooLarge(t *testing.T) {
	e := NewEmbedded(16 * 1000) // 1000 bytes per shard
	over := oversizeTotal.Get()
	fits := make([]byte, 1000-entryOverhead-len("k"))
	if err := e.Set("k", fits, 0); err != nil {
		t.Fatalf("entry of exactly a shard's budget: %v", err)
	}
	if err := e.Set("k", append(fits, 'x'), 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("entry one byte over a shard's budget: err = %v, want ErrTooLarge", err)
	}
	if _, err := e.Get("k"); !errors.Is(err, ErrMiss) {
		t.Fatalf("refused overwrite should drop the old value, Get err = %v", err)
	}
	if got := oversizeTotal.Get() - over; got != 1 {
		t.Fatalf("oversize counted %d, want 1", got)
	}
	if err := NewEmbedded(0).Set("k", nil, 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("zero-budget cache: err = %v, want ErrTooLarge", err)
	}
	checkInvariants(t, e)
}

func TestEmbeddedShardedBudget(t *testing.T) {
	const maxBytes = 64 << 10
	e := NewEmbedded(maxBytes)
	for i := range 5000 {
		if err := e.Set("key-"+strconv.Itoa(i), make([]byte, i%300), 0); err != nil {
			t.Fatal(err)
		}
		if e.Bytes() > maxBytes {
			t.Fatalf("after %d sets Bytes = %d > %d", i+1, e.Bytes(), maxBytes)
		}
	}
	// Recent keys survive; the budget is actually used.
	if _, err := e.Get("key-4999"); err != nil {
		t.Fatalf("most recent key: %v", err)
	}
	if e.Bytes() < maxBytes*3/4 {
		t.Fatalf("Bytes = %d, budget %d barely used", e.Bytes(), maxBytes)
	}
	checkInvariants(t, e)
}

func TestEmbeddedConcurrent(t *testing.T) {
	e := NewEmbedded(256 << 10)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 3000 {
				k := fmt.Sprintf("k%d", (i*7+g)%500)
				switch i % 4 {
				case 0, 1:
					if v, err := e.Get(k); err == nil && len(v) > 0 && v[0] != k[1] {
						t.Errorf("Get(%q) returned another key's value %q", k, v[:1])
						return
					}
				case 2:
					v := make([]byte, (i%40)*20+1)
					v[0] = k[1]
					if err := e.Set(k, v, time.Duration(i%3)*time.Millisecond); err != nil {
						t.Error(err)
						return
					}
				case 3:
					if _, err := e.Incr("ctr", 1, time.Time{}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	checkInvariants(t, e)
	if v, _ := e.Value("ctr"); v != 8*750 {
		t.Fatalf("counter = %d, want %d", v, 8*750)
	}
}

func TestEmbeddedCounters(t *testing.T) {
	clock := newFakeClock()
	e := newEmbedded(4*size("x", "y"), 1, &embeddedSeries)
	e.now = clock.Now

	if v, err := e.Value("c"); v != 0 || err != nil {
		t.Fatalf("Value of missing counter = %d, %v; want 0, nil", v, err)
	}
	exp := clock.Now().Add(time.Minute)
	for i, want := range []uint64{5, 6, 16} {
		delta := []uint64{5, 1, 10}[i]
		if v, err := e.Incr("c", delta, exp); v != want || err != nil {
			t.Fatalf("Incr #%d = %d, %v; want %d", i, v, err, want)
		}
	}
	// Later Incr calls do not move the expiry.
	if _, err := e.Incr("c", 1, exp.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Counters are not LRU entries: filling the LRU evicts none of them.
	for i := range 20 {
		_ = e.Set(string(rune('a'+i)), []byte("y"), 0)
	}
	if e.Len() != 4 {
		t.Fatalf("LRU Len = %d, want 4 (counters must not count)", e.Len())
	}
	if v, _ := e.Value("c"); v != 17 {
		t.Fatalf("Value = %d, want 17", v)
	}
	clock.Advance(time.Minute)
	if v, _ := e.Value("c"); v != 0 {
		t.Fatalf("Value after expiry = %d, want 0", v)
	}
	if v, _ := e.Incr("c", 2, clock.Now().Add(time.Minute)); v != 2 {
		t.Fatalf("Incr after expiry = %d, want a fresh counter at 2", v)
	}
	// The zero expireAt never expires; wrap-around matches memcached.
	if v, _ := e.Incr("forever", ^uint64(0), time.Time{}); v != ^uint64(0) {
		t.Fatalf("Incr = %d", v)
	}
	clock.Advance(1000 * 24 * time.Hour)
	if v, _ := e.Incr("forever", 2, time.Time{}); v != 1 {
		t.Fatalf("Incr wrap = %d, want 1", v)
	}
}

func TestEmbeddedCounterSweep(t *testing.T) {
	clock := newFakeClock()
	e := NewEmbedded(1 << 20)
	e.now = clock.Now
	for i := range minCounterSweep {
		_, _ = e.Incr("old"+strconv.Itoa(i), 1, clock.Now().Add(time.Second))
	}
	clock.Advance(time.Second)
	_, _ = e.Incr("new", 1, time.Time{}) // map is at the sweep threshold: expired ones go
	e.cmu.Lock()
	n := len(e.counters)
	e.cmu.Unlock()
	if n != 1 {
		t.Fatalf("%d counters after sweep, want 1", n)
	}
}

func BenchmarkEmbeddedGetParallel(b *testing.B) {
	e := NewEmbedded(64 << 20)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("switchyard:v1:%064x", i)
		_ = e.Set(keys[i], make([]byte, 2048), time.Hour)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_, _ = e.Get(keys[i%len(keys)])
			i++
		}
	})
}

func ExampleEmbedded() {
	c := NewEmbedded(64 << 20)
	entry := EncodeEntry(nil, Entry{Body: []byte(`{"object":"chat.completion"}`), ContentType: "application/json", StoredAt: time.Unix(1732627200, 0)})
	_ = c.Set("switchyard:v1:9f2c", entry, time.Hour)
	b, err := c.Get("switchyard:v1:9f2c")
	if err != nil {
		return // ErrMiss: ask an upstream
	}
	e, _ := DecodeEntry(b)
	fmt.Println(e.ContentType, string(e.Body), e.StoredAt.UTC().Format(time.RFC3339))
	n, _ := c.Incr("quota:groq:2024-11-26", 42, time.Unix(1732665600, 0))
	fmt.Println(n)
	// Output:
	// application/json {"object":"chat.completion"} 2024-11-26T13:20:00Z
	// 42
}
