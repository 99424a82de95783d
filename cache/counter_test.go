package cache

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// counterStore is what the quota policy needs of a counter; Embedded and
// Memcached both are one.
type counterStore interface {
	IncrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error)
	DecrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error)
	Lookup(key string) (uint64, bool, error)
}

var (
	_ counterStore = (*Embedded)(nil)
	_ counterStore = (*Memcached)(nil)
)

// TestCounterOps runs one table against the embedded counters and real
// memcached: seeds apply only to a missing counter, decr floors at 0.
func TestCounterOps(t *testing.T) {
	type step struct {
		op          string // incr, decr, lookup
		delta, seed uint64
		want        uint64
		wantFound   bool // lookup
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"incr creates with seed+delta", []step{{"lookup", 0, 0, 0, false}, {"incr", 1, 60, 61, false}, {"lookup", 0, 0, 61, true}}},
		{"seed ignored once it exists", []step{{"incr", 5, 0, 5, false}, {"incr", 2, 1000, 7, false}, {"decr", 3, 1000, 4, false}}},
		{"decr creates with seed-delta", []step{{"decr", 1, 60, 59, false}, {"lookup", 0, 0, 59, true}}},
		{"decr of a missing counter below its seed floors at 0", []step{{"decr", 10, 3, 0, false}, {"lookup", 0, 0, 0, true}, {"incr", 2, 50, 2, false}}},
		{"decr floors at 0", []step{{"incr", 3, 0, 3, false}, {"decr", 5, 0, 0, false}, {"incr", 1, 0, 1, false}}},
		{"incr by 0 re-creates from the seed", []step{{"incr", 0, 42, 42, false}, {"incr", 0, 7, 42, false}}},
	}
	srv := startMemcached(t)
	stores := []struct {
		name string
		c    counterStore
	}{
		{"embedded", NewEmbedded(1 << 20)},
		{"memcached", newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}})},
	}
	exp := time.Now().Add(time.Hour)
	for _, st := range stores {
		for i, tt := range tests {
			t.Run(st.name+"/"+tt.name, func(t *testing.T) {
				key := "test:counter:" + st.name + ":" + string(rune('a'+i))
				for j, s := range tt.steps {
					var v uint64
					var found bool
					var err error
					switch s.op {
					case "incr":
						v, err = st.c.IncrFrom(key, s.delta, s.seed, exp)
					case "decr":
						v, err = st.c.DecrFrom(key, s.delta, s.seed, exp)
					case "lookup":
						v, found, err = st.c.Lookup(key)
					}
					if err != nil || v != s.want || (s.op == "lookup" && found != s.wantFound) {
						t.Fatalf("step %d %s(%d, seed %d) = %d found=%v err=%v; want %d found=%v",
							j, s.op, s.delta, s.seed, v, found, err, s.want, s.wantFound)
					}
				}
			})
		}
	}
}

// TestMemcachedCounterSurvivesRestart: after memcached restarts, the
// client's pooled connections are dead; the next update must not fail on
// them (nor count toward the breaker), and re-creates the counter from the
// caller's seed.
func TestMemcachedCounterSurvivesRestart(t *testing.T) {
	srv := startMemcached(t)
	m := newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}, BreakerFailures: 2})
	exp := time.Now().Add(time.Hour)
	// Fill the pool with several idle connections.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if _, err := m.IncrFrom("q", 1, 0, exp); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if v, _, err := m.Lookup("q"); v != 160 || err != nil {
		t.Fatalf("before the restart: %d, %v", v, err)
	}
	srv.stop()
	srv.start()
	for i, want := range []uint64{161, 162, 163} {
		v, err := m.IncrFrom("q", 1, 160, exp)
		if err != nil || v != want {
			t.Fatalf("incr #%d after the restart = %d, %v; want %d", i, v, err, want)
		}
	}
	if !m.shards[0].breaker.IsClosed() {
		t.Fatalf("breaker %v after the restart, want closed", m.shards[0].breaker.State())
	}
	// Reads and decrements get past dead connections too.
	srv.stop()
	srv.start()
	if v, found, err := m.Lookup("q"); err != nil || found || v != 0 {
		t.Fatalf("Lookup after a second restart = %d, %v, %v; want missing", v, found, err)
	}
	srv.stop()
	srv.start()
	if v, err := m.DecrFrom("q", 1, 163, exp); err != nil || v != 162 {
		t.Fatalf("DecrFrom after a third restart = %d, %v; want 162", v, err)
	}
	// So do Fetch and Put, for the shared rate-limit views.
	if err := m.Put("view", []byte(`{"d":1}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.stop()
	srv.start()
	if b, err := m.Fetch("view"); !errors.Is(err, ErrMiss) {
		t.Fatalf("Fetch after a restart = %q, %v; want ErrMiss", b, err)
	}
	srv.stop()
	srv.start()
	if err := m.Put("view", []byte(`{"d":2}`), time.Minute); err != nil {
		t.Fatalf("Put after a restart: %v", err)
	}
	if b, err := m.Fetch("view"); err != nil || string(b) != `{"d":2}` {
		t.Fatalf("Fetch = %q, %v", b, err)
	}
	if !m.shards[0].breaker.IsClosed() {
		t.Fatalf("breaker %v after the restarts, want closed", m.shards[0].breaker.State())
	}
}

// TestMemcachedCounterRacingSeeds: clients that find the counter missing
// at once agree on one seed and count every delta once.
func TestMemcachedCounterRacingSeeds(t *testing.T) {
	srv := startMemcached(t)
	exp := time.Now().Add(time.Hour)
	clients := []*Memcached{
		newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}}),
		newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}}),
		newTestMemcached(t, MemcachedOptions{Servers: []string{srv.addr()}}),
	}
	var wg sync.WaitGroup
	for i, m := range clients {
		seed := uint64(100 + i) // each replica knew a slightly different count
		for range 10 {
			wg.Go(func() {
				if _, err := m.IncrFrom("race", 1, seed, exp); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	v, _, err := clients[0].Lookup("race")
	if err != nil || v < 130 || v > 132 {
		t.Fatalf("counter = %d, %v; want one seed (100-102) plus 30", v, err)
	}
}
