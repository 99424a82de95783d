package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// memcachedStat returns one counter of memcached's "stats".
func memcachedStat(t *testing.T, addr, name string) int64 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("stats\r\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	found := int64(-1)
	for range 1000 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stats from %s: %v", addr, err)
		}
		if line == "END\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(line, "STAT "+name+" "); ok {
			if found, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
				t.Fatal(err)
			}
		}
	}
	if found < 0 {
		t.Fatalf("no %s in stats of %s", name, addr)
	}
	return found
}

// postHit sends a chat request and reports whether it was a cache hit;
// any status but 200 is an error. Unlike post, it is for goroutines.
func postHit(url, body string) (bool, error) {
	req, err := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, err
	}
	if resp.StatusCode != 200 {
		return false, fmt.Errorf("status %d: %.200s", resp.StatusCode, b)
	}
	return resp.Header.Get("X-Cache") == "HIT", nil
}

// clusterSample is one request of the steady load.
type clusterSample struct {
	at      time.Time
	body    int // index into the bodies
	replica int
	hit     bool
}

// hitRatio is the share of hits among the samples in [from, to) whose
// body satisfies keep, and how many samples that was.
func hitRatio(samples []clusterSample, from, to time.Time, keep func(body int) bool) (float64, int) {
	hits, n := 0, 0
	for _, s := range samples {
		if s.at.Before(from) || !s.at.Before(to) || !keep(s.body) {
			continue
		}
		n++
		if s.hit {
			hits++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(hits) / float64(n), n
}

// memcachedCluster is three replicas sharing two memcached servers (a and
// b) with the near cache off, and answers cached for bodies spread over
// both servers.
type memcachedCluster struct {
	a, b   *memcachedProc
	ps     []*proxyProc
	bodies []string
	onA    []bool // onA[i]: the answer to bodies[i] is on a
	nA     int
}

// startMemcachedCluster starts the cluster, caches an answer for each of
// n bodies and finds which server holds each: the one whose get_hits a
// hit moves.
func startMemcachedCluster(t *testing.T, n int) *memcachedCluster {
	t.Helper()
	c := &memcachedCluster{a: startMemcached(t), b: startMemcached(t)}
	up := newFake(t, okJSON("cluster"))
	cfg := testConfig(memcachedYAML(c.a.Addr(), c.b.Addr())+"  near_max_bytes: 0\n", upstreamYAML("one", up.BaseURL(), "k", 1, ""))
	c.ps = startReplicas(t, 3, cfg)
	c.bodies = make([]string, n)
	c.onA = make([]bool, n)
	for i := range c.bodies {
		c.bodies[i] = fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"cluster question %d"}]}`, i)
		readAll(t, post(t, c.ps[i%3].URL, c.bodies[i]))
		waitHit(t, c.ps[i%3].URL, c.bodies[i])
	}
	for i, body := range c.bodies {
		for try := 0; ; try++ {
			ha, hb := memcachedStat(t, c.a.Addr(), "get_hits"), memcachedStat(t, c.b.Addr(), "get_hits")
			waitHit(t, c.ps[(i+1)%3].URL, body)
			da, db := memcachedStat(t, c.a.Addr(), "get_hits")-ha, memcachedStat(t, c.b.Addr(), "get_hits")-hb
			if da+db == 1 {
				c.onA[i] = da == 1
				break
			}
			if try == 5 {
				t.Fatalf("body %d: a hit moved get_hits by %d on a and %d on b", i, da, db)
			}
		}
		if c.onA[i] {
			c.nA++
		}
	}
	if c.nA < 5 || n-c.nA < 5 {
		t.Fatalf("%d of %d answers on server a: want both servers to hold several", c.nA, n)
	}
	t.Logf("%d answers on a, %d on b", c.nA, n-c.nA)
	return c
}

// clusterLoad is a steady load on a memcachedCluster: one worker per
// replica, each cycling over all bodies.
type clusterLoad struct {
	mu      sync.Mutex
	samples []clusterSample
	stop    chan struct{}
	wg      sync.WaitGroup
}

// startLoad starts the load; it stops when Stop is called or the test ends.
func (c *memcachedCluster) startLoad(t *testing.T) *clusterLoad {
	l := &clusterLoad{stop: make(chan struct{})}
	for r, p := range c.ps {
		l.wg.Go(func() {
			for i := r; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				body := i % len(c.bodies)
				hit, err := postHit(p.URL, c.bodies[body])
				if err != nil {
					t.Errorf("replica %d, body %d: %v", r, body, err)
					return
				}
				l.mu.Lock()
				l.samples = append(l.samples, clusterSample{at: time.Now(), body: body, replica: r, hit: hit})
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	t.Cleanup(l.Stop)
	return l
}

// Stop stops the workers and waits for them. It is idempotent.
func (l *clusterLoad) Stop() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// Samples returns the requests so far.
func (l *clusterLoad) Samples() []clusterSample {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]clusterSample(nil), l.samples...)
}

// waitBackOnA waits (at most 15s) until every replica has had a hit on a
// key of server a after since, and returns when the last one did. (a
// restarted empty: a key is stored again by its first miss once the
// replica's breaker for a lets an operation through.)
func (c *memcachedCluster) waitBackOnA(t *testing.T, l *clusterLoad, since time.Time) time.Time {
	t.Helper()
	deadline := since.Add(15 * time.Second)
	for {
		var first [3]time.Time
		for _, s := range l.Samples() {
			if s.at.After(since) && c.onA[s.body] && s.hit && first[s.replica].IsZero() {
				first[s.replica] = s.at
			}
		}
		if !first[0].IsZero() && !first[1].IsZero() && !first[2].IsZero() {
			back := first[0]
			for _, f := range first[1:] {
				if f.After(back) {
					back = f
				}
			}
			return back
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys on server a not cached again by every replica within 15s (first hits per replica: %v)", first)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMemcachedClusterOneServerDown (issue 14): three replicas share two
// memcached servers with the near cache off, under a steady load of
// repeated requests over many keys. Killing one server leaves the keys on
// the other cached (one breaker per server, not one for the cluster), and
// once the server is back its keys are cached again within the cache
// breaker's probe delay (5s), plus a request or two to store them anew.
func TestMemcachedClusterOneServerDown(t *testing.T) {
	c := startMemcachedCluster(t, 40)
	l := c.startLoad(t)
	all := func(int) bool { return true }
	keysOnA := func(i int) bool { return c.onA[i] }
	keysOnB := func(i int) bool { return !c.onA[i] }

	start := time.Now()
	time.Sleep(time.Second)
	killed := time.Now()
	c.a.Stop()
	// Longer than the breaker delay, so that the restart falls at some
	// point of an open period of the replicas' breakers for a.
	const outage = 6 * time.Second
	time.Sleep(outage)
	c.a.Start()
	restarted := time.Now()
	back := c.waitBackOnA(t, l, restarted)
	time.Sleep(1500 * time.Millisecond)
	l.Stop()
	end := time.Now()
	s := l.Samples()

	before, nBefore := hitRatio(s, start, killed, all)
	// The first half second after the kill: the replicas' breakers for a
	// open after a few failed operations each.
	downFrom := killed.Add(500 * time.Millisecond)
	downAll, nDown := hitRatio(s, downFrom, restarted, all)
	downB, nDownB := hitRatio(s, downFrom, restarted, keysOnB)
	downA, _ := hitRatio(s, downFrom, restarted, keysOnA)
	afterA, nAfterA := hitRatio(s, back.Add(500*time.Millisecond), end, keysOnA)
	recovery := back.Sub(restarted)
	t.Logf("hit ratio: before the kill %.2f (%d requests); server a down: overall %.2f (%d), keys on b %.2f (%d), keys on a %.2f",
		before, nBefore, downAll, nDown, downB, nDownB, downA)
	t.Logf("server a back after a %v outage: its keys cached again by every replica %.1fs after the restart; their hit ratio after that %.2f (%d requests)",
		outage, recovery.Seconds(), afterA, nAfterA)

	if nBefore < 30 || nDownB < 100 || nAfterA < 10 {
		t.Fatalf("too few requests to judge: %d before, %d on b's keys while a was down, %d on a's keys after", nBefore, nDownB, nAfterA)
	}
	if before < 0.95 {
		t.Errorf("hit ratio before the kill %.2f, want ≈ 1", before)
	}
	if downB < 0.9 {
		t.Errorf("hit ratio of keys on the live server while the other was down: %.2f, want ≥ 0.9", downB)
	}
	if downA > 0.1 {
		t.Errorf("hit ratio of keys on the dead server: %.2f, want ≈ 0", downA)
	}
	shareB := float64(len(c.bodies)-c.nA) / float64(len(c.bodies))
	if downAll < shareB-0.15 || downAll > shareB+0.15 {
		t.Errorf("overall hit ratio while a was down %.2f, want ≈ the share of keys on b (%.2f)", downAll, shareB)
	}
	if recovery > 6*time.Second {
		t.Errorf("keys on the restarted server cached again after %.1fs, want ≤ 6s", recovery.Seconds())
	}
	if afterA < 0.9 {
		t.Errorf("hit ratio of keys on the restarted server once back: %.2f, want ≥ 0.9", afterA)
	}
}

// TestMemcachedClusterQuickRestart (issue 14): a server restarted at once,
// while every replica holds many pooled connections to it (now all
// stale), is used again within the breaker's probe delay, not after one
// probe per stale connection.
func TestMemcachedClusterQuickRestart(t *testing.T) {
	c := startMemcachedCluster(t, 24)
	// Warm the pools: many concurrent hits on a's keys at every replica.
	var wg sync.WaitGroup
	for _, p := range c.ps {
		for g := range 64 {
			wg.Go(func() {
				for i, sent := g, 0; i < g+5*len(c.bodies) && sent < 5; i++ {
					if body := i % len(c.bodies); c.onA[body] {
						if _, err := postHit(p.URL, c.bodies[body]); err != nil {
							t.Error(err)
							return
						}
						sent++
					}
				}
			})
		}
	}
	wg.Wait()
	conns := memcachedStat(t, c.a.Addr(), "curr_connections")
	c.a.Stop()
	c.a.Start()
	restarted := time.Now()
	l := c.startLoad(t)
	back := c.waitBackOnA(t, l, restarted)
	time.Sleep(time.Second)
	l.Stop()
	afterA, n := hitRatio(l.Samples(), back.Add(500*time.Millisecond), time.Now(), func(i int) bool { return c.onA[i] })
	recovery := back.Sub(restarted)
	t.Logf("server a restarted at once with %d connections open to it: its keys cached again by every replica %.1fs after; hit ratio after that %.2f (%d requests)",
		conns, recovery.Seconds(), afterA, n)
	if conns < 20 {
		t.Fatalf("only %d connections to a before the restart: the pools were not warm", conns)
	}
	if recovery > 6*time.Second {
		t.Errorf("keys on the restarted server cached again after %.1fs, want ≤ 6s", recovery.Seconds())
	}
	if n < 10 || afterA < 0.9 {
		t.Errorf("hit ratio of keys on the restarted server once back: %.2f (%d requests), want ≥ 0.9", afterA, n)
	}
}
