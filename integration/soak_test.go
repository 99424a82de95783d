package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// soakAnswer is what every soak fake answers for a prompt: deterministic,
// so a response can be checked byte for byte whichever fake served it.
func soakPlain(model, prompt string) string {
	return fmt.Sprintf(`{"id":"chatcmpl-%x","object":"chat.completion","created":1732000000,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"answer to %s"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}`,
		len(prompt), model, prompt)
}

func soakEvents(model, prompt string, usage bool) []string {
	evs := []string{}
	for _, w := range []string{"answer", " to", " " + prompt} {
		evs = append(evs, chunk(model, w, ""))
	}
	evs = append(evs, chunk(model, "", "stop"))
	if usage {
		evs = append(evs, usageChunk(model))
	}
	return append(evs, "data: [DONE]\n\n")
}

// soakFake answers deterministically; failRate of requests get a 500
// before anything is streamed, and delay is added before the answer.
func soakFake(failRate float64, delay time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model         string
			Stream        bool
			Messages      []struct{ Content string }
			StreamOptions *struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
			http.Error(w, `{"error":{"message":"bad request","type":"invalid_request_error"}}`, 400)
			return
		}
		if rand.Float64() < failRate {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			io.WriteString(w, `{"error":{"message":"injected failure","type":"server_error"}}`)
			return
		}
		time.Sleep(delay)
		prompt := req.Messages[0].Content
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, soakPlain(req.Model, prompt))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for _, ev := range soakEvents(req.Model, prompt, req.StreamOptions != nil && req.StreamOptions.IncludeUsage) {
			if _, err := io.WriteString(w, ev); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

// scrape returns the value of one metric line from /metrics.
func scrape(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := httpClient.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(line[len(name):]), 64)
			return v
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// waitGoroutines polls go_goroutines until it is at most limit or timeout
// passes, and returns the last value.
func waitGoroutines(t *testing.T, url string, limit float64, timeout time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := scrape(t, url, "go_goroutines")
		if n <= limit || time.Now().After(deadline) {
			return n
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak skipped under -short")
	}
	duration := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("SOAK_DURATION")); err == nil {
		duration = d
	}
	const clients = 50
	ok := newFake(t, soakFake(0, 0))
	flaky := newFake(t, soakFake(0.3, 0))
	slow := newFake(t, soakFake(0, 150*time.Millisecond))
	cfg := "log_level: warn\nshutdown_grace: 5s\nbreaker: {failure_threshold: 5, delay: 2s, success_threshold: 1}\nupstreams:\n" +
		upstreamYAML("ok", ok.BaseURL(), "k1", 1, "") + upstreamYAML("flaky", flaky.BaseURL(), "k2", 1, "") + upstreamYAML("slow", slow.BaseURL(), "k3", 1, "")
	p := startProxy(t, cfg)
	time.Sleep(200 * time.Millisecond)
	goroutinesBefore := scrape(t, p.Admin, "go_goroutines")
	heapBefore := scrape(t, p.Admin, "go_memstats_heap_inuse_bytes")

	var (
		mu        sync.Mutex
		latencies []time.Duration
		failures  []string
		requests  atomic.Int64
		hits      atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for i := 0; time.Now().Before(stop) && i < 1_000_000; i++ {
				stream := rng.IntN(2) == 0
				prompt := fmt.Sprintf("repeated-%d", rng.IntN(20))
				if rng.IntN(2) == 0 {
					prompt = fmt.Sprintf("unique-%d-%d", c, i)
				}
				if stream {
					prompt = "s-" + prompt // stream and plain entries stay apart, so bytes can be compared
				}
				body := fmt.Sprintf(`{"model":"soak","stream":%v,"messages":[{"role":"user","content":%q}]}`, stream, prompt)
				start := time.Now()
				req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					fail("transport: %v", err)
					continue
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				requests.Add(1)
				if err != nil || resp.StatusCode != 200 {
					fail("status %d err %v: %.300s", resp.StatusCode, err, got)
					continue
				}
				if resp.Header.Get("X-Cache") == "HIT" || resp.Header.Get("X-Cache") == "COALESCED" {
					hits.Add(1)
				}
				want := soakPlain("soak", prompt)
				if stream {
					want = strings.Join(soakEvents("soak", prompt, false), "")
				}
				if !bytes.Equal(got, []byte(want)) {
					fail("bytes differ for %s (X-Cache %s, upstream %s):\n got %q\nwant %q", prompt, resp.Header.Get("X-Cache"), resp.Header.Get("X-Upstream"), got, want)
				}
				mu.Lock()
				latencies = append(latencies, time.Since(start))
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	client.CloseIdleConnections()

	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(q float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(q*float64(len(latencies)-1))]
	}
	n := requests.Load()
	t.Logf("soak: %d requests in %v (%.0f/s), hit rate %.2f, p50 %v, p99 %v, upstream calls ok=%d flaky=%d slow=%d",
		n, duration, float64(n)/duration.Seconds(), float64(hits.Load())/float64(max(n, 1)), pct(0.5), pct(0.99), ok.Calls(), flaky.Calls(), slow.Calls())
	for _, f := range failures {
		t.Error(f)
	}
	if n < 100 {
		t.Errorf("only %d requests completed", n)
	}

	// Goroutines come back near where they started once the load stops
	// (fasthttp's idle server workers expire after 10s).
	after := waitGoroutines(t, p.Admin, goroutinesBefore+10, 30*time.Second)
	heapAfter := scrape(t, p.Admin, "go_memstats_heap_inuse_bytes")
	t.Logf("goroutines before %v after %v; heap in use before %.1f MB after %.1f MB (the cache holds the answers)", goroutinesBefore, after, heapBefore/1e6, heapAfter/1e6)
	// What stays is the cached answers (under 2 KB each) and pools, not
	// per-request garbage: bound it by the requests made.
	if limit := heapBefore + float64(n)*4096 + 32<<20; heapAfter > limit {
		t.Errorf("heap in use %.1f MB after the load, over %.1f MB", heapAfter/1e6, limit/1e6)
	}
	if after > goroutinesBefore+10 {
		t.Errorf("goroutines did not return to baseline: before %v, after %v", goroutinesBefore, after)
	}
}
