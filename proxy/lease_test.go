package proxy

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"switchyard/cache"
	"switchyard/config"
	"switchyard/upstream"
)

// fakeLeases is a Leases with function fields; nil ones act as a map.
type fakeLeases struct {
	mu      sync.Mutex
	m       map[string][]byte
	gets    int
	touches int
	GetFunc func(key string) ([]byte, error)
}

func (f *fakeLeases) Touch(key string, ttl time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.m[key]; !ok {
		return cache.ErrNotStored
	}
	f.touches++
	return nil
}

func (f *fakeLeases) Add(key string, value []byte, ttl time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.m[key]; ok {
		return cache.ErrNotStored
	}
	f.m[key] = value
	return nil
}

func (f *fakeLeases) Delete(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, key)
	return nil
}

func (f *fakeLeases) Get(key string) ([]byte, error) {
	f.mu.Lock()
	f.gets++
	get := f.GetFunc
	v, ok := f.m[key]
	f.mu.Unlock()
	if get != nil {
		return get(key)
	}
	if !ok {
		return nil, cache.ErrMiss
	}
	return v, nil
}

func (f *fakeLeases) set(key string, v []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[key] = v
}

func leaseServer(l Leases) *Server {
	return &Server{leases: l, isMiss: func(err error) bool { return errors.Is(err, cache.ErrMiss) }, log: slog.New(slog.DiscardHandler)}
}

func TestPollLease(t *testing.T) {
	const key = "ns:v1:abc"
	lk := leaseKey(key)
	errDown := errors.New("memcached get: connection refused")
	for _, tc := range []struct {
		name   string
		during func(f *fakeLeases) // after the wait started
		get    func(key string) ([]byte, error)
		wait   time.Duration // the deadline
		want   string
		entry  bool
	}{
		{name: "the holder stores its entry", during: func(f *fakeLeases) { f.set(key, []byte("entry")) },
			wait: 5 * time.Second, want: leaseHit, entry: true},
		{name: "the holder stores, then releases", during: func(f *fakeLeases) { f.set(key, []byte("entry")); _ = f.Delete(lk) },
			wait: 5 * time.Second, want: leaseHit, entry: true},
		{name: "the holder releases without an entry", during: func(f *fakeLeases) { _ = f.Delete(lk) },
			wait: 5 * time.Second, want: leaseGone},
		{name: "the lease outlives the wait", during: func(*fakeLeases) {}, wait: 300 * time.Millisecond, want: leaseTimeout},
		{name: "memcached fails", get: func(string) ([]byte, error) { return nil, errDown }, wait: 5 * time.Second, want: leaseError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeLeases{m: map[string][]byte{lk: []byte("holder")}, GetFunc: tc.get}
			s := leaseServer(f)
			if tc.during != nil {
				time.AfterFunc(100*time.Millisecond, func() { tc.during(f) })
			}
			start := time.Now()
			raw, got := s.pollLease(key, lk, start.Add(tc.wait))
			took := time.Since(start)
			if got != tc.want || (raw != nil) != tc.entry {
				t.Fatalf("pollLease: %q entry=%q, want %q (entry %v)", got, raw, tc.want, tc.entry)
			}
			// The change happens at 100ms, polls are at most 200ms apart:
			// noticed long before the 5s deadline.
			if tc.want != leaseTimeout && tc.want != leaseError && took > 2*time.Second {
				t.Errorf("noticed after %v", took)
			}
			if tc.want == leaseTimeout && (took < tc.wait || took > tc.wait+2*time.Second) {
				t.Errorf("gave up after %v, want the deadline %v", took, tc.wait)
			}
			f.mu.Lock()
			gets := f.gets
			f.mu.Unlock()
			// 20ms, then 1.5 times longer, at most 200ms: a few polls of
			// two gets each, not a busy loop.
			if gets > 2*(int(took/leasePollFirst)+1) || (took > time.Second && gets > 30) {
				t.Errorf("%d gets in %v", gets, took)
			}
		})
	}
}

func TestLeaseTTL(t *testing.T) {
	for _, tc := range []struct {
		timeouts []time.Duration
		want     time.Duration
	}{
		{[]time.Duration{60 * time.Second}, 60 * time.Second},
		{[]time.Duration{5 * time.Second, 30 * time.Second, 10 * time.Second}, 30 * time.Second},
		{[]time.Duration{1500 * time.Millisecond}, 2 * time.Second}, // memcached counts whole seconds: rounded up
		{[]time.Duration{100 * time.Millisecond}, time.Second},
		{[]time.Duration{10 * time.Minute}, coalesceWait}, // no wait is longer than coalescing's
	} {
		st := &state{}
		for i, d := range tc.timeouts {
			u, err := upstream.New(config.Upstream{Name: "u" + string(rune('a'+i)), Provider: "openai", BaseURL: "http://127.0.0.1:1/v1", APIKey: "k", Timeout: d})
			if err != nil {
				t.Fatal(err)
			}
			st.upstreams = append(st.upstreams, u)
		}
		if got := leaseTTL(st); got != tc.want {
			t.Errorf("timeouts %v: lease TTL %v, want %v", tc.timeouts, got, tc.want)
		}
	}
}

func TestLeaseHeld(t *testing.T) {
	until := func(d time.Duration) *atomic.Int64 {
		v := new(atomic.Int64)
		v.Store(time.Now().Add(d).UnixNano())
		return v
	}
	for _, tc := range []struct {
		name string
		l    lease
		want bool
	}{
		{"none", lease{}, false},
		{"fresh", lease{key: "k:lease", until: until(10 * time.Second)}, true},
		{"nearly expired: another replica may hold it", lease{key: "k:lease", until: until(100 * time.Millisecond)}, false},
		{"expired", lease{key: "k:lease", until: until(-time.Second)}, false},
	} {
		if got := tc.l.held(); got != tc.want {
			t.Errorf("%s: held %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestKeepLease: a lease is renewed every half TTL while its flight runs,
// which keeps it held past its first TTL; renewals stop when the flight
// ends, and when the lease is found gone.
func TestKeepLease(t *testing.T) {
	const lk = "ns:v1:abc:lease"
	f := &fakeLeases{m: map[string][]byte{lk: []byte("holder")}}
	s := leaseServer(f)
	done := make(chan struct{})
	start := time.Now()
	l := s.keepLease(lk, 200*time.Millisecond, start, done)
	time.Sleep(700 * time.Millisecond) // three half-TTLs and more
	f.mu.Lock()
	touches := f.touches
	f.mu.Unlock()
	if until := time.Unix(0, l.until.Load()); touches < 3 || !until.After(start.Add(400*time.Millisecond)) {
		t.Fatalf("after 700ms: %d renewals, expiry %v after the start; want >= 3, pushed on", touches, until.Sub(start))
	}
	close(done)
	time.Sleep(300 * time.Millisecond)
	f.mu.Lock()
	after := f.touches
	f.mu.Unlock()
	if after > touches+1 {
		t.Errorf("renewed %d times after the flight ended", after-touches)
	}
	s.releaseLease(l)

	// Gone (expired, or memcached lost it): the renewals stop.
	f2 := &fakeLeases{m: map[string][]byte{}}
	s2 := leaseServer(f2)
	l2 := s2.keepLease(lk, 2*time.Second, time.Now(), make(chan struct{}))
	if !l2.held() {
		t.Fatal("a fresh 2 s lease is not held")
	}
	time.Sleep(1500 * time.Millisecond) // one renewal, at 1 s
	if f2.touches != 0 {
		t.Errorf("a missing lease was renewed %d times", f2.touches)
	}
	// Found gone: no longer held, so not deleted (another replica may
	// hold the key by now).
	if l2.held() {
		t.Error("a lease found gone is still held")
	}
	f2.set(lk, []byte("another replica"))
	s2.releaseLease(l2)
	if got, err := f2.Get(lk); err != nil || string(got) != "another replica" {
		t.Errorf("releasing a lost lease deleted another replica's: %q, %v", got, err)
	}
}
