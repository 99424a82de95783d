package integration

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"
)

// nearYAML is memcachedYAML with the near cache set: maxBytes 0 turns it
// off (every hit is a memcached round trip).
func nearYAML(addr string, maxBytes int64, ttl time.Duration) string {
	return memcachedYAML(addr) + fmt.Sprintf("  near_max_bytes: %d\n  near_ttl: %s\n", maxBytes, ttl)
}

// memcachedRoundTripYAML is memcachedYAML with the near cache off, for
// tests about what the proxy does on each memcached round trip.
func memcachedRoundTripYAML(addr string) string { return nearYAML(addr, 0, time.Second) }

// flushMemcached sends flush_all, which makes memcached forget every item.
func flushMemcached(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("flush_all\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "OK\r\n" {
		t.Fatalf("flush_all: %q, %v", line, err)
	}
}

// TestNearCacheOutlivesMemcached: with the near cache on, an answer stays a
// hit after memcached forgot it (flush_all) or died, until near_ttl has
// passed; with near_max_bytes: 0 the same sequence goes to the upstream.
func TestNearCacheOutlivesMemcached(t *testing.T) {
	const nearTTL = 3 * time.Second
	cases := []struct {
		name     string
		near     bool
		memcache func(m *memcachedProc, t *testing.T) // what happens to memcached after the answer is cached
	}{
		{"near cache, memcached flushed", true, func(m *memcachedProc, t *testing.T) { flushMemcached(t, m.Addr()) }},
		{"near cache, memcached stopped", true, func(m *memcachedProc, t *testing.T) { m.Stop() }},
		{"no near cache, memcached flushed", false, func(m *memcachedProc, t *testing.T) { flushMemcached(t, m.Addr()) }},
		{"no near cache, memcached stopped", false, func(m *memcachedProc, t *testing.T) { m.Stop() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := startMemcached(t)
			up := newFake(t, okJSON("near"))
			top := memcachedRoundTripYAML(m.Addr())
			if tc.near {
				top = nearYAML(m.Addr(), 16<<20, nearTTL)
			}
			p := startProxy(t, testConfig(top, upstreamYAML("one", up.BaseURL(), "k", 1, "")))
			body := `{"model":"m","messages":[{"role":"user","content":"near"}]}`
			sent := time.Now() // the near copy is younger than this
			first := readAll(t, post(t, p.URL, body))
			waitHit(t, p.URL, body)
			cached := time.Now() // and about as old as this
			hits0 := scrape(t, p.Admin, "switchyard_cache_near_hits_total")

			tc.memcache(m, t)
			r := post(t, p.URL, body)
			b := readAll(t, r)
			if elapsed := time.Since(sent); tc.near && elapsed >= nearTTL {
				t.Fatalf("the repeat came %v after the first request, past near_ttl %v: the machine is too slow for this test", elapsed, nearTTL)
			}
			want, wantCalls := "HIT", 1
			if !tc.near {
				want, wantCalls = "MISS", 2
			}
			if r.StatusCode != 200 || r.Header.Get("X-Cache") != want {
				t.Fatalf("after memcached lost the answer: status %d X-Cache %q, want 200 %s: %s", r.StatusCode, r.Header.Get("X-Cache"), want, b)
			}
			if tc.near && string(b) != string(first) {
				t.Errorf("near-cache hit differs from the first answer:\n%s\n%s", b, first)
			}
			if up.Calls() != wantCalls {
				t.Errorf("upstream calls %d, want %d", up.Calls(), wantCalls)
			}
			nearHits := scrape(t, p.Admin, "switchyard_cache_near_hits_total") - hits0
			if tc.near != (nearHits > 0) {
				t.Errorf("switchyard_cache_near_hits_total moved %v with the near cache on=%v", nearHits, tc.near)
			}
			if !tc.near {
				return
			}

			// near_ttl bounds the staleness: once it has passed, the
			// answer is gone (only-if-cached: 504, never the upstream).
			deadline := cached.Add(nearTTL + 5*time.Second) // 5s of slack for a slow machine
			for {
				r := post(t, p.URL, body, "Cache-Control", "only-if-cached")
				b := readAll(t, r)
				if r.StatusCode == 504 {
					if since := time.Since(sent); since < nearTTL {
						t.Errorf("near copy gone %v after the first request, before near_ttl %v", since, nearTTL)
					}
					break
				}
				if r.StatusCode != 200 || r.Header.Get("X-Cache") != "HIT" {
					t.Fatalf("only-if-cached: status %d X-Cache %q: %s", r.StatusCode, r.Header.Get("X-Cache"), b)
				}
				if time.Now().After(deadline) {
					t.Fatalf("still a hit %v after caching, near_ttl %v", time.Since(cached), nearTTL)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if up.Calls() != 1 {
				t.Errorf("upstream calls %d, want 1", up.Calls())
			}
		})
	}
}

// TestNearCacheQuotaStaysShared: with the near cache on, quota counters
// still live in memcached, so two replicas count one quota.
func TestNearCacheQuotaStaysShared(t *testing.T) {
	m := startMemcached(t)
	up := newFake(t, okJSON("q"))
	cfg := testConfig(nearYAML(m.Addr(), 16<<20, 10*time.Second),
		upstreamYAML("one", up.BaseURL(), "k", 1, "    quota: {limit: 1000, unit: requests, period: day}\n"))
	a, b := startProxy(t, cfg), startProxy(t, cfg)
	for i := range 3 {
		readAll(t, post(t, a.URL, fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"a%d"}]}`, i)))
	}
	obsEventually(t, func() []string {
		st, _ := obsFetchStatus(t, a.Admin)
		if u := st.upstream("one"); u == nil || u.Quota.Used != 3 {
			return []string{fmt.Sprintf("replica a's quota: %+v, want used 3", u)}
		}
		return nil
	})
	r := post(t, b.URL, `{"model":"m","messages":[{"role":"user","content":"b0"}]}`)
	if body := readAll(t, r); r.StatusCode != 200 {
		t.Fatalf("replica b: status %d: %s", r.StatusCode, body)
	}
	obsEventually(t, func() []string {
		st, _ := obsFetchStatus(t, b.Admin)
		u := st.upstream("one")
		if u == nil || u.Quota.Used != 4 {
			return []string{fmt.Sprintf("replica b's quota: %+v, want used 4 (3 from a, 1 from b)", u)}
		}
		return nil
	})
}
