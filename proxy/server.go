// Package proxy is Switchyard's request handler: the OpenAI-compatible
// routes, admission (size, JSON sanity, inbound auth, request id), the cache
// lookup and request coalescing, the attempt loop over the ranked upstreams,
// the SSE relay with its commit point, OpenAI-shaped errors, and the per
// request log line and metrics.
//
// Only this package touches *fasthttp.RequestCtx.
package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"switchyard/cachekey"
	"switchyard/config"
	"switchyard/policy"
	"switchyard/upstream"
)

// Cache is what the handler needs of a cache backend. ErrMiss-style misses
// and backend failures are both errors: the handler treats any error as a
// miss and counts the non-miss ones.
type Cache interface {
	Get(key string) ([]byte, error)
	Set(key string, value []byte, ttl time.Duration) error
}

// Options wires a Server.
type Options struct {
	// Config is the validated configuration.
	Config config.Config
	// Upstreams are the clients, one per configured upstream, in config order.
	Upstreams []*upstream.Client
	// Policy ranks upstreams and guards attempts with breakers.
	Policy *policy.Policy
	// Cache stores answers; nil disables caching.
	Cache Cache
	// CacheBackend names the backend for /status ("embedded", "memcached").
	CacheBackend string
	// IsMiss tells a cache miss from a backend error (e.g. errors.Is(err,
	// cache.ErrMiss)). Nil treats every error as a miss.
	IsMiss func(error) bool
	// Logger receives the request log lines. Default slog.Default().
	Logger *slog.Logger
	// Version is reported by /status.
	Version string
}

// state is everything a SIGHUP reload replaces at once. Requests load it
// once and use that snapshot to their end.
type state struct {
	cfg       config.Config
	upstreams []*upstream.Client
	byName    map[string]*upstream.Client
	policy    *policy.Policy
	authKeys  [][]byte
	models    []byte          // the /v1/models answer
	charsUnit map[string]bool // upstreams whose quota counts characters
	secrets   []string        // upstream and inbound keys (8+ chars), scrubbed from anything an upstream says
}

// redact replaces every upstream key in msg: an upstream error message may
// echo the key it was sent, and messages reach logs, /status and clients.
func (st *state) redact(msg string) string {
	for _, k := range st.secrets {
		if strings.Contains(msg, k) {
			msg = strings.ReplaceAll(msg, k, "[redacted]")
		}
	}
	return msg
}

// redactBytes is redact for a body; it returns b itself when no key is in it.
func (st *state) redactBytes(b []byte) []byte {
	for _, k := range st.secrets {
		if bytes.Contains(b, []byte(k)) {
			b = bytes.ReplaceAll(b, []byte(k), []byte("[redacted]"))
		}
	}
	return b
}

// policyNeedsChars reports whether the named upstream's quota is counted in
// characters, so streams must count the characters they relay.
func (st *state) policyNeedsChars(name string) bool { return st.charsUnit[name] }

// Server is the HTTP handler. Create it with New.
type Server struct {
	st       atomic.Pointer[state]
	cache    Cache
	backend  string
	isMiss   func(error) bool
	log      *slog.Logger
	version  string
	started  time.Time
	idPrefix string
	idSeq    atomic.Uint64
	flights  flights
	watcher  watcher // silent streams whose clients may have left
	storeSem chan struct{}
	keys     *cachekey.Memo // request bodies seen recently, by their bytes

	requests  atomic.Int64
	successes atomic.Int64
	hits      atomic.Int64
	misses    atomic.Int64
	draining  atomic.Bool
}

// New returns a Server for o.
func New(o Options) (*Server, error) {
	if len(o.Upstreams) == 0 {
		return nil, errors.New("proxy: no upstreams")
	}
	if o.Policy == nil {
		return nil, errors.New("proxy: no policy")
	}
	s := &Server{
		keys:     cachekey.NewMemo(),
		cache:    o.Cache,
		backend:  o.CacheBackend,
		isMiss:   o.IsMiss,
		log:      o.Logger,
		version:  o.Version,
		started:  time.Now(),
		storeSem: make(chan struct{}, 64),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.isMiss == nil {
		s.isMiss = func(error) bool { return true }
	}
	if s.backend == "" {
		s.backend = "none"
	}
	var seed [6]byte
	_, _ = rand.Read(seed[:])
	s.idPrefix = hex.EncodeToString(seed[:]) + "-"
	s.flights.m = map[string]*flight{}
	s.swap(o.Config, o.Upstreams, o.Policy)
	return s, nil
}

// Reload replaces the configuration, upstream clients and policy. Requests
// in flight finish with the ones they started with.
func (s *Server) Reload(cfg config.Config, ups []*upstream.Client, p *policy.Policy) {
	s.swap(cfg, ups, p)
}

func (s *Server) swap(cfg config.Config, ups []*upstream.Client, p *policy.Policy) {
	st := &state{cfg: cfg, upstreams: ups, policy: p, byName: map[string]*upstream.Client{}, charsUnit: map[string]bool{}}
	for _, u := range ups {
		st.byName[u.Name] = u
		metricsFor(u.Name)
	}
	for _, u := range cfg.Upstreams {
		st.charsUnit[u.Name] = u.Quota.Unit == config.UnitChars
		if len(u.APIKey) >= 8 { // shorter "keys" are placeholders; replacing them would mangle words
			st.secrets = append(st.secrets, u.APIKey)
		}
	}
	for _, k := range cfg.Auth.Keys {
		st.authKeys = append(st.authKeys, []byte(k))
		if len(k) >= 8 {
			st.secrets = append(st.secrets, k)
		}
	}
	// Longest first, so a key that contains another is replaced whole.
	sort.Slice(st.secrets, func(i, j int) bool { return len(st.secrets[i]) > len(st.secrets[j]) })
	st.models = modelsList(ups, s.started)
	s.st.Store(st)
}

// SetDraining makes /healthz answer 503 so load balancers stop sending
// traffic while the server shuts down.
func (s *Server) SetDraining() { s.draining.Store(true) }

// Handler serves every route: the API, /healthz, and — unless they are on
// the admin listener — /metrics and /status.
func (s *Server) Handler(withAdmin bool) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		s.serve(ctx, withAdmin, true)
	}
}

// AdminHandler serves /metrics, /status and /healthz only.
func (s *Server) AdminHandler() fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		s.serve(ctx, true, false)
	}
}

func (s *Server) serve(ctx *fasthttp.RequestCtx, withAdmin, withAPI bool) {
	start := time.Now()
	route := routeOther
	defer func() {
		if r := recover(); r != nil {
			panicsTotal.Inc()
			s.log.Error("panic in handler", "panic", fmt.Sprint(r), "path", string(ctx.Path()))
			ctx.ResetBody()
			writeError(ctx, fasthttp.StatusInternalServerError, "internal error", typeServer, "", codeInternal)
		}
		requestsCounter(route, ctx.Response.StatusCode()).Inc()
		routeDurations[route].UpdateDuration(start)
	}()
	path := ctx.Path() // compared as []byte: string(path) == "..." does not allocate
	switch {
	case withAPI && (string(path) == "/v1/chat/completions" || string(path) == "/chat/completions"):
		route = routeChat
		if !ctx.IsPost() {
			s.methodNotAllowed(ctx, "POST")
			return
		}
		s.handleChat(ctx, start)
	case withAPI && (string(path) == "/v1/models" || string(path) == "/models"):
		route = routeModels
		if !ctx.IsGet() {
			s.methodNotAllowed(ctx, "GET")
			return
		}
		if !s.authorized(ctx) {
			return
		}
		ctx.Response.Header.SetContentType("application/json")
		ctx.SetBody(s.st.Load().models)
	case string(path) == "/healthz":
		route = routeHealthz
		if !ctx.IsGet() && !ctx.IsHead() {
			s.methodNotAllowed(ctx, "GET")
			return
		}
		ctx.Response.Header.SetContentType("application/json")
		if s.draining.Load() {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			ctx.SetBodyString(`{"status":"draining"}`)
			return
		}
		ctx.SetBodyString(`{"status":"ok"}`)
	case withAdmin && string(path) == "/metrics":
		route = routeMetrics
		if !ctx.IsGet() {
			s.methodNotAllowed(ctx, "GET")
			return
		}
		ctx.Response.Header.SetContentType("text/plain; version=0.0.4; charset=utf-8")
		metrics.WritePrometheus(ctx, true)
	case withAdmin && string(path) == "/status":
		route = routeStatus
		if !ctx.IsGet() {
			s.methodNotAllowed(ctx, "GET")
			return
		}
		s.handleStatus(ctx)
	default:
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown path %q", truncate(string(path), 200)), typeInvalidRequest, "", codeNotFound)
	}
}

func (s *Server) methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set("Allow", allow)
	writeError(ctx, fasthttp.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; use %s", truncate(string(ctx.Method()), 20), allow), typeInvalidRequest, "", codeMethod)
}

// authorized checks inbound auth (auth.keys) in constant time and answers
// 401 itself when it fails.
func (s *Server) authorized(ctx *fasthttp.RequestCtx) bool {
	keys := s.st.Load().authKeys
	if len(keys) == 0 {
		return true
	}
	h := ctx.Request.Header.Peek("Authorization")
	const prefix = "Bearer "
	if len(h) > len(prefix) && bytes.EqualFold(h[:len(prefix)], []byte(prefix)) {
		tok := h[len(prefix):]
		ok := 0
		for _, k := range keys {
			ok |= subtle.ConstantTimeCompare(tok, k)
		}
		if ok == 1 {
			return true
		}
	}
	ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="switchyard"`)
	writeError(ctx, fasthttp.StatusUnauthorized, "invalid or missing API key in Authorization: Bearer", typeAuth, "", codeInvalidAPIKey)
	return false
}

// ErrorHandler answers fasthttp's own request errors (body too large,
// malformed request, header overflow, timeouts) in OpenAI's error shape
// instead of fasthttp's plain-text pages. It only answers: the server's
// Server.ErrorHandler also counts, logs and drains (see reject.go).
func ErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	r := classifyRejection(err)
	writeError(ctx, r.status, r.message, typeInvalidRequest, "", r.code)
}

// requestID returns the client's X-Request-Id when it is a sane token
// (1-128 characters of [A-Za-z0-9._:-]), else a new one.
func (s *Server) requestID(ctx *fasthttp.RequestCtx) string {
	if id := ctx.Request.Header.Peek("X-Request-Id"); validRequestID(id) {
		return string(id)
	}
	var buf [40]byte
	b := append(buf[:0], s.idPrefix...)
	return string(strconv.AppendUint(b, s.idSeq.Add(1), 36))
}

func validRequestID(id []byte) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// modelsList builds the /v1/models answer: one entry per alias configured.
// Pass-through upstreams (no models map) serve any name, so they add none.
func modelsList(ups []*upstream.Client, created time.Time) []byte {
	owners := map[string]string{}
	for _, u := range ups {
		for _, a := range u.Aliases() {
			if _, ok := owners[a]; !ok {
				owners[a] = u.Provider
			}
		}
	}
	ids := make([]string, 0, len(owners))
	for id := range owners {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, id := range ids {
		list.Data = append(list.Data, model{ID: id, Object: "model", Created: created.Unix(), OwnedBy: owners[id]})
	}
	return mustJSON(list)
}

// flights coalesces identical concurrent cache misses.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("BUG: " + err.Error())
	}
	return b
}
