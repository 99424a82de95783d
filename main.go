// Command switchyard is an LLM sidecar reverse proxy that speaks the
// OpenAI chat-completions API: point an OpenAI SDK's base URL at it, and it
// answers from a cache (embedded or memcached) when it can, else from the
// best-ranked of its upstreams (Groq, HuggingFace's router, any
// OpenAI-compatible server), failing over behind circuit breakers.
//
// main only wires things: flags, config, clients, policy, cache, handler,
// listeners and signals.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/cache"
	"switchyard/config"
	"switchyard/logsink"
	"switchyard/policy"
	"switchyard/proxy"
	"switchyard/upstream"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("switchyard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "./config.yaml", "path to the YAML configuration")
	listen := fs.String("listen", "", "listen address (overrides the config's listen)")
	check := fs.Bool("check", false, "load and validate the configuration, print a summary, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	healthcheck := fs.String("healthcheck", "", "GET this URL and exit 0 if it answers 200 (for container health checks)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "switchyard", version)
		return 0
	}
	if *healthcheck != "" {
		return probe(*healthcheck, stderr)
	}
	cfg, err := loadConfig(*configPath, *listen)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *check {
		for _, w := range cfg.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		fmt.Fprintln(stdout, cfg.Summary())
		return 0
	}
	out := logsink.New(stderr) // log lines are written off the request path
	defer out.Close()
	log := newLogger(out, cfg.LogLevel)
	logWarnings(log, cfg)
	if err := serve(cfg, *configPath, *listen, log, out); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

func loadConfig(path, listen string) (config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return cfg, err
	}
	if listen != "" {
		cfg.Listen = listen
		if err := cfg.Validate(); err != nil {
			return cfg, fmt.Errorf("-listen: %w", err)
		}
	}
	return cfg, nil
}

// logWarnings logs the configuration's warnings (config.Config.Warnings),
// on start and on each accepted reload.
func logWarnings(log *slog.Logger, cfg config.Config) {
	for _, w := range cfg.Warnings {
		log.Warn("config warning", "warning", w)
	}
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv}))
}

// lifecycle logs start, reload and stop at info whatever log_level says:
// an operator (and a supervisor reading the listen address) always sees them.
func lifecycle(log *slog.Logger, msg string, args ...any) {
	log.Handler().Handle(context.Background(), func() slog.Record {
		r := slog.NewRecord(time.Now(), slog.LevelInfo, msg, 0)
		r.Add(args...)
		return r
	}())
}

// probe implements -healthcheck: the runtime image has no shell or curl.
func probe(url string, stderr io.Writer) int {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "healthcheck: status", resp.StatusCode)
		return 1
	}
	return 0
}

// backends is what the cache configuration builds.
type backends struct {
	store   proxy.Cache
	counter policy.Counter
	views   policy.ViewStore // nil: rate-limit views stay in process
	name    string
	close   func()
}

func newBackends(cfg config.Config) (backends, error) {
	if len(cfg.Cache.Memcached) == 0 {
		e := cache.NewEmbedded(cfg.Cache.MaxBytes)
		return backends{store: e, counter: e, name: "embedded", close: func() {}}, nil
	}
	m, err := cache.NewMemcached(cache.MemcachedOptions{
		Servers:      cfg.Cache.Memcached,
		Timeout:      cfg.Cache.Timeout,
		MaxItemBytes: cfg.Cache.MaxItemBytes,
	})
	if err != nil {
		return backends{}, err
	}
	// Answers go through the near cache when it is on; quota counters
	// always go to memcached, shared by every replica. The name stays
	// "memcached" either way: /status and its users know the backend by it.
	var store proxy.Cache = m
	if cfg.Cache.NearMaxBytes > 0 {
		store = cache.NewTiered(m, cfg.Cache.NearMaxBytes, cfg.Cache.NearTTL)
	}
	return backends{store: store, counter: m, views: m, name: "memcached", close: func() { _ = m.Close() }}, nil
}

func buildClients(cfg config.Config) ([]*upstream.Client, error) {
	out := make([]*upstream.Client, 0, len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		c, err := upstream.New(u)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// policyOptions are the policy's options from the configuration; the
// upstreams' own settings it reads from cfg.Upstreams directly.
func policyOptions(cfg config.Config) policy.Options {
	return policy.Options{
		Weights:        cfg.Routing.Weights,
		HealthHalfLife: cfg.Routing.HealthHalfLife,
		Breaker:        cfg.Breaker,
		CounterPrefix:  cfg.Cache.Namespace + ":v1:quota",
	}
}

// syncTimeout bounds the start-up read of the shared quota state: a
// memcached operation can take its timeout to dial and its timeout again
// to answer.
func syncTimeout(cfg config.Config) time.Duration {
	if len(cfg.Cache.Memcached) == 0 {
		return time.Second // in process: immediate
	}
	return 2*cfg.Cache.Timeout + 50*time.Millisecond
}

// bodyBufferLimit is the largest body buffer a connection (or a pooled
// request or response) keeps for reuse; typical chat bodies fit, a long
// context or an image's base64 is allocated for its request alone.
const bodyBufferLimit = 64 << 10

// serve runs the proxy until SIGTERM; log writes to logOut, where the
// proxy also writes its request lines (proxy.Options.LogOutput).
func serve(cfg config.Config, path, listenFlag string, log *slog.Logger, logOut io.Writer) error {
	be, err := newBackends(cfg)
	if err != nil {
		return err
	}
	defer be.close()
	clients, err := buildClients(cfg)
	if err != nil {
		return err
	}
	popts := policyOptions(cfg)
	popts.Counter, popts.Views, popts.Logger = be.counter, be.views, log
	pol, err := policy.New(cfg.Upstreams, popts)
	if err != nil {
		return err
	}
	// The shared quota counts and rate-limit views are read before the
	// listeners open: a replica that (re)starts must not rank from a
	// count of 0 (its reservations are exact either way). A dead memcached
	// delays the start by about two of its timeouts (dial, then read).
	if err := pol.Sync(syncTimeout(cfg)); err != nil {
		log.Warn("quota state not read at start; counting from the next counter operation", "err", err)
	}
	srv, err := proxy.New(proxy.Options{
		Config: cfg, Upstreams: clients, Policy: pol, Cache: be.store, CacheBackend: be.name,
		IsMiss: func(err error) bool { return errors.Is(err, cache.ErrMiss) },
		Leases: sharedLeases(be),
		Logger: log, LogOutput: logOut, Version: version,
	})
	if err != nil {
		return err
	}

	// Without ReduceMemoryUsage a connection keeps its request and response
	// body buffers between requests: at the size of the largest body it
	// ever carried (up to max_body_bytes), for as long as it is open.
	// Larger buffers are dropped after each request instead.
	fasthttp.SetBodySizePoolLimit(bodyBufferLimit, bodyBufferLimit)
	newServer := func(h fasthttp.RequestHandler) *fasthttp.Server {
		return &fasthttp.Server{
			Handler:            srv.Guard(h),
			ErrorHandler:       srv.ErrorHandler, // answers, counts and logs rejections; drains before closing
			Name:               "switchyard",
			MaxRequestBodySize: cfg.MaxBodyBytes,
			// Bodies reach the handler as a stream: an upload (up to
			// max_upload_bytes) is spooled as it arrives, never held
			// whole. Guard reads every other body whole before its
			// handler, bounded by max_body_bytes, as fasthttp did;
			// HeaderReceived keeps fasthttp from waiting on the first
			// bytes of a body over it. fasthttp must not parse forms
			// itself: an upload goes upstream as its bytes.
			StreamRequestBody:            true,
			HeaderReceived:               srv.HeaderReceived,
			DisablePreParseMultipartForm: true,
			ReadBufferSize:               8 << 10,          // also the limit on request line + headers (431 above)
			ReadTimeout:                  cfg.ReadTimeout,  // slowloris bound
			WriteTimeout:                 cfg.WriteTimeout, // streams set theirs per write
			IdleTimeout:                  120 * time.Second,
			CloseOnShutdown:              true,
			// Not ReduceMemoryUsage: it releases a connection's buffers
			// between requests and reads each request's first byte with a
			// syscall of its own, 15% of a cache hit's CPU in the harness.
			// With 8 KiB read buffers held instead, 5,000 open streams
			// still stay under 250 MB (make bench, scenario e); body
			// buffers are bounded by bodyBufferLimit.
			ReduceMemoryUsage:     false,
			NoDefaultDate:         false,
			NoDefaultServerHeader: true,
			// fasthttp's errors (logged at debug) quote no request bytes:
			// a rejected head may carry keys.
			SecureErrorLogMessage: true,
			Logger:                fasthttpLogger{log},
		}
	}
	main := newServer(srv.Handler(cfg.AdminListen == ""))
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	servers := []*fasthttp.Server{main}
	errc := make(chan error, 2)
	// proxy.NewListener answers bare-LF heads at once (fasthttp waits for
	// read_timeout) without wrapping the connections of ordinary clients.
	go func() { errc <- main.Serve(proxy.NewListener(ln)) }()
	attrs := []any{"addr", ln.Addr().String(), "version", version, "cache", be.name, "upstreams", len(clients)}
	if cfg.AdminListen != "" {
		admin := newServer(srv.AdminHandler())
		aln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			_ = main.Shutdown()
			return fmt.Errorf("admin_listen %s: %w", cfg.AdminListen, err)
		}
		servers = append(servers, admin)
		go func() { errc <- admin.Serve(proxy.NewListener(aln)) }()
		attrs = append(attrs, "admin_addr", aln.Addr().String())
	}
	for _, u := range clients {
		if !u.Configured() {
			log.Warn("upstream unconfigured: no api_key, skipped", "upstream", u.Name)
		}
	}
	// Signals are caught before "listening" is logged: a SIGHUP sent as
	// soon as the proxy says it is up must reload it, not kill it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	lifecycle(log, "listening", attrs...)

	// What other replicas learn (rate limits, quota use) is read in the
	// background, never on a request's path.
	refresh := time.NewTicker(policy.RefreshInterval)
	defer refresh.Stop()
	for {
		select {
		case <-refresh.C:
			pol.Refresh()
		case err := <-errc:
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				cfg, pol = reload(path, listenFlag, cfg, srv, pol, be, log)
				continue
			}
			lifecycle(log, "shutting down", "signal", sig.String(), "grace", cfg.ShutdownGrace.String())
			srv.SetDraining()
			ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
			defer cancel()
			graceOver := false
			for _, s := range servers {
				if err := s.ShutdownWithContext(ctx); err != nil {
					graceOver = true
				}
			}
			if graceOver {
				// Streams still open get an in-band error saying why they
				// end, rather than a silent cut when the process exits.
				n := srv.AbortStreams(time.Second)
				log.Warn("shutdown grace period over; closing remaining connections", "streams_cut", n)
			}
			lifecycle(log, "stopped")
			return nil
		}
	}
}

// reload applies a new config file on SIGHUP. An invalid file is logged and
// the running configuration stays. Listen addresses and the cache backend
// are fixed at start; breaker, health, latency and quota state of upstreams
// that keep their name carry over.
func reload(path, listenFlag string, old config.Config, srv *proxy.Server, pol *policy.Policy, be backends, log *slog.Logger) (config.Config, *policy.Policy) {
	reject := func(err error) (config.Config, *policy.Policy) {
		log.Error("reload rejected; keeping the running configuration", "err", err)
		return old, pol
	}
	cfg, err := loadConfig(path, listenFlag)
	if err != nil {
		return reject(err)
	}
	clients, err := buildClients(cfg)
	if err != nil {
		return reject(err)
	}
	popts := policyOptions(cfg)
	popts.Counter, popts.Views, popts.Logger = be.counter, be.views, log
	np, err := pol.Reload(cfg.Upstreams, popts)
	if err != nil {
		return reject(err)
	}
	if cfg.Listen != old.Listen || cfg.AdminListen != old.AdminListen ||
		cfg.ReadTimeout != old.ReadTimeout || cfg.LogLevel != old.LogLevel || cfg.ShutdownGrace != old.ShutdownGrace ||
		!slices.Equal(cfg.Cache.Memcached, old.Cache.Memcached) || cfg.Cache.MaxBytes != old.Cache.MaxBytes ||
		cfg.Cache.Timeout != old.Cache.Timeout || cfg.Cache.MaxItemBytes != old.Cache.MaxItemBytes ||
		cfg.Cache.NearMaxBytes != old.Cache.NearMaxBytes || cfg.Cache.NearTTL != old.Cache.NearTTL {
		log.Warn("reload: listen addresses, read_timeout, log_level, shutdown_grace and the cache backend " +
			"(cache.memcached, max_bytes, timeout, max_item_bytes, near_max_bytes, near_ttl) change only on restart")
	}
	srv.Reload(cfg, clients, np)
	lifecycle(log, "reloaded", "summary", cfg.Summary())
	logWarnings(log, cfg)
	return cfg, np
}

// fasthttpLogger routes fasthttp's own messages into slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "msg", fmt.Sprintf(format, args...))
}

// sharedLeases is the store replicas coalesce identical misses through:
// memcached when configured; nil (in-process coalescing only) with the
// embedded cache, which no other replica sees.
func sharedLeases(be backends) proxy.Leases {
	if m, ok := be.counter.(*cache.Memcached); ok {
		return m
	}
	return nil
}
