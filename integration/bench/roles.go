package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// The harness re-executes itself with -role fake or -role passthrough, so the
// fake upstream and the bare pass-through proxy are processes of their own
// whose CPU time and RSS are measured apart from the load generator's.

// runRole runs a subprocess role and returns the exit code.
func runRole(role string, args []string) int {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	upstreamAddr := fs.String("upstream", "", "passthrough: the fake upstream's host:port")
	latency := fs.Duration("latency", 0, "fake: fixed delay before a plain answer or a stream's first event")
	events := fs.Int("events", 20, "fake: data events per stream (before the usage chunk and [DONE])")
	interval := fs.Duration("event-interval", 2*time.Millisecond, "fake: delay between events of model bench-paced")
	hold := fs.Duration("hold", 5*time.Second, "fake: how long a bench-hold stream stays open")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var h fasthttp.RequestHandler
	var connState func(net.Conn, fasthttp.ConnState)
	switch role {
	case "fake":
		f := newFake(*latency, *events, *interval, *hold)
		h = f.handle
		connState = func(_ net.Conn, st fasthttp.ConnState) {
			if st == fasthttp.StateNew {
				f.conns.Add(1)
			}
		}
	case "passthrough":
		if *upstreamAddr == "" {
			fmt.Fprintln(os.Stderr, "passthrough: -upstream is required")
			return 2
		}
		h = passthrough(*upstreamAddr)
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		return 2
	}
	srv := &fasthttp.Server{
		Handler:               h,
		Name:                  role,
		ReadBufferSize:        16 << 10,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		ConnState:             connState,
		// Concurrency 0 is fasthttp's DefaultConcurrency (256 Ki
		// connections); MaxConnsPerIP 0 is unlimited: neither caps the
		// open-streams scenario.
	}
	fmt.Printf("LISTEN %s\n", ln.Addr().String())
	_ = os.Stdout.Sync()
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// fake is the OpenAI-compatible upstream. What it does depends on the body:
//
//	plain request                 a fixed ~400-byte chat.completion
//	"stream":true, model bench    -events chunks at once, each flushed
//	model bench-paced             the same, -event-interval apart
//	model bench-hold              one chunk at once, then one a second until
//	                              -hold has passed, then the end
//
// Every stream ends with a finish_reason chunk, the usage chunk when the
// body asks for include_usage (Switchyard does, and strips it again), and
// data: [DONE].
//
// POST /v1/embeddings answers a fixed embeddings list: one 1536-dimension
// vector (text-embedding-3-small's size) in base64, the encoding the
// openai Python and Node SDKs ask for by default (~8.3 KB), in OpenAI's
// documented shape (https://platform.openai.com/docs/api-reference/embeddings/create).
type fake struct {
	conns    atomic.Int64 // connections accepted, served at GET /bench/conns
	latency  time.Duration
	interval time.Duration
	hold     time.Duration
	plain    []byte
	chunks   [][]byte // events[0..n-1]; the last one carries finish_reason
	usage    []byte
	done     []byte
	embed    []byte // the /v1/embeddings answer
}

// embedDims is the length of the fake's embedding vector.
const embedDims = 1536

func newFake(latency time.Duration, events int, interval, hold time.Duration) *fake {
	f := &fake{latency: latency, interval: interval, hold: hold}
	f.plain = []byte(`{"id":"chatcmpl-bench0000000000000000000000","object":"chat.completion","created":1700000000,` +
		`"model":"bench","system_fingerprint":"fp_bench","choices":[{"index":0,"message":{"role":"assistant",` +
		`"content":"Hello! This is the benchmark upstream's fixed answer. It is long enough to look like a short reply from a real model."},` +
		`"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":27,"total_tokens":51}}`)
	events = max(events, 1)
	for i := range events {
		finish := "null"
		content := "tok" + strconv.Itoa(i) + " "
		if i == events-1 {
			finish, content = `"stop"`, ""
		}
		f.chunks = append(f.chunks, []byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",`+
			`"choices":[{"index":0,"delta":{"content":"`+content+`"},"logprobs":null,"finish_reason":`+finish+`}]}`+"\n\n"))
	}
	f.usage = []byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[],` +
		`"usage":{"prompt_tokens":24,"completion_tokens":20,"total_tokens":44}}` + "\n\n")
	f.done = []byte("data: [DONE]\n\n")
	vec := make([]byte, 4*embedDims)
	for i := range embedDims { // a fixed, plausible vector: small values around 0
		binary.LittleEndian.PutUint32(vec[4*i:], math.Float32bits(float32(i%97-48)/1024))
	}
	f.embed = []byte(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":"` + base64.StdEncoding.EncodeToString(vec) +
		`"}],"model":"text-embedding-3-small","usage":{"prompt_tokens":24,"total_tokens":24}}`)
	return f
}

var (
	chatPath      = []byte("/v1/chat/completions")
	embedPath     = []byte("/v1/embeddings")
	connsPath     = []byte("/bench/conns")
	streamTrue    = []byte(`"stream":true`)
	includeUsage  = []byte(`"include_usage":true`)
	modelKey      = []byte(`"model":"`)
	modelPaced    = []byte("bench-paced")
	modelHold     = []byte("bench-hold")
	ctJSON        = []byte("application/json")
	ctEventStream = []byte("text/event-stream")
)

func modelOf(body []byte) []byte {
	i := bytes.Index(body, modelKey)
	if i < 0 {
		return nil
	}
	rest := body[i+len(modelKey):]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return nil
}

func (f *fake) handle(ctx *fasthttp.RequestCtx) {
	if bytes.Equal(ctx.Path(), connsPath) {
		ctx.SetBodyString(strconv.FormatInt(f.conns.Load(), 10))
		return
	}
	if bytes.Equal(ctx.Path(), embedPath) {
		if f.latency > 0 {
			time.Sleep(f.latency)
		}
		ctx.Response.Header.SetContentTypeBytes(ctJSON)
		ctx.SetBody(f.embed)
		return
	}
	if !bytes.Equal(ctx.Path(), chatPath) {
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		ctx.SetBodyString(`{"error":{"message":"not found","type":"invalid_request_error","code":"not_found"}}`)
		return
	}
	body := ctx.PostBody()
	if !bytes.Contains(body, streamTrue) {
		if f.latency > 0 {
			time.Sleep(f.latency)
		}
		ctx.Response.Header.SetContentTypeBytes(ctJSON)
		ctx.SetBody(f.plain)
		return
	}
	model := modelOf(body)
	usage := bytes.Contains(body, includeUsage)
	interval, hold := time.Duration(0), time.Duration(0)
	switch {
	case bytes.Equal(model, modelPaced):
		interval = f.interval
	case bytes.Equal(model, modelHold):
		hold = f.hold
	}
	latency := f.latency
	ctx.Response.Header.SetContentTypeBytes(ctEventStream)
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		if latency > 0 {
			time.Sleep(latency)
		}
		write := func(b []byte) bool {
			_, _ = w.Write(b)
			return w.Flush() == nil
		}
		if hold > 0 {
			start := time.Now()
			if !write(f.chunks[0]) {
				return
			}
			// one event a second; bounded by hold
			for i := 1; time.Since(start)+time.Second < hold && i < 3600; i++ {
				time.Sleep(time.Second)
				if !write(f.chunks[min(i, max(len(f.chunks)-2, 0))]) {
					return
				}
			}
			time.Sleep(max(hold-time.Since(start), 0))
			if !write(f.chunks[len(f.chunks)-1]) {
				return
			}
		} else {
			for i, c := range f.chunks {
				if i > 0 && interval > 0 {
					time.Sleep(interval)
				}
				if !write(c) {
					return
				}
			}
		}
		if usage && !write(f.usage) {
			return
		}
		write(f.done)
	})
}

// passthrough is the floor any proxy pays: a fasthttp server whose handler
// forwards the request as is (minus hop-by-hop headers) through a
// fasthttp.HostClient and returns the upstream's response as is.
func passthrough(upstream string) fasthttp.RequestHandler {
	hc := &fasthttp.HostClient{
		Addr:                     upstream,
		MaxConns:                 16384,
		ReadTimeout:              60 * time.Second,
		WriteTimeout:             10 * time.Second,
		MaxIdleConnDuration:      time.Minute,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
	}
	hop := []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Upgrade"}
	return func(ctx *fasthttp.RequestCtx) {
		req, resp := &ctx.Request, &ctx.Response
		for _, h := range hop {
			req.Header.Del(h)
		}
		if err := hc.Do(req, resp); err != nil {
			ctx.ResetBody()
			ctx.Error("upstream: "+err.Error(), fasthttp.StatusBadGateway)
			return
		}
		for _, h := range hop {
			resp.Header.Del(h)
		}
	}
}
