package proxy_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"switchyard/cache"
	"switchyard/config"
	"switchyard/policy"
	"switchyard/proxy"
	"switchyard/upstream"
)

// BenchmarkServerBody is one cache hit through a real fasthttp.Server (on
// an in-memory listener) and a fasthttp client: what reading the request
// body costs, the one thing the audio uploads changed for JSON routes.
// "buffered" is the server as it was (fasthttp reads the body before the
// handler); "streamed" is main's (StreamRequestBody, HeaderReceived, and
// Guard reading the body). Run both and compare:
//
//	go test -run '^$' -bench ServerBody -benchmem -count 5 ./proxy
func BenchmarkServerBody(b *testing.B) {
	small := benchRequestBody(false)
	large := bytes.Replace(small, []byte(`"max_tokens":128`), []byte(`"max_tokens":128,"metadata":{"pad":"`+strings.Repeat("x", 12<<10)+`"}`), 1)
	for _, body := range []struct {
		name string
		b    []byte
	}{{"430B", small}, {"12KiB", large}} {
		for _, streamed := range []bool{false, true} {
			name := body.name + "/buffered"
			if streamed {
				name = body.name + "/streamed"
			}
			b.Run(name, func(b *testing.B) { benchServerBody(b, body.b, streamed) })
		}
	}
}

func benchServerBody(b *testing.B, body []byte, streamed bool) {
	up := startBenchUpstream(b, 20)
	srv, emb := newBenchProxy(b, up.addr())
	s := &fasthttp.Server{
		Handler:            srv.Guard(srv.Handler(true)),
		ErrorHandler:       srv.ErrorHandler,
		MaxRequestBodySize: 10 << 20,
		ReadBufferSize:     8 << 10,
	}
	if streamed {
		s.StreamRequestBody = true
		s.HeaderReceived = srv.HeaderReceived
		s.DisablePreParseMultipartForm = true
	}
	ln := fasthttputil.NewInmemoryListener()
	go s.Serve(ln) //nolint:errcheck
	b.Cleanup(func() { _ = s.Shutdown(); _ = ln.Close() })
	c := &fasthttp.HostClient{Addr: "bench", Dial: func(string) (net.Conn, error) { return ln.Dial() }}

	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://bench/v1/chat/completions")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBody(body)
	do := func() {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
	}
	do() // the miss; the store is asynchronous
	for i := 0; emb.Len() == 0; i++ {
		if i == 200 {
			b.Fatal("the answer was not stored within 2s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	do()
	if resp.StatusCode() != 200 || string(resp.Header.Peek("X-Cache")) != "HIT" {
		b.Fatalf("status %d, X-Cache %q: %s", resp.StatusCode(), resp.Header.Peek("X-Cache"), resp.Body())
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		do()
	}
	if string(resp.Header.Peek("X-Cache")) != "HIT" {
		b.Fatalf("X-Cache %q", resp.Header.Peek("X-Cache"))
	}
}

// newBenchProxy is newBenchServer's Server itself (the server-level
// benchmarks need its Guard and hooks).
func newBenchProxy(tb testing.TB, upstreamAddr string) (*proxy.Server, *cache.Embedded) {
	tb.Helper()
	cfg, err := config.Parse(strings.NewReader("log_level: warn\nupstreams:\n  - name: fake\n    provider: openai\n    base_url: http://" +
		upstreamAddr + "/v1\n    api_key: bench-key\n"))
	if err != nil {
		tb.Fatal(err)
	}
	u, err := upstream.New(cfg.Upstreams[0])
	if err != nil {
		tb.Fatal(err)
	}
	emb := cache.NewEmbedded(cfg.Cache.MaxBytes)
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pol, err := policy.New([]config.Upstream{{Name: "fake"}}, policy.Options{
		Weights: cfg.Routing.Weights, Breaker: cfg.Breaker, Counter: emb,
		CounterPrefix: cfg.Cache.Namespace + ":v1:quota", Logger: log, Metrics: metrics.NewSet(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{
		Config: cfg, Upstreams: []*upstream.Client{u}, Policy: pol, Cache: emb, CacheBackend: "embedded",
		IsMiss: func(err error) bool { return errors.Is(err, cache.ErrMiss) },
		Logger: log, LogOutput: io.Discard, Version: "bench",
	})
	if err != nil {
		tb.Fatal(err)
	}
	return srv, emb
}
