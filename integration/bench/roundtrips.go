package main

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// opsPrefix starts the series of switchyard's count of requests sent to
// memcached, by command.
const opsPrefix = `switchyard_cache_memcached_ops_total{op="`

// roundTrips is what one miss and one hit cost in memcached requests, by
// command (get, set, incr, ...), averaged over a run of each.
type roundTrips struct {
	n               int
	perMiss, perHit map[string]float64
}

func sum(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

// breakdown formats per-command figures: "get 1.00, set 1.00".
func breakdown(m map[string]float64) string {
	var ops []string
	for op, v := range m {
		if v >= 0.005 {
			ops = append(ops, op)
		}
	}
	sort.Strings(ops)
	var parts []string
	for _, op := range ops {
		parts = append(parts, fmt.Sprintf("%s %.2f", op, m[op]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// String is "3.00 per miss (get 1.00, incr 1.00, set 1.00) / 1.00 per hit (get 1.00)".
func (r *roundTrips) String() string {
	return fmt.Sprintf("%.2f per miss (%s) / %.2f per hit (%s)", sum(r.perMiss), breakdown(r.perMiss), sum(r.perHit), breakdown(r.perHit))
}

// roundTripsRun starts a switchyard on memcached at mcAddr with the near
// cache off and a tokens quota on its upstream (so a miss also charges a
// shared quota counter, as in most deployments), measures its round trips
// with n misses and n hits, and stops it.
func roundTripsRun(bin, dir, fakeAddr, mcAddr string, n int) (*roundTrips, error) {
	// switchyardConfig ends with the upstream's entry: the quota extends it.
	cfg := switchyardConfig(fakeAddr, mcAddr, "warn", true) + "    quota: {limit: 1000000000, unit: tokens}\n"
	p, err := startSwitchyard("switchyard-memcached-roundtrips", bin, dir, cfg, nil)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	return measureRoundTrips(p.addr, n)
}

// measureRoundTrips sends n requests of bodies switchyard has not seen
// (misses), then the same n again (hits), one at a time, to switchyard
// at addr, and divides the change of its memcached request counters over
// each run by n. The store after a miss is asynchronous: the miss run
// ends when n sets have been counted (at most 10 s), so they are charged
// to the misses. addr must use memcached with the near cache off, or hits
// cost nothing.
func measureRoundTrips(addr string, n int) (*roundTrips, error) {
	hc := newClient(addr, 1, 10*time.Second)
	defer hc.CloseIdleConnections()
	tag := strconv.FormatInt(time.Now().UnixNano(), 36)
	send := func(i int, want string) error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		j := job{addr: addr, body: chatBody("bench-rt-"+tag+"-"+strconv.Itoa(i), false)}
		j.request(req)
		if err := doPlain(hc, req, resp, false); err != nil {
			return err
		}
		if got := resp.Header.Peek("X-Cache"); string(got) != want {
			return fmt.Errorf("request %d: X-Cache %q, want %s", i, got, want)
		}
		return nil
	}
	m0, err := scrapeOps(addr)
	if err != nil {
		return nil, err
	}
	for i := range n {
		if err := send(i, "MISS"); err != nil {
			return nil, err
		}
	}
	m1, err := scrapeOps(addr)
	for deadline := time.Now().Add(10 * time.Second); err == nil && m1["set"]-m0["set"] < float64(n) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		m1, err = scrapeOps(addr)
	}
	if err != nil {
		return nil, err
	}
	if got := m1["set"] - m0["set"]; got < float64(n) {
		return nil, fmt.Errorf("%v sets counted for %d misses after 10s", got, n)
	}
	for i := range n {
		if err := send(i, "HIT"); err != nil {
			return nil, err
		}
	}
	m2, err := scrapeOps(addr)
	if err != nil {
		return nil, err
	}
	r := &roundTrips{n: n, perMiss: map[string]float64{}, perHit: map[string]float64{}}
	for op := range m2 {
		r.perMiss[op] = (m1[op] - m0[op]) / float64(n)
		r.perHit[op] = (m2[op] - m1[op]) / float64(n)
	}
	return r, nil
}

// scrapeOps returns switchyard's switchyard_cache_memcached_ops_total by op.
func scrapeOps(addr string) (map[string]float64, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/metrics")
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		return nil, fmt.Errorf("scraping %s: %w", addr, err)
	}
	out := map[string]float64{}
	for _, line := range bytes.Split(resp.Body(), []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte(opsPrefix))
		if !ok {
			continue
		}
		op, v, ok := bytes.Cut(rest, []byte(`"} `))
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64); err == nil {
			out[string(op)] = f
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %s...} series in %s/metrics (switchyard built before they existed?)", opsPrefix, addr)
	}
	return out, nil
}
