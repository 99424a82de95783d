package proxy_test

// Hot-path benchmarks of the real handler (issue 6). The handler runs on an
// in-memory fasthttp.RequestCtx; the upstream is a minimal HTTP/1.1 server
// on 127.0.0.1:0 that answers with precomputed bytes and allocates nothing
// per request, so allocs/op is (almost only) the proxy's and its fasthttp
// client's.
//
//	go test -run '^$' -bench . -benchmem ./proxy
//	go test -run '^$' -bench 'Proxied$' -cpuprofile cpu.out -memprofile mem.out ./proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"switchyard/cache"
	"switchyard/config"
	"switchyard/policy"
	"switchyard/proxy"
	"switchyard/upstream"
)

// benchRequestBody is a typical short chat request (~430 bytes).
func benchRequestBody(stream bool) []byte {
	s := `{"model":"bench","messages":[{"role":"system","content":"You are a concise assistant. Answer in one short paragraph and do not use lists."},` +
		`{"role":"user","content":"Explain in two sentences why a sidecar proxy in front of an LLM API should add as little latency as possible, and what it can cache."}],` +
		`"temperature":0,"max_tokens":128`
	if stream {
		s += `,"stream":true`
	}
	return []byte(s + "}")
}

// benchPlainAnswer is a ~400-byte chat.completion.
const benchPlainAnswer = `{"id":"chatcmpl-bench0000000000000000000000","object":"chat.completion","created":1700000000,` +
	`"model":"bench","system_fingerprint":"fp_bench","choices":[{"index":0,"message":{"role":"assistant",` +
	`"content":"Hello! This is the benchmark upstream's fixed answer. It is long enough to look like a short reply from a real model."},` +
	`"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":27,"total_tokens":51}}`

// benchStream returns an SSE body of n chunks (the last with finish_reason),
// the usage chunk and [DONE].
func benchStream(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		finish, content := "null", "tok"+strconv.Itoa(i)+" "
		if i == n-1 {
			finish, content = `"stop"`, ""
		}
		fmt.Fprintf(&b, `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",`+
			`"choices":[{"index":0,"delta":{"content":"%s"},"logprobs":null,"finish_reason":%s}]}`+"\n\n", content, finish)
	}
	b.WriteString(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[],` +
		`"usage":{"prompt_tokens":24,"completion_tokens":20,"total_tokens":44}}` + "\n\n")
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// benchUpstream is a keep-alive HTTP/1.1 server answering every request
// with one of two precomputed responses: the plain answer, or (for a body
// with "stream":true) the event stream.
type benchUpstream struct {
	ln     net.Listener
	plain  []byte
	stream []byte
	// chunks, when set, replace stream: a chunked response written one
	// event per write, as an upstream flushing each event does.
	chunks [][]byte
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func startBenchUpstream(tb testing.TB, events int) *benchUpstream {
	return startBenchUpstreamMode(tb, events, false)
}

func startBenchUpstreamMode(tb testing.TB, events int, perEventWrites bool) *benchUpstream {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	resp := func(ct string, body []byte) []byte {
		return append([]byte("HTTP/1.1 200 OK\r\nContent-Type: "+ct+"\r\nContent-Length: "+strconv.Itoa(len(body))+
			"\r\nX-Request-Id: up-123\r\nX-Ratelimit-Remaining-Requests: 14000\r\n\r\n"), body...)
	}
	u := &benchUpstream{ln: ln, conns: map[net.Conn]struct{}{},
		plain:  resp("application/json", []byte(benchPlainAnswer)),
		stream: resp("text/event-stream", benchStream(events)),
	}
	if perEventWrites {
		u.chunks = append(u.chunks, []byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"))
		all := benchStream(events)
		for len(all) > 0 {
			i := bytes.Index(all, []byte("\n\n")) + 2
			u.chunks = append(u.chunks, fmt.Appendf(nil, "%x\r\n%s\r\n", i, all[:i]))
			all = all[i:]
		}
		u.chunks = append(u.chunks, []byte("0\r\n\r\n"))
	}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns[c] = struct{}{}
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				u.serve(c)
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

func (u *benchUpstream) addr() string { return u.ln.Addr().String() }

var (
	benchContentLength = []byte("content-length:")
	benchStreamTrue    = []byte(`"stream":true`)
)

func (u *benchUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 16<<10)
	body := make([]byte, 0, 16<<10)
	for {
		n := 0
		for lines := 0; ; lines++ {
			line, err := br.ReadSlice('\n')
			if err != nil || lines > 200 {
				return
			}
			if len(line) <= 2 { // the blank line ending the headers
				break
			}
			if len(line) > len(benchContentLength) && bytes.EqualFold(line[:len(benchContentLength)], benchContentLength) {
				n, _ = strconv.Atoi(string(bytes.TrimSpace(line[len(benchContentLength):])))
			}
		}
		if n < 0 || n > 1<<20 {
			return
		}
		body = body[:n]
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		out := u.plain
		if bytes.Contains(body, benchStreamTrue) {
			if u.chunks != nil {
				for _, ch := range u.chunks {
					if _, err := c.Write(ch); err != nil {
						return
					}
				}
				continue
			}
			out = u.stream
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// newBenchServer builds the handler as main does: one OpenAI-compatible
// upstream (pass-through, any model), the policy, the embedded cache.
func newBenchServer(tb testing.TB, upstreamAddr string, level slog.Level) (fasthttp.RequestHandler, *cache.Embedded) {
	tb.Helper()
	cfg, err := config.Parse(strings.NewReader(`
log_level: warn
upstreams:
  - name: fake
    provider: openai
    base_url: http://` + upstreamAddr + `/v1
    api_key: bench-key
`))
	if err != nil {
		tb.Fatal(err)
	}
	u, err := upstream.New(cfg.Upstreams[0])
	if err != nil {
		tb.Fatal(err)
	}
	emb := cache.NewEmbedded(cfg.Cache.MaxBytes)
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: level}))
	w := cfg.Routing.Weights
	pol, err := policy.New([]config.Upstream{{Name: "fake"}}, policy.Options{
		Weights:       w,
		Breaker:       cfg.Breaker,
		Counter:       emb,
		CounterPrefix: cfg.Cache.Namespace + ":v1:quota",
		Logger:        log,
		Metrics:       metrics.NewSet(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{
		Config: cfg, Upstreams: []*upstream.Client{u}, Policy: pol,
		Cache: emb, CacheBackend: "embedded",
		IsMiss: func(err error) bool { return errors.Is(err, cache.ErrMiss) },
		Logger: log, LogOutput: io.Discard, Version: "bench",
	})
	if err != nil {
		tb.Fatal(err)
	}
	return srv.Handler(true), emb
}

func benchCtx(body []byte, headers ...string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/v1/chat/completions")
	req.Header.SetHost("127.0.0.1:8080")
	req.Header.SetContentType("application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	req.SetBody(body)
	// ctx.Init(&req, nil, nil) would do, but its connection is a nil
	// net.Conn, and the stream relay sets a write deadline on it.
	ctx := new(fasthttp.RequestCtx)
	ctx.Init2(benchConn{}, nil, true)
	req.CopyTo(&ctx.Request)
	return ctx
}

// benchConn is the in-memory RequestCtx's connection: every call is a no-op.
type benchConn struct{}

var benchAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

func (benchConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (benchConn) Write(p []byte) (int, error)      { return len(p), nil }
func (benchConn) Close() error                     { return nil }
func (benchConn) LocalAddr() net.Addr              { return benchAddr }
func (benchConn) RemoteAddr() net.Addr             { return benchAddr }
func (benchConn) SetDeadline(time.Time) error      { return nil }
func (benchConn) SetReadDeadline(time.Time) error  { return nil }
func (benchConn) SetWriteDeadline(time.Time) error { return nil }

func checkAnswer(tb testing.TB, ctx *fasthttp.RequestCtx, xcache string) {
	tb.Helper()
	if ctx.Response.StatusCode() != fasthttp.StatusOK {
		tb.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if got := string(ctx.Response.Header.Peek("X-Cache")); got != xcache {
		tb.Fatalf("X-Cache %q, want %q", got, xcache)
	}
}

// BenchmarkProxied is one plain request through the handler with the cache
// bypassed (Cache-Control: no-store): admission, JSON checks, ranking, the
// breaker, the upstream round trip over loopback, the answer, metrics and
// the log line (filtered out at warn, as in the harness).
func BenchmarkProxied(b *testing.B) {
	up := startBenchUpstream(b, 20)
	h, _ := newBenchServer(b, up.addr(), slog.LevelWarn)
	ctx := benchCtx(benchRequestBody(false), "Cache-Control", "no-store")
	h(ctx)
	checkAnswer(b, ctx, "BYPASS")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		h(ctx)
	}
	checkAnswer(b, ctx, "BYPASS")
}

// BenchmarkProxiedLogInfo is BenchmarkProxied at log_level info (the
// default): the difference is the per-request log line.
func BenchmarkProxiedLogInfo(b *testing.B) {
	up := startBenchUpstream(b, 20)
	h, _ := newBenchServer(b, up.addr(), slog.LevelInfo)
	ctx := benchCtx(benchRequestBody(false), "Cache-Control", "no-store")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		h(ctx)
	}
	checkAnswer(b, ctx, "BYPASS")
}

// BenchmarkCacheHit is one plain request answered from the embedded cache:
// key derivation, lookup, entry decoding and the answer.
func BenchmarkCacheHit(b *testing.B) {
	up := startBenchUpstream(b, 20)
	h, emb := newBenchServer(b, up.addr(), slog.LevelWarn)
	ctx := benchCtx(benchRequestBody(false))
	h(ctx) // the miss; the store is asynchronous
	for i := 0; emb.Len() == 0; i++ {
		if i == 200 {
			b.Fatal("the answer was not stored within 2s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx.Response.Reset()
	h(ctx)
	checkAnswer(b, ctx, "HIT")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		h(ctx)
	}
	checkAnswer(b, ctx, "HIT")
}

// BenchmarkSSERelay streams an answer of n events through the handler and
// its relay (the response body fasthttp reads after the handler returns),
// cache bypassed. ns/event divides by the events relayed; the per-event
// cost is the slope between the 1- and 100-event runs (the 1-event run is
// mostly per-request cost). "burst" has the upstream write the whole stream
// at once; "flushed" writes one chunk per event, as a generating model
// does, so the relay also pays a read per event.
func BenchmarkSSERelay(b *testing.B) {
	for _, mode := range []string{"burst", "flushed"} {
		for _, n := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/events=%d", mode, n), func(b *testing.B) {
				up := startBenchUpstreamMode(b, n, mode == "flushed")
				h, _ := newBenchServer(b, up.addr(), slog.LevelWarn)
				ctx := benchCtx(benchRequestBody(true), "Cache-Control", "no-store")
				var out bytes.Buffer
				h(ctx)
				checkAnswer(b, ctx, "BYPASS")
				if err := ctx.Response.BodyWriteTo(&out); err != nil {
					b.Fatal(err)
				}
				if got := bytes.Count(out.Bytes(), []byte("data: ")); got != n+1 || !bytes.HasSuffix(out.Bytes(), []byte("data: [DONE]\n\n")) {
					b.Fatalf("relayed %d data events (want %d and [DONE]):\n%s", got, n+1, out.Bytes())
				}
				b.ReportAllocs()
				for b.Loop() {
					ctx.Response.Reset()
					h(ctx)
					if err := ctx.Response.BodyWriteTo(io.Discard); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
			})
		}
	}
}

// BenchmarkSSERelayMiss is BenchmarkSSERelay for a stream that misses
// the cache: it leads its flight, so followers could share it live, and
// it is stored. Each request names its own entry (X-Cache-Key), so every
// one is a miss with no follower: the single-client cost of a coalescable
// stream.
func BenchmarkSSERelayMiss(b *testing.B) {
	for _, mode := range []string{"burst", "flushed"} {
		for _, n := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/events=%d", mode, n), func(b *testing.B) {
				up := startBenchUpstreamMode(b, n, mode == "flushed")
				h, _ := newBenchServer(b, up.addr(), slog.LevelWarn)
				ctx := benchCtx(benchRequestBody(true))
				key := 0
				run := func(w io.Writer) {
					key++
					ctx.Request.Header.Set("X-Cache-Key", strconv.Itoa(key))
					ctx.Response.Reset()
					h(ctx)
					if err := ctx.Response.BodyWriteTo(w); err != nil {
						b.Fatal(err)
					}
				}
				var out bytes.Buffer
				run(&out)
				checkAnswer(b, ctx, "MISS")
				if got := bytes.Count(out.Bytes(), []byte("data: ")); got != n+1 || !bytes.HasSuffix(out.Bytes(), []byte("data: [DONE]\n\n")) {
					b.Fatalf("relayed %d data events (want %d and [DONE]):\n%s", got, n+1, out.Bytes())
				}
				b.ReportAllocs()
				for b.Loop() {
					run(io.Discard)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
			})
		}
	}
}

// BenchmarkProxiedParallel runs BenchmarkProxied's request from 16
// goroutines per CPU, each with its own RequestCtx: with -mutexprofile it
// shows lock contention in the shared bookkeeping (policy, metrics, cache).
func BenchmarkProxiedParallel(b *testing.B) {
	up := startBenchUpstream(b, 20)
	h, _ := newBenchServer(b, up.addr(), slog.LevelWarn)
	body := benchRequestBody(false)
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		ctx := benchCtx(body, "Cache-Control", "no-store")
		for pb.Next() {
			ctx.Response.Reset()
			h(ctx)
			if ctx.Response.StatusCode() != fasthttp.StatusOK {
				b.Errorf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
				return
			}
		}
	})
}

// BenchmarkCacheHitParallel is BenchmarkCacheHit from 16 goroutines per
// CPU.
func BenchmarkCacheHitParallel(b *testing.B) {
	up := startBenchUpstream(b, 20)
	h, emb := newBenchServer(b, up.addr(), slog.LevelWarn)
	body := benchRequestBody(false)
	h(benchCtx(body))
	for i := 0; emb.Len() == 0; i++ {
		if i == 200 {
			b.Fatal("the answer was not stored within 2s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		ctx := benchCtx(body)
		for pb.Next() {
			ctx.Response.Reset()
			h(ctx)
			if string(ctx.Response.Header.Peek("X-Cache")) != "HIT" {
				b.Errorf("X-Cache %q", ctx.Response.Header.Peek("X-Cache"))
				return
			}
		}
	})
}
