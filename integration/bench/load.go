package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// maxSamplesPerWorker bounds the latencies one worker keeps (and so the
// number of requests it sends): far above what 2 cores can do in a run.
const maxSamplesPerWorker = 4 << 20

// job describes the requests of one closed-loop run.
type job struct {
	addr string
	// path is the API path requests go to; "" is /v1/chat/completions.
	path    string
	body    []byte
	headers [][2]string
	conc    int
	dur     time.Duration
	// wantHit: a response without X-Cache: HIT is an error.
	wantHit bool
	// stream: read the body as SSE, measure time to first event, count
	// events; a stream that does not end with [DONE] is an error.
	stream bool
	// wantEvents, when > 0, is the number of data events (without [DONE])
	// each stream must have.
	wantEvents int
}

// result is what a run measured.
type result struct {
	ok      int
	errs    int
	errKind map[string]int
	elapsed time.Duration
	lat     []time.Duration // sorted, successful requests only
	ttfe    []time.Duration // sorted, streams only
	events  int64
}

func (r *result) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func pct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[int(q*float64(len(d)-1)+0.5)]
}

// topErrors formats the most frequent error kinds.
func (r *result) topErrors(n int) string {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range r.errKind {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var parts []string
	for i, e := range all {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%d× %s", e.v, e.k))
	}
	return strings.Join(parts, "; ")
}

func newClient(addr string, conns int, readTimeout time.Duration) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                     addr,
		MaxConns:                 conns,
		ReadTimeout:              readTimeout,
		WriteTimeout:             10 * time.Second,
		MaxIdleConnDuration:      time.Minute,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
		ReadBufferSize:           16 << 10,
	}
}

func (j *job) request(req *fasthttp.Request) {
	req.Header.SetMethod(fasthttp.MethodPost)
	path := j.path
	if path == "" {
		path = "/v1/chat/completions"
	}
	req.SetRequestURI("http://" + j.addr + path)
	req.Header.SetContentType("application/json")
	for _, h := range j.headers {
		req.Header.Set(h[0], h[1])
	}
	req.SetBody(j.body)
}

func errKind(err error) string {
	s := err.Error()
	if len(s) > 140 {
		s = s[:140] + "..."
	}
	return s
}

// run drives j's target with j.conc closed-loop workers for j.dur.
func run(j job) *result {
	hc := newClient(j.addr, j.conc, 30*time.Second)
	defer hc.CloseIdleConnections()
	var (
		mu  sync.Mutex
		out = &result{errKind: map[string]int{}}
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(j.dur)
	for range j.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			j.request(req)
			var br *bufio.Reader
			if j.stream {
				br = bufio.NewReaderSize(nil, 16<<10)
			}
			lat := make([]time.Duration, 0, 1<<14)
			var ttfe []time.Duration
			var events int64
			errs := map[string]int{}
			nerr := 0
			for i := 0; i < maxSamplesPerWorker && time.Now().Before(deadline); i++ {
				t0 := time.Now()
				var err error
				var first time.Duration
				var n int
				if j.stream {
					first, n, err = doStream(hc, req, resp, br, t0, j.wantEvents)
				} else {
					err = doPlain(hc, req, resp, j.wantHit)
				}
				d := time.Since(t0)
				if err != nil {
					nerr++
					errs[errKind(err)]++
					if d < time.Millisecond {
						time.Sleep(time.Millisecond) // don't spin on a fast failure
					}
					continue
				}
				lat = append(lat, d)
				if j.stream {
					ttfe = append(ttfe, first)
					events += int64(n)
				}
			}
			mu.Lock()
			out.lat = append(out.lat, lat...)
			out.ttfe = append(out.ttfe, ttfe...)
			out.events += events
			out.errs += nerr
			for k, v := range errs {
				out.errKind[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	out.ok = len(out.lat)
	slices.Sort(out.lat)
	slices.Sort(out.ttfe)
	return out
}

var xCacheHit = []byte("HIT")

func doPlain(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, wantHit bool) error {
	if err := hc.Do(req, resp); err != nil {
		return err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("HTTP %d: %.100s", resp.StatusCode(), resp.Body())
	}
	if len(resp.Body()) == 0 {
		return errors.New("empty body")
	}
	if wantHit && !bytes.Equal(resp.Header.Peek("X-Cache"), xCacheHit) {
		return fmt.Errorf("X-Cache %q, want HIT", resp.Header.Peek("X-Cache"))
	}
	return nil
}

var (
	dataPrefix = []byte("data:")
	doneMarker = []byte("[DONE]")
	errorField = []byte(`"error"`)
)

// doStream sends one streaming request and reads the stream to its end. It
// returns the time from t0 to the first data line and the number of data
// events before [DONE].
func doStream(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, br *bufio.Reader, t0 time.Time, wantEvents int) (time.Duration, int, error) {
	resp.StreamBody = true
	if err := hc.Do(req, resp); err != nil {
		return 0, 0, err
	}
	var body io.Reader = resp.BodyStream()
	if body == nil {
		body = bytes.NewReader(resp.Body())
	}
	defer resp.CloseBodyStream() //nolint:errcheck
	if resp.StatusCode() != fasthttp.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(body, 200))
		return 0, 0, fmt.Errorf("HTTP %d: %s", resp.StatusCode(), b)
	}
	first, n, err := readEvents(body, br, t0, nil)
	if err != nil {
		return first, n, err
	}
	if wantEvents > 0 && n != wantEvents {
		return first, n, fmt.Errorf("stream had %d events, want %d", n, wantEvents)
	}
	return first, n, nil
}

// readEvents reads an SSE body to its end. onFirst, if set, is called at
// the first data line.
func readEvents(body io.Reader, br *bufio.Reader, t0 time.Time, onFirst func()) (time.Duration, int, error) {
	br.Reset(body)
	var first time.Duration
	n, done := 0, false
	for lines := 0; lines < 1<<20; lines++ {
		line, err := br.ReadSlice('\n')
		if bytes.HasPrefix(line, dataPrefix) {
			if first == 0 {
				first = time.Since(t0)
				if onFirst != nil {
					onFirst()
				}
			}
			switch {
			case bytes.Contains(line, doneMarker):
				done = true
			case bytes.Contains(line, errorField):
				return first, n, fmt.Errorf("in-band error event: %.120s", line)
			default:
				n++
			}
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if errors.Is(err, io.EOF) {
				break
			}
			return first, n, fmt.Errorf("reading stream: %w", err)
		}
	}
	if !done {
		return first, n, errors.New("stream ended without data: [DONE]")
	}
	return first, n, nil
}

// holdResult is what the open-streams scenario measured.
type holdResult struct {
	n            int
	opened       int // streams that got their first event
	completed    int // streams that ended with [DONE]
	errs         int
	errKind      map[string]int
	peakOpen     int
	rssAtPeak    int64 // KiB, of the measured process
	hwm          int64 // KiB
	goroutines   int   // scraped once all streams should be open (-1: not scraped)
	openAtScrape int
	heapInuse    float64 // bytes, at the scrape
	stackInuse   float64
	elapsed      time.Duration
	stuck        bool
}

// holdStreams opens n streams, spread over ramp, each staying open for
// about hold, and samples the open count, pid's RSS and (when metricsAddr
// is set) switchyard's goroutines while they are open. atPeak, if set, runs
// in a goroutine of its own right after that scrape, when every stream
// should be open (-profile's heap profile); holdStreams waits for it.
func holdStreams(addr string, body []byte, headers [][2]string, n int, ramp, hold time.Duration, pid int, metricsAddr string, atPeak func()) *holdResult {
	hc := newClient(addr, n+16, hold+30*time.Second)
	defer hc.CloseIdleConnections()
	out := &holdResult{n: n, errKind: map[string]int{}, goroutines: -1}
	var (
		open, opened, completed atomic.Int64
		mu                      sync.Mutex
		wg                      sync.WaitGroup
	)
	j := job{addr: addr, body: body, headers: headers}
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(int64(ramp) * int64(i) / int64(n)))
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			j.request(req)
			resp.StreamBody = true
			fail := func(err error) {
				mu.Lock()
				out.errs++
				out.errKind[errKind(err)]++
				mu.Unlock()
			}
			t0 := time.Now()
			if err := hc.Do(req, resp); err != nil {
				fail(err)
				return
			}
			var b io.Reader = resp.BodyStream()
			if b == nil {
				b = bytes.NewReader(resp.Body())
			}
			defer resp.CloseBodyStream() //nolint:errcheck
			if resp.StatusCode() != fasthttp.StatusOK {
				msg, _ := io.ReadAll(io.LimitReader(b, 160))
				fail(fmt.Errorf("HTTP %d: %s", resp.StatusCode(), msg))
				return
			}
			isOpen := false
			_, _, err := readEvents(b, bufio.NewReaderSize(nil, 4096), t0, func() {
				isOpen = true
				open.Add(1)
				opened.Add(1)
			})
			if isOpen {
				open.Add(-1)
			}
			if err != nil {
				fail(err)
				return
			}
			completed.Add(1)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	limit := time.NewTimer(ramp + hold + 30*time.Second)
	defer limit.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	scrapeAt := ramp + min(hold/2, time.Second)
	scraped := false
	peakDone := make(chan struct{})
	if atPeak == nil {
		close(peakDone)
	}
loop:
	for {
		select {
		case <-done:
			break loop
		case <-limit.C:
			out.stuck = true
			break loop
		case <-tick.C:
			o := int(open.Load())
			if o > 0 && o >= out.peakOpen {
				out.peakOpen = o
				out.rssAtPeak, _ = memKB(pid)
			}
			// go_goroutines once, when every stream should be open;
			// atPeak after it, so that it does not disturb the scrape.
			if !scraped && time.Since(start) >= scrapeAt {
				scraped = true
				if metricsAddr != "" {
					if m, err := scrapeMetrics(metricsAddr); err == nil {
						out.goroutines, out.openAtScrape = int(m["go_goroutines"]), int(open.Load())
						out.heapInuse, out.stackInuse = m["go_memstats_heap_inuse_bytes"], m["go_memstats_stack_inuse_bytes"]
					}
				}
				if atPeak != nil {
					go func() { defer close(peakDone); atPeak() }()
				}
			}
		}
	}
	out.elapsed = time.Since(start)
	_, out.hwm = memKB(pid)
	out.opened = int(opened.Load())
	out.completed = int(completed.Load())
	if scraped {
		<-peakDone
	}
	return out
}
