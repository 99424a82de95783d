// Package config is Switchyard's configuration: the YAML schema, its
// defaults, ${VAR} expansion from the environment, strict decoding and
// validation.
//
// Loading happens in three steps, each usable alone: Default returns the
// built-in defaults, Parse decodes a YAML document over them (unknown keys are
// an error naming the key) and validates the result, and Load only opens the
// file and calls Parse. Every validation error names the YAML path of the bad
// field, e.g. "upstreams[1].base_url: must be an http(s) URL".
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"switchyard/openai"
)

// Provider names accepted in upstreams[].provider.
const (
	ProviderGroq        = "groq"
	ProviderHuggingFace = "huggingface"
	ProviderOpenAI      = "openai"
)

// Quota units and periods accepted in upstreams[].quota.
const (
	UnitRequests = "requests"
	UnitTokens   = "tokens"
	UnitChars    = "chars"
	PeriodDay    = "day"
	PeriodMonth  = "month"
)

// Stream commit modes accepted in streaming.commit.
const (
	CommitFirstEvent = "first_event"
	CommitComplete   = "complete"
)

// DefaultBaseURLs maps each provider to the base URL used when an upstream
// leaves base_url empty. The generic "openai" provider has no default besides
// OpenAI's own API.
var DefaultBaseURLs = map[string]string{
	ProviderGroq:        "https://api.groq.com/openai/v1",
	ProviderHuggingFace: "https://router.huggingface.co/v1",
	ProviderOpenAI:      "https://api.openai.com/v1",
}

// DefaultForwardHeaders maps each provider to the client request headers
// passed through to it when an upstream leaves forward_headers out. Hugging
// Face bills the organization named in X-HF-Bill-To (Team and Enterprise
// plans), so a client may choose it per request.
var DefaultForwardHeaders = map[string][]string{
	ProviderHuggingFace: {"X-HF-Bill-To"},
}

// DefaultUnsupportedParams maps each provider to the top-level chat request
// parameters it answers 400 to, used when an upstream leaves
// unsupported_params out. Groq documents n (only 1 is accepted), logprobs,
// top_logprobs and logit_bias as unsupported.
var DefaultUnsupportedParams = map[string][]string{
	ProviderGroq: {"n", "logprobs", "top_logprobs", "logit_bias"},
}

// DefaultEndpoints maps each provider to the API endpoints (paths under
// /v1, see openai.Endpoints) its upstreams serve when they leave endpoints
// out:
//   - groq: chat/completions, responses (beta), audio/transcriptions and
//     audio/translations (Whisper); no embeddings
//     (https://console.groq.com/docs/openai);
//   - huggingface (the router): chat/completions and responses
//     (https://huggingface.co/docs/inference-providers);
//   - openai (any OpenAI-compatible server): chat/completions, responses,
//     embeddings and both audio endpoints.
//
// The legacy completions endpoint is served only where endpoints lists it.
var DefaultEndpoints = map[string][]string{
	ProviderGroq:        {"chat/completions", "responses", "audio/transcriptions", "audio/translations"},
	ProviderHuggingFace: {"chat/completions", "responses"},
	ProviderOpenAI:      {"chat/completions", "responses", "embeddings", "audio/transcriptions", "audio/translations"},
}

// MaxRetryAfterLimit is the largest retry.max_retry_after accepted: a
// longer wait holds the client's request (and a connection slot) for longer
// than failing over costs.
const MaxRetryAfterLimit = 60 * time.Second

// The smallest timeouts accepted. Below them a timeout no longer bounds a
// misbehaving peer but fails ordinary traffic: every request, memcached
// operation or upstream call would time out, which a typo such as 1ns or
// 30ms-for-30s would do silently.
const (
	// MinReadTimeout is the smallest read_timeout: a client on the same
	// host or pod (the sidecar's client) sends a request well within it.
	MinReadTimeout = 100 * time.Millisecond
	// MinCacheTimeout is the smallest cache.timeout: a few memcached
	// round trips on a local network.
	MinCacheTimeout = 10 * time.Millisecond
	// MinUpstreamTimeout is the smallest upstreams[].timeout,
	// first_token_timeout and idle_timeout: no model answers sooner.
	MinUpstreamTimeout = 100 * time.Millisecond
)

// reservedHeaders maps the request headers that may not be configured
// (lower case) to why: the proxy sets them itself (identity, framing, body
// encoding, the Accept it chooses per request, its request id), or they are
// hop-by-hop, belonging to one connection and never relayed.
var reservedHeaders = map[string]string{
	"authorization":       "is set by the proxy from api_key",
	"host":                "is set by the proxy",
	"content-length":      "is set by the proxy",
	"content-type":        "is set by the proxy",
	"content-encoding":    "is set by the proxy",
	"accept":              "is set by the proxy",
	"accept-encoding":     "is set by the proxy",
	"x-request-id":        "is set by the proxy",
	"transfer-encoding":   "is a hop-by-hop header",
	"connection":          "is a hop-by-hop header",
	"keep-alive":          "is a hop-by-hop header",
	"proxy-connection":    "is a hop-by-hop header",
	"proxy-authorization": "is a hop-by-hop header",
	"proxy-authenticate":  "is a hop-by-hop header",
	"te":                  "is a hop-by-hop header",
	"trailer":             "is a hop-by-hop header",
	"upgrade":             "is a hop-by-hop header",
}

// ReservedHeader reports whether name (any case) is a header that
// upstreams[].headers and upstreams[].forward_headers may not name: one
// the proxy sets itself (Authorization, Host, Content-Length, Content-Type,
// Content-Encoding, Accept, Accept-Encoding, X-Request-Id) or a hop-by-hop
// header (Connection, Keep-Alive, Proxy-Connection, Proxy-Authorization,
// Proxy-Authenticate, TE, Trailer, Transfer-Encoding, Upgrade).
func ReservedHeader(name string) bool {
	_, ok := reservedHeaders[strings.ToLower(name)]
	return ok
}

// requiredParams are the chat request parameters every request carries;
// an upstream that cannot take them cannot serve at all.
var requiredParams = map[string]bool{"model": true, "messages": true, "stream": true}

// Config is the whole configuration file.
type Config struct {
	// Listen is the address the proxy serves on. Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// AdminListen, when set, serves /metrics and /status on a separate
	// address (so the app container cannot read them). Default "": those
	// endpoints are on Listen. It may not collide with Listen: the same
	// non-zero port on the same or a wildcard host is an error.
	AdminListen string `yaml:"admin_listen"`
	// MaxBodyBytes is the largest request body accepted; larger bodies get
	// 413. Default 10485760 (10 MiB).
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxUploadBytes is the largest audio upload accepted (the multipart
	// body of /v1/audio/transcriptions and translations); larger uploads
	// get an OpenAI-shaped 413. Default 26214400 (25 MiB, Groq's limit).
	MaxUploadBytes int `yaml:"max_upload_bytes"`
	// MaxResponseBytes caps an upstream's plain answer, and a stream read
	// whole before it is sent (streaming.commit: complete): an answer over
	// it is an upstream failure (fail over), not something to relay. A
	// plain answer is held once, in a buffer of its size. Default 33554432
	// (32 MiB); at least 65536.
	MaxResponseBytes int `yaml:"max_response_bytes"`
	// ShutdownGrace is how long in-flight requests and streams may run after
	// SIGTERM before the process exits anyway. Default 30s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// ReadTimeout bounds how long a client may take to send a whole request
	// (headers and body), counted from its first byte on a kept-alive
	// connection and from the connection's accept for its first request; a
	// client that trickles bytes (slowloris) is cut off. Default 30s; at
	// least 100ms (MinReadTimeout).
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds each write of an answer to a client: a plain
	// answer must be written within it, and a stream's client must take
	// each event within it. A client that stops reading is cut after it,
	// and its stream's upstream released (logged as a client abort).
	// Default 60s; at least 1s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`

	Cache     Cache      `yaml:"cache"`
	Breaker   Breaker    `yaml:"breaker"`
	Routing   Routing    `yaml:"routing"`
	Streaming Streaming  `yaml:"streaming"`
	Auth      Auth       `yaml:"auth"`
	Upstreams []Upstream `yaml:"upstreams"`

	// Warnings are problems Parse found that do not stop the proxy, each
	// naming its YAML path and never quoting a value: an api_key written in
	// the file instead of read from the environment. The caller reports
	// them (main logs each at warn on start and reload; -check prints them
	// to stderr). They are not part of the YAML schema.
	Warnings []string `yaml:"-"`
}

// Cache configures the response cache.
type Cache struct {
	// Memcached lists memcached servers ("host:port"); keys are sharded
	// across them. Empty (the default) selects the embedded in-process cache.
	Memcached []string `yaml:"memcached"`
	// TTL is how long an answer stays cached. Default 720h (30 days).
	TTL time.Duration `yaml:"ttl"`
	// Namespace prefixes every cache key ("<namespace>:v1:<hash>"), so
	// several deployments can share one memcached. Default "switchyard".
	Namespace string `yaml:"namespace"`
	// MaxBytes bounds the embedded cache's memory. Default 268435456 (256 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// Timeout bounds each memcached operation. Default 100ms, at least
	// 10ms (MinCacheTimeout); a slow or dead memcached costs at most this,
	// then its breaker opens.
	Timeout time.Duration `yaml:"timeout"`
	// MaxItemBytes is memcached's item size limit (its -I flag). Larger
	// answers are compressed, and skipped if still too large. Default 1048576.
	MaxItemBytes int `yaml:"max_item_bytes"`
	// NearMaxBytes bounds the near cache: a small in-process LRU in front of
	// memcached that answers repeated hits without a network round trip. It
	// only matters when Memcached is set. Default 16777216 (16 MiB); 0
	// turns the near cache off (every hit is a memcached round trip);
	// otherwise at least 1048576. An answer larger than NearMaxBytes/16 is
	// only kept in memcached.
	NearMaxBytes int64 `yaml:"near_max_bytes"`
	// NearTTL is how long the near cache keeps an answer, and so how long
	// after memcached dropped it (expiry, eviction, flush) or another
	// replica replaced it this replica may still serve it. It only matters
	// when Memcached is set and NearMaxBytes is not 0. Default 10s; must be
	// positive.
	NearTTL time.Duration `yaml:"near_ttl"`
	// SharedAcrossKeys lets clients with different auth.keys share the
	// entries of identical request bodies. Default false: with auth.keys
	// set, every entry is scoped to the inbound key that stored it (a
	// hash of the key is part of the cache key), so one client can
	// neither read another's answers nor learn from Age when it asked.
	// Entries named by X-Cache-Key stay scoped per key either way. Without
	// auth.keys there is one scope and it has no effect. Risk when true:
	// a client learns that another asked the same question, and when.
	SharedAcrossKeys bool `yaml:"shared_across_keys"`
}

// Breaker configures the per-deployment circuit breakers.
type Breaker struct {
	// FailureThreshold consecutive failures open the breaker. Default 5.
	FailureThreshold int `yaml:"failure_threshold"`
	// Delay is how long an open breaker waits before letting a trial call
	// through (half-open). Default 60s.
	Delay time.Duration `yaml:"delay"`
	// SuccessThreshold successful trial calls close it again. Default 1.
	SuccessThreshold int `yaml:"success_threshold"`
}

// Routing configures how upstreams are ranked.
type Routing struct {
	// Weights of the score health*w.health + quota*w.quota + latency*w.latency.
	// Defaults 0.4, 0.3, 0.3.
	Weights Weights `yaml:"weights"`
	// HealthHalfLife is how fast an upstream's failures fade from its
	// health score: each counts fully for breaker.delay, then its weight
	// halves every HealthHalfLife, so an upstream that failed and
	// recovered gets traffic back even while a healthy peer takes it all.
	// Default 0: half of breaker.delay (30s). Must not be negative.
	HealthHalfLife time.Duration `yaml:"health_half_life"`
}

// Weights are the score weights; each is in [0,1] and they may not all be 0.
type Weights struct {
	Health  float64 `yaml:"health"`
	Quota   float64 `yaml:"quota"`
	Latency float64 `yaml:"latency"`
}

// Streaming configures how streamed answers are relayed.
type Streaming struct {
	// Commit is first_event (default: the client's stream starts with the
	// upstream's first event; a later failure ends it with an in-band error)
	// or complete (the whole upstream stream is read before anything is sent,
	// so any failure fails over invisibly).
	Commit string `yaml:"commit"`
}

// Auth configures optional inbound authentication.
type Auth struct {
	// Keys, when non-empty, are the bearer tokens clients must send in
	// Authorization. Default empty: no inbound auth.
	Keys []string `yaml:"keys"`
}

// Upstream is one OpenAI-compatible server with one API key.
type Upstream struct {
	// Name identifies the upstream in logs, metrics and /status. Required,
	// unique, [A-Za-z0-9_.-].
	Name string `yaml:"name"`
	// Provider is groq, huggingface or openai (any OpenAI-compatible server).
	Provider string `yaml:"provider"`
	// BaseURL is the API root including /v1. Default per provider.
	BaseURL string `yaml:"base_url"`
	// APIKey is sent as "Authorization: Bearer <key>". Empty (also an unset
	// ${VAR}): the upstream is unconfigured and skipped (reported in
	// /status), not an error. A key written in the file is a warning.
	APIKey string `yaml:"api_key"`
	// Priority: lower is tried first; equal priorities are ranked by score.
	// Default 0.
	Priority int `yaml:"priority"`
	// Timeout is the whole-response deadline for non-streaming calls.
	// Default 60s (also for 0); at least 100ms (MinUpstreamTimeout).
	Timeout time.Duration `yaml:"timeout"`
	// FirstTokenTimeout bounds, for streams, the wait for headers and the
	// first event. Default 10s (also for 0); at least 100ms.
	FirstTokenTimeout time.Duration `yaml:"first_token_timeout"`
	// IdleTimeout bounds, for streams, the wait between two events.
	// Default 10s (also for 0); at least 100ms.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Models maps client-facing aliases to this upstream's model names. When
	// set, the upstream serves exactly these aliases; when empty it serves
	// any model, passed unchanged.
	Models map[string]string `yaml:"models"`
	// Quota is the upstream's own allowance; Limit 0 (default) means unknown.
	Quota Quota `yaml:"quota"`
	// QuotaGroup makes upstreams share one quota count and one view of the
	// rate-limit headers (Groq limits apply per organization, not per key).
	QuotaGroup string `yaml:"quota_group"`
	// MaxResponseBytes is the top-level max_response_bytes, copied here
	// by Parse for the upstream's client (not a key of its own).
	MaxResponseBytes int `yaml:"-"`
	// Retry retries transient failures on this same upstream before failing
	// over. Default: no retry.
	Retry Retry `yaml:"retry"`
	// Headers are static headers sent to this upstream on every request,
	// e.g. "X-HF-Bill-To: my-org" to bill a Hugging Face organization.
	// Values may use ${VAR}; a header whose value is empty (an unset
	// variable) is not sent. Names must be HTTP tokens and unique in any
	// case, and may not be headers the proxy sets itself or hop-by-hop ones
	// (see ReservedHeader); values may not contain CR, LF or NUL. A header
	// also named in forward_headers keeps this value: the client cannot
	// override it. Default: none.
	Headers map[string]string `yaml:"headers"`
	// ForwardHeaders names client request headers passed through to this
	// upstream when the client sends them with a non-empty value. Left out
	// (or null), the provider default applies: [X-HF-Bill-To] for
	// huggingface, none for groq and openai (see DefaultForwardHeaders);
	// an explicit [] forwards none. The same names as in headers are
	// refused, so Authorization is never forwarded: the upstream always
	// gets this upstream's api_key.
	ForwardHeaders []string `yaml:"forward_headers"`
	// UnsupportedParams are top-level chat request parameters this upstream
	// answers 400 to, so a request using one skips this upstream (or, with
	// drop_params, is sent without them) instead of spending an attempt on
	// a certain failure. Left out (or null), the provider default applies:
	// [n, logprobs, top_logprobs, logit_bias] for groq, none otherwise (see
	// DefaultUnsupportedParams); an explicit [] means none. Names must be
	// non-empty and unique, and may not be model, messages or stream.
	UnsupportedParams []string `yaml:"unsupported_params"`
	// Endpoints are the API endpoints this upstream serves, as paths under
	// /v1: chat/completions, completions (legacy), responses, embeddings,
	// audio/transcriptions, audio/translations. A request to an endpoint
	// goes only to the upstreams that list it. Left out (or null), the
	// provider default applies (see DefaultEndpoints); names must be
	// known and unique.
	Endpoints []string `yaml:"endpoints"`
	// DropParams removes unsupported_params from a request sent to this
	// upstream instead of skipping the upstream. Default false. The risk:
	// the answer then silently lacks what was asked for (no logprobs, one
	// choice instead of n).
	DropParams bool `yaml:"drop_params"`
}

// Quota is an allowance per period.
type Quota struct {
	// Limit per period; 0 means no local limit.
	Limit int64 `yaml:"limit"`
	// Unit is requests (default), tokens or chars.
	Unit string `yaml:"unit"`
	// Period is day or month, in UTC. Default day, except month for
	// provider huggingface (its credits are monthly). A 402 (credits
	// exhausted) disables the upstream's quota group until the period ends.
	Period string `yaml:"period"`
	// DefaultMaxTokens is the completion size reserved, before the call,
	// for a request that sets neither max_tokens nor
	// max_completion_tokens (units tokens and chars; 4 characters count
	// as a token). Default 0: 1024. The reservation is reconciled with the
	// usage the answer reports; too small a value lets concurrent requests
	// overshoot the limit by the difference, too large a one turns
	// requests away while the last of the quota is still there.
	DefaultMaxTokens int64 `yaml:"default_max_tokens"`
}

// Retry is the same-upstream retry policy.
type Retry struct {
	// Attempts is the number of extra attempts. Default 0.
	Attempts int `yaml:"attempts"`
	// Backoff is the first delay, doubled each retry. Default 200ms.
	Backoff time.Duration `yaml:"backoff"`
	// MaxRetryAfter: a 429 whose retry-after-ms or Retry-After asks for a
	// wait of at most this long is waited out and retried on this same
	// upstream instead of failing over; a longer wait fails over at once.
	// Default 0: never wait. At most 60s (MaxRetryAfterLimit): the client's
	// answer is late by up to this long.
	MaxRetryAfter time.Duration `yaml:"max_retry_after"`
}

// Default returns the built-in defaults, before any file is read.
func Default() Config {
	return Config{
		Listen:           "127.0.0.1:8080",
		MaxBodyBytes:     10 << 20,
		MaxUploadBytes:   25 << 20,
		MaxResponseBytes: 32 << 20,
		ShutdownGrace:    30 * time.Second,
		ReadTimeout:      30 * time.Second,
		WriteTimeout:     60 * time.Second,
		LogLevel:         "info",
		Cache: Cache{
			TTL:          720 * time.Hour,
			Namespace:    "switchyard",
			MaxBytes:     256 << 20,
			Timeout:      100 * time.Millisecond,
			MaxItemBytes: 1 << 20,
			NearMaxBytes: 16 << 20,
			NearTTL:      10 * time.Second,
		},
		Breaker:   Breaker{FailureThreshold: 5, Delay: 60 * time.Second, SuccessThreshold: 1},
		Routing:   Routing{Weights: Weights{Health: 0.4, Quota: 0.3, Latency: 0.3}},
		Streaming: Streaming{Commit: CommitFirstEvent},
	}
}

// upstreamDefaults fills the per-upstream defaults that depend on nothing
// but the upstream itself.
func (u *Upstream) applyDefaults() {
	if u.BaseURL == "" {
		u.BaseURL = DefaultBaseURLs[u.Provider]
	}
	u.BaseURL = strings.TrimRight(u.BaseURL, "/")
	if u.Timeout == 0 {
		u.Timeout = 60 * time.Second
	}
	if u.FirstTokenTimeout == 0 {
		u.FirstTokenTimeout = 10 * time.Second
	}
	if u.IdleTimeout == 0 {
		u.IdleTimeout = 10 * time.Second
	}
	if u.Quota.Unit == "" {
		u.Quota.Unit = UnitRequests
	}
	if u.Quota.Period == "" {
		u.Quota.Period = PeriodDay
		if u.Provider == ProviderHuggingFace {
			// HuggingFace's allowance is monthly credits: a 402 lasts
			// until the month ends.
			u.Quota.Period = PeriodMonth
		}
	}
	if u.Retry.Backoff == 0 {
		u.Retry.Backoff = 200 * time.Millisecond
	}
	// nil means "left out": the provider default. An explicit [] (yaml.v3
	// decodes it as an empty, non-nil slice) stays empty. Either way the
	// result is non-nil, so applying defaults twice changes nothing, and
	// each upstream gets its own copy.
	if u.ForwardHeaders == nil {
		u.ForwardHeaders = append([]string{}, DefaultForwardHeaders[u.Provider]...)
	}
	if u.UnsupportedParams == nil {
		u.UnsupportedParams = append([]string{}, DefaultUnsupportedParams[u.Provider]...)
	}
	if u.Endpoints == nil {
		u.Endpoints = append([]string{}, DefaultEndpoints[u.Provider]...)
	}
}

// Configured reports whether the upstream has an API key.
func (u *Upstream) Configured() bool { return u.APIKey != "" }

// Load reads the file at path and parses it with Parse.
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	cfg, err := Parse(f)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes a YAML document over Default, expanding ${VAR} and
// ${VAR:-default} in every scalar value from the environment, rejecting
// unknown keys, and validates the result. An expanded value is always one
// scalar: it cannot add keys or list items. A reference inside a flow
// mapping or list ({limit: ${X}}) is a YAML syntax error, as its "}" ends
// the mapping; write such fields in block style.
//
// A variable that is unset or empty takes the reference's default. A
// reference without one (${VAR}) says the value comes from the
// environment, so an unset or empty VAR is an error naming the path and
// the variable ("listen: ${LISTEN} is not set in the environment and has
// no default (line 3)"): a deployment that forgot a variable must not start
// on a built-in default (listen falling back to 127.0.0.1:8080) or on half
// a value (${HOST}:8080 becoming :8080, every interface). The exceptions
// are the fields where empty is a documented state, not a default:
// upstreams[].api_key (no key: the upstream is unconfigured and skipped)
// and upstreams[].headers values (empty: the header is not sent). Anywhere
// else, ${VAR:-} makes a variable optional: empty then keeps the default.
// A malformed reference (${1X}, an unclosed ${) is an error naming its
// path.
//
// An api_key no part of which comes from the environment (written in the
// file, or a ${VAR:-default} that fell back to its default) is valid but
// adds a warning to Config.Warnings naming its path.
func Parse(r io.Reader) (Config, error) {
	return parse(r, os.LookupEnv)
}

func parse(r io.Reader, lookup func(string) (string, bool)) (Config, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return Config{}, fmt.Errorf("reading: %w", err)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, errors.New("empty config: at least one upstream is required")
		}
		return Config{}, err // yaml.v3 errors already read "yaml: line N: ..."
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil && !isEmptyDoc(&next) {
		return Config{}, fmt.Errorf("line %d: a second YAML document (after ---) is not allowed", next.Line)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	if isEmptyDoc(&doc) {
		return Config{}, errors.New("empty config: at least one upstream is required")
	}
	// Variables are expanded in the parsed tree, in scalar values only, and
	// the tree is decoded as it is (never re-serialized), so an expanded
	// value can never change the document's structure (a value containing
	// ": " or " #") and line numbers in errors are those of the file.
	ex := expander{lookup: lookup}
	ex.node(&doc, "")
	if len(ex.errs) > 0 {
		return Config{}, errors.Join(ex.errs...)
	}
	// Node.Decode has no KnownFields option: checkNode rejects unknown keys
	// and undecodable values first, naming their YAML path.
	var errs []error
	checkNode(doc.Content[0], reflect.TypeFor[Config](), "", map[checked]bool{}, &errs)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	cfg := Default()
	if err := doc.Decode(&cfg); err != nil {
		return Config{}, err
	}
	for i := range cfg.Upstreams {
		cfg.Upstreams[i].MaxResponseBytes = cfg.MaxResponseBytes
		cfg.Upstreams[i].applyDefaults()
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	cfg.Warnings = ex.warnings
	return cfg, nil
}

// isEmptyDoc reports whether a decoded document holds nothing: no content,
// or a lone null (a file with only "---" or comments).
func isEmptyDoc(d *yaml.Node) bool {
	if len(d.Content) == 0 {
		return true
	}
	n := d.Content[0]
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// Paths whose value may be empty when their variable is unset (see Parse),
// and the path of an upstream's key.
var (
	emptyAllowedPath = regexp.MustCompile(`^upstreams\[[0-9]+\]\.(api_key|headers\..+)$`)
	apiKeyPath       = regexp.MustCompile(`^upstreams\[[0-9]+\]\.api_key$`)
)

// expander expands ${VAR} references in a parsed document, collecting an
// error for each malformed reference and each required variable that is
// unset or empty, and a warning for each api_key written in the file. Every
// message names the scalar's YAML path and line, never a value: the file
// and the environment hold secrets.
type expander struct {
	lookup   func(string) (string, bool)
	errs     []error
	warnings []string
}

// node expands every scalar under n, whose YAML path is path. An alias is
// not followed: its anchor is expanded (and reported) where it is defined.
func (e *expander) node(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			e.node(c, path)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			e.node(k, path) // a key is reported at its mapping's path, as checkNode does
			if k.Kind == yaml.ScalarNode && k.Value == "<<" {
				// The keys of a merged mapping, or of a list of them,
				// belong to this mapping (see checkMerge).
				if v.Kind == yaml.SequenceNode {
					for _, c := range v.Content {
						e.node(c, path)
					}
				} else {
					e.node(v, path)
				}
				continue
			}
			e.node(v, join(path, k.Value))
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			e.node(c, fmt.Sprintf("%s[%d]", path, i))
		}
	case yaml.ScalarNode:
		e.scalar(n, path)
	}
}

func (e *expander) scalar(n *yaml.Node, path string) {
	where := path
	if where == "" {
		where = "(top level)"
	}
	fromEnv := false // some part of the value came from the environment
	if strings.Contains(n.Value, "${") {
		// Check the file's text, not the result: an environment value may
		// itself contain "${" (and must not end up in an error message).
		if strings.Contains(varRef.ReplaceAllString(n.Value, ""), "${") {
			e.errs = append(e.errs, fmt.Errorf("%s: malformed variable reference: use ${NAME} or ${NAME:-default} (line %d)", where, n.Line))
			return
		}
		required := !emptyAllowedPath.MatchString(path)
		n.Value = varRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			sub := varRef.FindStringSubmatch(m)
			v, set := e.lookup(sub[1])
			if v != "" {
				fromEnv = true
				return v
			}
			if required && sub[2] == "" { // no ":-default"
				state := "is not set in the environment"
				if set {
					state = "is empty in the environment"
				}
				e.errs = append(e.errs, fmt.Errorf("%s: ${%s} %s and has no default (line %d)", where, sub[1], state, n.Line))
			}
			return sub[3]
		})
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) == 0 {
			n.Tag = "" // let the expanded text resolve to its own type (8080 is an int)
			if n.Value != "" && n.ShortTag() == "!!null" {
				// A value spelled "null" or "~" is that text; only an
				// empty expansion means "not set".
				n.Tag = "!!str"
			}
		}
	}
	if !fromEnv && n.Value != "" && n.ShortTag() != "!!null" && apiKeyPath.MatchString(path) {
		e.warnings = append(e.warnings, fmt.Sprintf("%s: the key is written in the config file (line %d), so anyone who can read the file can use it; "+
			"keep it in the environment instead (api_key: ${VAR})", path, n.Line))
	}
}

// checked is one (node, type) pair already visited by checkNode: an anchor
// used by several aliases is checked once, and a self-referencing alias
// does not loop (Decode then reports it).
type checked struct {
	n *yaml.Node
	t reflect.Type
}

var durationType = reflect.TypeFor[time.Duration]()

// checkNode appends an error for every mapping key of n that has no field in
// t and every scalar that does not decode into its field, each naming its
// YAML path and line: "upstreams[0].timout: unknown key (line 12)".
func checkNode(n *yaml.Node, t reflect.Type, path string, seen map[checked]bool, errs *[]error) {
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return
		}
		n = n.Alias
	}
	if seen[checked{n, t}] {
		return
	}
	seen[checked{n, t}] = true
	where := path
	if where == "" {
		where = "(top level)"
	}
	bad := func(n *yaml.Node, format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%s: %s (line %d)", where, fmt.Sprintf(format, args...), n.Line))
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // null keeps the default
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			bad(n, "must be a duration such as 30s, 500ms or 1h")
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			// The value is not quoted: it may come from the environment.
			bad(n, "must be a duration such as 30s, 500ms or 1h")
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad(n, "must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.Kind == yaml.ScalarNode { // merge key
				checkMerge(v, t, path, seen, errs)
				continue
			}
			if k.Kind != yaml.ScalarNode {
				bad(k, "keys must be plain names")
				continue
			}
			f, ok := fieldByKey(t, k.Value)
			if !ok {
				*errs = append(*errs, fmt.Errorf("%s: unknown key (line %d)", join(path, k.Value), k.Line))
				continue
			}
			checkNode(v, f.Type, join(path, k.Value), seen, errs)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad(n, "must be a list")
			return
		}
		for i, c := range n.Content {
			checkNode(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), seen, errs)
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			bad(n, "must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.Kind == yaml.ScalarNode {
				checkMerge(v, t, path, seen, errs)
				continue
			}
			checkNode(k, t.Key(), path, seen, errs)
			checkNode(v, t.Elem(), join(path, k.Value), seen, errs)
		}
	default:
		// yaml.v3 would truncate 1.5 into an int field; require an integer.
		isInt := t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64
		if n.Kind != yaml.ScalarNode || (isInt && n.ShortTag() != "!!int") || n.Decode(reflect.New(t).Interface()) != nil {
			switch t.Kind() {
			case reflect.Int, reflect.Int64:
				bad(n, "must be an integer")
			case reflect.Float64:
				bad(n, "must be a number")
			case reflect.Bool:
				bad(n, "must be true or false")
			default:
				bad(n, "must be a %s", t.Kind())
			}
		}
	}
}

// checkMerge checks the value of a "<<" merge key: a mapping or a list of
// mappings (usually aliases), each merged into a t.
func checkMerge(v *yaml.Node, t reflect.Type, path string, seen map[checked]bool, errs *[]error) {
	if v.Kind == yaml.SequenceNode {
		for _, c := range v.Content {
			checkNode(c, t, path, seen, errs)
		}
		return
	}
	checkNode(v, t, path, seen, errs)
}

// fieldByKey returns the field of struct type t whose yaml tag names key.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue // not part of the schema (Config.Warnings)
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Validate checks every field and returns all problems found, one per line,
// each naming its YAML path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if err := validAddr(c.Listen); err != nil {
		bad("listen", "%v", err)
	}
	if c.AdminListen != "" {
		if err := validAddr(c.AdminListen); err != nil {
			bad("admin_listen", "%v", err)
		} else if addrsCollide(c.AdminListen, c.Listen) {
			bad("admin_listen", "%s collides with listen %s (the same port on the same or a wildcard address); "+
				"give the admin endpoints a port of their own", c.AdminListen, c.Listen)
		}
	}
	if c.MaxBodyBytes <= 0 {
		bad("max_body_bytes", "must be positive")
	}
	if c.MaxUploadBytes <= 0 {
		bad("max_upload_bytes", "must be positive")
	}
	if c.MaxResponseBytes < 64<<10 {
		bad("max_response_bytes", "must be at least 65536")
	}
	if c.ReadTimeout < MinReadTimeout {
		bad("read_timeout", "must be at least %v", MinReadTimeout)
	}
	if c.WriteTimeout < time.Second {
		bad("write_timeout", "must be at least 1s")
	}
	if c.ShutdownGrace < 0 {
		bad("shutdown_grace", "must not be negative")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "must be debug, info, warn or error")
	}
	for i, s := range c.Cache.Memcached {
		host, port, err := net.SplitHostPort(s)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			bad(fmt.Sprintf("cache.memcached[%d]", i), "must be host:port with a port between 1 and 65535")
		}
	}
	if c.Cache.TTL < 0 {
		bad("cache.ttl", "must not be negative")
	}
	if !nameRE.MatchString(c.Cache.Namespace) {
		bad("cache.namespace", "must be 1-64 characters of A-Z a-z 0-9 _ . -")
	}
	if c.Cache.MaxBytes < 1<<20 {
		bad("cache.max_bytes", "must be at least 1048576")
	}
	if c.Cache.Timeout < MinCacheTimeout {
		bad("cache.timeout", "must be at least %v", MinCacheTimeout)
	}
	if c.Cache.MaxItemBytes < 1024 {
		bad("cache.max_item_bytes", "must be at least 1024")
	}
	if c.Cache.NearMaxBytes != 0 && c.Cache.NearMaxBytes < 1<<20 {
		bad("cache.near_max_bytes", "must be 0 (no near cache) or at least 1048576")
	}
	if c.Cache.NearMaxBytes != 0 && c.Cache.NearTTL <= 0 {
		bad("cache.near_ttl", "must be positive (or set cache.near_max_bytes: 0 to turn the near cache off)")
	}
	if c.Breaker.FailureThreshold < 1 {
		bad("breaker.failure_threshold", "must be at least 1")
	}
	if c.Breaker.SuccessThreshold < 1 {
		bad("breaker.success_threshold", "must be at least 1")
	}
	if c.Breaker.Delay <= 0 {
		bad("breaker.delay", "must be positive")
	}
	w := c.Routing.Weights
	for _, f := range []struct {
		name string
		v    float64
	}{{"health", w.Health}, {"quota", w.Quota}, {"latency", w.Latency}} {
		if !(f.v >= 0 && f.v <= 1) { // also rejects .nan
			bad("routing.weights."+f.name, "must be between 0 and 1")
		}
	}
	if w.Health+w.Quota+w.Latency == 0 {
		bad("routing.weights", "must not all be 0")
	}
	if c.Routing.HealthHalfLife < 0 {
		bad("routing.health_half_life", "must not be negative")
	}
	switch c.Streaming.Commit {
	case CommitFirstEvent, CommitComplete:
	default:
		bad("streaming.commit", "must be first_event or complete")
	}
	for i, k := range c.Auth.Keys {
		if k == "" {
			bad(fmt.Sprintf("auth.keys[%d]", i), "must not be empty")
		}
	}
	if len(c.Upstreams) == 0 {
		bad("upstreams", "at least one upstream is required")
	}
	seen := map[string]int{}
	groupQuota := map[string]int{} // quota group -> the first member with a quota limit
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		p := fmt.Sprintf("upstreams[%d]", i)
		if !nameRE.MatchString(u.Name) {
			bad(p+".name", "must be 1-64 characters of A-Z a-z 0-9 _ . -")
		} else if j, dup := seen[u.Name]; dup {
			bad(p+".name", "%q is already used by upstreams[%d]", u.Name, j)
		} else {
			seen[u.Name] = i
		}
		if _, ok := DefaultBaseURLs[u.Provider]; !ok {
			bad(p+".provider", "must be groq, huggingface or openai")
		}
		if pu, err := url.Parse(u.BaseURL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.RawQuery != "" || pu.Fragment != "" {
			bad(p+".base_url", "must be an http(s) URL")
		}
		if strings.ContainsAny(u.APIKey, "\r\n") {
			bad(p+".api_key", "must not contain line breaks")
		}
		// 0 was replaced by the default (applyDefaults).
		if u.Timeout < MinUpstreamTimeout {
			bad(p+".timeout", "must be at least %v (or 0 for the default)", MinUpstreamTimeout)
		}
		if u.FirstTokenTimeout < MinUpstreamTimeout {
			bad(p+".first_token_timeout", "must be at least %v (or 0 for the default)", MinUpstreamTimeout)
		}
		if u.IdleTimeout < MinUpstreamTimeout {
			bad(p+".idle_timeout", "must be at least %v (or 0 for the default)", MinUpstreamTimeout)
		}
		for alias, model := range u.Models {
			if alias == "" || model == "" {
				bad(p+".models", "aliases and model names must not be empty")
				break
			}
		}
		if u.Quota.Limit < 0 {
			bad(p+".quota.limit", "must not be negative")
		}
		if u.Quota.DefaultMaxTokens < 0 {
			bad(p+".quota.default_max_tokens", "must not be negative")
		}
		switch u.Quota.Unit {
		case UnitRequests, UnitTokens, UnitChars:
		default:
			bad(p+".quota.unit", "must be requests, tokens or chars")
		}
		switch u.Quota.Period {
		case PeriodDay, PeriodMonth:
		default:
			bad(p+".quota.period", "must be day or month")
		}
		if u.QuotaGroup != "" && !nameRE.MatchString(u.QuotaGroup) {
			bad(p+".quota_group", "must be 1-64 characters of A-Z a-z 0-9 _ . -")
		}
		if g := u.QuotaGroup; g != "" && u.Quota.Limit > 0 {
			// One group, one count: its members must agree on what is counted.
			if j, ok := groupQuota[g]; !ok {
				groupQuota[g] = i
			} else if c.Upstreams[j].Quota != u.Quota {
				bad(p+".quota", "differs from upstreams[%d].quota, another member of quota_group %q", j, g)
			}
		}
		if u.Retry.Attempts < 0 || u.Retry.Attempts > 10 {
			bad(p+".retry.attempts", "must be between 0 and 10")
		}
		if u.Retry.Backoff < 0 {
			bad(p+".retry.backoff", "must not be negative")
		}
		if u.Retry.MaxRetryAfter < 0 {
			bad(p+".retry.max_retry_after", "must not be negative")
		} else if u.Retry.MaxRetryAfter > MaxRetryAfterLimit {
			bad(p+".retry.max_retry_after", "must be at most %gs", MaxRetryAfterLimit.Seconds())
		}
		validateHeaders(u, p, bad)
		validateParams(u, p, bad)
		validateEndpoints(u, p, bad)
	}
	return errors.Join(errs...)
}

// validateHeaders checks upstreams[i].headers and .forward_headers.
func validateHeaders(u *Upstream, p string, bad func(path, format string, args ...any)) {
	names := make([]string, 0, len(u.Headers))
	for name := range u.Headers {
		names = append(names, name)
	}
	slices.Sort(names) // one error order for one file
	seen := map[string]string{}
	for _, name := range names {
		hp := p + ".headers." + name
		if headerNameOK(name, hp, bad) {
			if prev, dup := seen[strings.ToLower(name)]; dup {
				bad(hp, "same header as %q (names are case-insensitive)", prev)
			}
			seen[strings.ToLower(name)] = name
		}
		// The value may come from the environment: never quote it.
		if strings.ContainsAny(u.Headers[name], "\r\n\x00") {
			bad(hp, "value must not contain CR, LF or NUL")
		}
	}
	fwd := map[string]int{}
	for i, name := range u.ForwardHeaders {
		fp := fmt.Sprintf("%s.forward_headers[%d]", p, i)
		if !headerNameOK(name, fp, bad) {
			continue
		}
		if j, dup := fwd[strings.ToLower(name)]; dup {
			bad(fp, "same header as forward_headers[%d] (names are case-insensitive)", j)
			continue
		}
		fwd[strings.ToLower(name)] = i
	}
}

// headerNameOK reports whether name may be configured as a request header,
// adding an error at path if not.
func headerNameOK(name, path string, bad func(path, format string, args ...any)) bool {
	switch {
	case !isToken(name):
		bad(path, "must be an HTTP header name (letters, digits and !#$%%&'*+-.^_`|~)")
	case ReservedHeader(name):
		bad(path, "%s %s and cannot be configured", name, reservedHeaders[strings.ToLower(name)])
	default:
		return true
	}
	return false
}

// isToken reports whether s is an RFC 7230 token: one or more tchar.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validateParams checks upstreams[i].unsupported_params.
func validateParams(u *Upstream, p string, bad func(path, format string, args ...any)) {
	seen := map[string]int{}
	for i, name := range u.UnsupportedParams {
		pp := fmt.Sprintf("%s.unsupported_params[%d]", p, i)
		switch j, dup := seen[name]; {
		case name == "":
			bad(pp, "must not be empty")
		case requiredParams[name]:
			bad(pp, "%q is part of every chat request and cannot be unsupported", name)
		case dup:
			bad(pp, "%q is already listed at unsupported_params[%d]", name, j)
		default:
			seen[name] = i
		}
	}
}

// validateEndpoints checks upstreams[i].endpoints.
func validateEndpoints(u *Upstream, p string, bad func(path, format string, args ...any)) {
	seen := map[string]int{}
	for i, name := range u.Endpoints {
		pp := fmt.Sprintf("%s.endpoints[%d]", p, i)
		switch j, dup := seen[name]; {
		case !openai.Endpoint(name).Known():
			bad(pp, "%q is not an endpoint; use paths under /v1: %s", name, endpointList())
		case dup:
			bad(pp, "%q is already listed at endpoints[%d]", name, j)
		default:
			seen[name] = i
		}
	}
}

func endpointList() string {
	names := make([]string, len(openai.Endpoints))
	for i, e := range openai.Endpoints {
		names[i] = string(e)
	}
	return strings.Join(names, ", ")
}

func validAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New("must be host:port")
	}
	_ = host
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number between 0 and 65535")
	}
	return nil
}

// addrsCollide reports whether listening on both host:port addresses a and
// b (each valid for validAddr) must fail: the same port, other than 0 (any
// free port), on the same IP or host name, or on a wildcard host ("",
// 0.0.0.0 or ::, which covers every address). Two host names, or a name
// and an IP, are not resolved: a collision between them is found at bind.
func addrsCollide(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	na, _ := strconv.Atoi(pa)
	nb, _ := strconv.Atoi(pb)
	if na == 0 || na != nb {
		return false
	}
	ia, ib := net.ParseIP(ha), net.ParseIP(hb)
	switch {
	case ha == "" || hb == "" || (ia != nil && ia.IsUnspecified()) || (ib != nil && ib.IsUnspecified()):
		return true
	case ia != nil && ib != nil:
		return ia.Equal(ib)
	default:
		return strings.EqualFold(ha, hb)
	}
}

// Summary is a one-line description of the configuration for -check and the
// start-up log: counts only, never secrets.
func (c *Config) Summary() string {
	configured := 0
	for i := range c.Upstreams {
		if c.Upstreams[i].Configured() {
			configured++
		}
	}
	backend := "embedded"
	if len(c.Cache.Memcached) > 0 {
		backend = fmt.Sprintf("memcached(%d servers)", len(c.Cache.Memcached))
		if c.Cache.NearMaxBytes > 0 {
			backend += fmt.Sprintf("+near(%d bytes, %s)", c.Cache.NearMaxBytes, c.Cache.NearTTL)
		}
	}
	return fmt.Sprintf("config ok: listen %s, %d upstreams (%d with keys), cache %s ttl %s",
		c.Listen, len(c.Upstreams), configured, backend, c.Cache.TTL)
}
