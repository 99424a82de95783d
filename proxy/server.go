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
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"switchyard/openai"
	"switchyard/policy"
	"switchyard/upload"
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
	// Leases, the store every replica shares (memcached), coalesces
	// identical misses across replicas (see awaitLease). Nil: coalescing
	// stays within the process (the embedded cache).
	Leases Leases
	// Logger receives the proxy's log lines and sets the level of the
	// request lines. Default slog.Default().
	Logger *slog.Logger
	// LogOutput, when set, is where the per-request line is written,
	// encoded by the proxy itself (the fields and format of Logger's JSON
	// handler, at a fraction of its cost: the line is on every request's
	// path). It must be Logger's output, or lines interleave. Nil: the
	// request line goes through Logger.
	LogOutput io.Writer
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
	keyIDs    []string          // keyIDs[i] names authKeys[i] in cache keys: a hash, never the key
	models    []byte            // the /v1/models answer
	model     map[string][]byte // each /v1/models/{id} answer, by id
	charsUnit map[string]bool   // upstreams whose quota counts characters
	secrets   []string          // upstream and inbound keys (8+ chars), scrubbed from anything an upstream says
	secretsB  [][]byte          // secrets as bytes, made once: scanning every answer must not allocate
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

var redacted = []byte("[redacted]")

// redactBytes is redact for a body; it returns b itself when no key is in it.
func (st *state) redactBytes(b []byte) []byte {
	for _, k := range st.secretsB {
		if bytes.Contains(b, k) {
			b = bytes.ReplaceAll(b, k, redacted)
		}
	}
	return b
}

// scrubAnswer is redactBytes for a successful answer or stream event: an
// upstream that echoes its key in a 200 (a debugging gateway, a model
// repeating a header it was shown) must not hand it to the client or the
// cache. Each scrubbed answer is counted (switchyard_secret_echo_total).
// It returns b itself when no key is in it.
func (st *state) scrubAnswer(b []byte) []byte {
	out := st.redactBytes(b)
	if len(b) > 0 && &out[0] != &b[0] { // redactBytes copies only when it replaced something
		secretEchoTotal.Inc()
	}
	return out
}

// echoesSplitKey reports whether a stored stream's answer, assembled,
// spells a key that no single event held (a model repeating a key token
// by token): scrubAnswer saw each event alone. The assembly runs only when
// the stream holds the start of a key at all.
func (st *state) echoesSplitKey(stream []byte) bool {
	hint := false
	for _, k := range st.secretsB {
		if bytes.Contains(stream, k[:6]) {
			hint = true
			break
		}
	}
	if !hint {
		return false
	}
	answer, err := openai.StreamToCompletion(stream)
	if err != nil {
		return false
	}
	for _, k := range st.secretsB {
		if bytes.Contains(answer, k) {
			return true
		}
	}
	return false
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
	leases   Leases // nil: no coalescing across replicas
	log      *slog.Logger
	logOut   io.Writer // the request line's output, when encoded here
	version  string
	started  time.Time
	idPrefix string
	idSeq    atomic.Uint64
	flights  flights
	watcher  watcher // silent streams whose clients may have left
	storeSem chan struct{}
	keys     *cachekey.Memo // request bodies seen recently, by their bytes
	uploads  *upload.Pool   // the spools of uploads in flight

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
		leases:   o.Leases,
		log:      o.Logger,
		logOut:   o.LogOutput,
		version:  o.Version,
		started:  time.Now(),
		storeSem: make(chan struct{}, 64),
		uploads:  upload.NewPool(upload.PoolOptions{OnHeld: func(d int64) { uploadSpoolBytes.Add(float64(d)) }}),
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
		st.keyIDs = append(st.keyIDs, keyID(k))
		if len(k) >= 8 {
			st.secrets = append(st.secrets, k)
		}
	}
	// Longest first, so a key that contains another is replaced whole.
	sort.Slice(st.secrets, func(i, j int) bool { return len(st.secrets[i]) > len(st.secrets[j]) })
	for _, k := range st.secrets {
		st.secretsB = append(st.secretsB, []byte(k))
	}
	st.models, st.model = modelsList(ups, s.started)
	s.uploads.SetMaxBytes(uploadMaxBytes(&cfg))
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
	// compared as []byte: string(path) == "..." does not allocate. Groq's
	// own base path (/openai/v1) is an alias of /v1 for every route, so a
	// Groq user swaps only the host.
	path := ctx.Path()
	if withAPI && bytes.HasPrefix(path, []byte("/openai/v1/")) {
		path = path[len("/openai"):]
	}
	switch {
	case withAPI && jsonRoutes[string(apiPath(path))] != nil:
		r := jsonRoutes[string(apiPath(path))]
		route = r.label
		if !ctx.IsPost() {
			s.methodNotAllowed(ctx, "POST")
			return
		}
		s.handleAPI(ctx, start, r)
	case withAPI && bytes.HasPrefix(apiPath(path), []byte(storedPrefix)):
		route = routeStoredResponses
		s.handleStoredResponse(ctx, start, apiPath(path))
	case withAPI && uploadRouteOf(path) != nil:
		r := uploadRouteOf(path)
		route = r.label
		if !ctx.IsPost() {
			s.methodNotAllowed(ctx, "POST")
			return
		}
		s.handleUpload(ctx, start, r)
	case withAPI && (string(path) == "/v1/models" || string(path) == "/models"):
		route = routeModels
		st, ok := s.modelsRequest(ctx)
		if !ok {
			return
		}
		ctx.Response.Header.SetContentType("application/json")
		ctx.SetBody(st.models)
	case withAPI && (bytes.HasPrefix(path, []byte("/v1/models/")) || bytes.HasPrefix(path, []byte("/models/"))):
		route = routeModels
		st, ok := s.modelsRequest(ctx)
		if !ok {
			return
		}
		// The id is the rest of the path, slashes included (org/model),
		// as the SDKs send it (percent-encoded; the path is decoded).
		id := path[bytes.Index(path, []byte("/models/"))+len("/models/"):]
		if m, ok := st.model[string(id)]; ok {
			ctx.Response.Header.SetContentType("application/json")
			ctx.SetBody(m)
			return
		}
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("the model %q does not exist or is not served by any configured upstream", truncate(string(id), 200)), typeInvalidRequest, "model", codeModelNotFound)
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
		if withAPI && !s.operatorAllowed(ctx) {
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
		if withAPI && !s.operatorAllowed(ctx) {
			return
		}
		s.handleStatus(ctx)
	default:
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown path %q", truncate(string(path), 200)), typeInvalidRequest, "", codeNotFound)
	}
}

// modelsRequest admits a models request (GET, inbound auth) and returns
// the state to answer from; it has answered itself when ok is false.
func (s *Server) modelsRequest(ctx *fasthttp.RequestCtx) (st *state, ok bool) {
	if !ctx.IsGet() {
		s.methodNotAllowed(ctx, "GET")
		return nil, false
	}
	st = s.st.Load()
	_, ok = s.authorized(ctx, st)
	return st, ok
}

func (s *Server) methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set("Allow", allow)
	writeError(ctx, fasthttp.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; use %s", truncate(string(ctx.Method()), 20), allow), typeInvalidRequest, "", codeMethod)
}

// authorized checks inbound auth (st's auth.keys) and answers 401 itself
// when it fails. It returns the id of the key the client sent ("" without
// auth.keys), which scopes the client's cache entries. Every key is
// compared, in constant time, whichever matches.
func (s *Server) authorized(ctx *fasthttp.RequestCtx, st *state) (scope string, ok bool) {
	if len(st.authKeys) == 0 {
		return "", true
	}
	h := ctx.Request.Header.Peek("Authorization")
	const prefix = "Bearer "
	if len(h) > len(prefix) && bytes.EqualFold(h[:len(prefix)], []byte(prefix)) {
		tok := h[len(prefix):]
		match := -1
		for i, k := range st.authKeys {
			match = subtle.ConstantTimeSelect(subtle.ConstantTimeCompare(tok, k), i, match)
		}
		if match >= 0 {
			return st.keyIDs[match], true
		}
	}
	ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="switchyard"`)
	writeError(ctx, fasthttp.StatusUnauthorized, "invalid or missing API key in Authorization: Bearer", typeAuth, "", codeInvalidAPIKey)
	return "", false
}

// operatorAllowed guards /status and /metrics on the API listener: with
// auth.keys set they need a valid key like the API, since /status names
// every upstream and its failures. On admin_listen they stay open: that
// address is the operator's. It answers 401 itself when it fails.
func (s *Server) operatorAllowed(ctx *fasthttp.RequestCtx) bool {
	_, ok := s.authorized(ctx, s.st.Load())
	return ok
}

// keyID names an inbound key in cache keys: the first 8 bytes of a
// domain-separated SHA-256 of it, in hex. It is stable across replicas
// and restarts (replicas sharing memcached share each client's entries)
// and never the key itself.
func keyID(key string) string {
	sum := sha256.Sum256([]byte("switchyard inbound key\x00" + key))
	return hex.EncodeToString(sum[:8])
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

// modelsList builds the /v1/models answer, one entry per alias configured,
// and each entry alone, by id, for /v1/models/{id}. Pass-through upstreams
// (no models map) serve any name, so they add none.
func modelsList(ups []*upstream.Client, created time.Time) (list []byte, byID map[string][]byte) {
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
	all := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	byID = make(map[string][]byte, len(ids))
	for _, id := range ids {
		m := model{ID: id, Object: "model", Created: created.Unix(), OwnedBy: owners[id]}
		all.Data = append(all.Data, m)
		byID[id] = mustJSON(m)
	}
	return mustJSON(all), byID
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
