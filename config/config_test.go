package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"gopkg.in/yaml.v3"
)

// noEnv is a lookup with no variable set, so tests are hermetic.
func noEnv(string) (string, bool) { return "", false }

// envOf returns a lookup over m.
func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// good is a complete, valid configuration using every section. Failure
// cases below are small edits of it, so each isolates one rule.
const good = `
listen: 127.0.0.1:8080
admin_listen: 127.0.0.1:9090
max_body_bytes: 1048576
shutdown_grace: 10s
log_level: debug
cache:
  memcached: ["127.0.0.1:11211", "cache.internal:11211"]
  ttl: 24h
  namespace: team-a.v2
  max_bytes: 2097152
  timeout: 50ms
  max_item_bytes: 2048
  near_max_bytes: 4194304
  near_ttl: 2s
  shared_across_keys: true
breaker: {failure_threshold: 3, delay: 30s, success_threshold: 2}
routing:
  weights: {health: 0.5, quota: 0.25, latency: 0.25}
streaming:
  commit: complete
auth:
  keys: [k1, k2]
upstreams:
  - name: groq_1
    provider: groq
    api_key: gsk_1
    priority: 1
    timeout: 30s
    first_token_timeout: 5s
    idle_timeout: 7s
    models: &m
      llama-3.3-70b: llama-3.3-70b-versatile
    quota: {limit: 14400, unit: requests, period: day}
    quota_group: org_a
    retry: {attempts: 2, backoff: 100ms, max_retry_after: 5s}
    headers:
      X-Team: search
    forward_headers: [X-Trace-Id]
    unsupported_params: [logit_bias]
    drop_params: true
  - name: hf_1
    provider: huggingface
    base_url: https://router.huggingface.co/v1/
    api_key: hf_1
    priority: 5
    models: *m
    quota: {limit: 2, unit: chars, period: month}
`

// withUpstream is a minimal valid document followed by the given upstream
// fields (indented under "- ").
func withUpstream(fields string) string {
	return "upstreams:\n  - name: a\n    provider: groq\n" + fields
}

func TestParseGood(t *testing.T) {
	cfg, err := parse(strings.NewReader(good), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	want := Config{
		Listen:           "127.0.0.1:8080",
		AdminListen:      "127.0.0.1:9090",
		MaxBodyBytes:     1 << 20,
		MaxUploadBytes:   25 << 20,
		MaxResponseBytes: 32 << 20,
		ShutdownGrace:    10 * time.Second,
		ReadTimeout:      30 * time.Second,
		WriteTimeout:     60 * time.Second,
		LogLevel:         "debug",
		Cache: Cache{
			Memcached:    []string{"127.0.0.1:11211", "cache.internal:11211"},
			TTL:          24 * time.Hour,
			Namespace:    "team-a.v2",
			MaxBytes:     2 << 20,
			Timeout:      50 * time.Millisecond,
			MaxItemBytes: 2048,
			NearMaxBytes: 4 << 20,
			NearTTL:      2 * time.Second,

			SharedAcrossKeys: true,
		},
		Breaker:   Breaker{FailureThreshold: 3, Delay: 30 * time.Second, SuccessThreshold: 2},
		Routing:   Routing{Weights: Weights{Health: 0.5, Quota: 0.25, Latency: 0.25}},
		Streaming: Streaming{Commit: CommitComplete},
		Auth:      Auth{Keys: []string{"k1", "k2"}},
		Upstreams: []Upstream{
			{
				Name: "groq_1", Provider: ProviderGroq, MaxResponseBytes: 32 << 20, BaseURL: "https://api.groq.com/openai/v1",
				APIKey: "gsk_1", Priority: 1,
				Timeout: 30 * time.Second, FirstTokenTimeout: 5 * time.Second, IdleTimeout: 7 * time.Second,
				Models:            map[string]string{"llama-3.3-70b": "llama-3.3-70b-versatile"},
				Quota:             Quota{Limit: 14400, Unit: UnitRequests, Period: PeriodDay},
				QuotaGroup:        "org_a",
				Retry:             Retry{Attempts: 2, Backoff: 100 * time.Millisecond, MaxRetryAfter: 5 * time.Second},
				Headers:           map[string]string{"X-Team": "search"},
				ForwardHeaders:    []string{"X-Trace-Id"},
				UnsupportedParams: []string{"logit_bias"},
				Endpoints:         []string{"chat/completions", "responses", "audio/transcriptions", "audio/translations"},
				DropParams:        true,
			},
			{
				Name: "hf_1", Provider: ProviderHuggingFace, MaxResponseBytes: 32 << 20, BaseURL: "https://router.huggingface.co/v1",
				APIKey: "hf_1", Priority: 5,
				Timeout: 60 * time.Second, FirstTokenTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second,
				Models: map[string]string{"llama-3.3-70b": "llama-3.3-70b-versatile"},
				Quota:  Quota{Limit: 2, Unit: UnitChars, Period: PeriodMonth},
				Retry:  Retry{Backoff: 200 * time.Millisecond},
				// Provider defaults, filled in by Parse.
				ForwardHeaders:    []string{"X-HF-Bill-To"},
				UnsupportedParams: []string{},
				Endpoints:         []string{"chat/completions", "responses"},
			},
		},
	}
	// Both keys are written in the file: one warning each (TestParseWarnings).
	if len(cfg.Warnings) != 2 || !strings.HasPrefix(cfg.Warnings[0], "upstreams[0].api_key: ") || !strings.HasPrefix(cfg.Warnings[1], "upstreams[1].api_key: ") {
		t.Errorf("warnings = %q, want one for each literal api_key", cfg.Warnings)
	}
	cfg.Warnings = nil
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("parse(good) =\n%+v\nwant\n%+v", cfg, want)
	}
}

// TestParseFailureClosure has one case per decode failure and per rule of
// Validate; each error must name the YAML path of the offending field.
func TestParseFailureClosure(t *testing.T) {
	type failCase struct {
		name string
		yaml string
		want []string // substrings of the error, all required
	}
	cases := []failCase{
		// Decoding.
		{"empty file", "", []string{"empty config"}},
		{"only comments", "# nothing here\n\n", []string{"empty config"}},
		{"only document marker", "---\n", []string{"empty config"}},
		{"syntax error", "upstreams: [\n", []string{"yaml:", "line"}},
		{"tab indentation", "upstreams:\n\t- name: a\n", []string{"yaml:"}},
		{"second document", withUpstream("") + "---\nlisten: :1\n", []string{"line 4", "second YAML document"}},
		{"top level is a list", "- a\n- b\n", []string{"(top level): must be a mapping"}},
		{"unknown top-level key", "listn: :80\n" + withUpstream(""), []string{"listn: unknown key (line 1)"}},
		{"unknown upstream key", good + "  - name: c\n    provider: groq\n    timout: 30s\n", []string{"upstreams[2].timout: unknown key"}},
		{"unknown key second upstream", withUpstream("  - name: b\n    provider: groq\n    timout: 30s\n"), []string{"upstreams[1].timout: unknown key (line 6)"}},
		{"unknown nested key", "cache: {namspace: x}\n" + withUpstream(""), []string{"cache.namspace: unknown key"}},
		{"unknown quota key", withUpstream("    quota: {limit: 1, per: day}\n"), []string{"upstreams[0].quota.per: unknown key"}},
		{"unknown key in anchor", withUpstream("    retry: &r {attempts: 1, backof: 1s}\n  - name: b\n    provider: groq\n    retry: *r\n"), []string{"upstreams[0].retry.backof: unknown key"}},
		{"unknown key via merge", "upstreams:\n  - &a {name: a, provider: groq, timout: 1s}\n  - <<: *a\n    name: b\n", []string{"upstreams[0].timout: unknown key"}},
		{"non-scalar key", "? [a]\n: b\n" + withUpstream(""), []string{"(top level): keys must be plain names (line 1)"}},
		{"duplicate key", withUpstream("    name: b\n"), []string{`mapping key "name" already defined`}},
		{"bare int duration", withUpstream("    timeout: 30\n"), []string{"upstreams[0].timeout: must be a duration", "(line 4)"}},
		{"word duration", withUpstream("    timeout: abc\n"), []string{"upstreams[0].timeout: must be a duration", "(line 4)"}},
		{"duration as list", withUpstream("    idle_timeout: [1s]\n"), []string{"upstreams[0].idle_timeout: must be a duration"}},
		{"bad top-level duration", "shutdown_grace: 5\n" + withUpstream(""), []string{"shutdown_grace: must be a duration"}},
		{"bad cache ttl", "cache: {ttl: 30d}\n" + withUpstream(""), []string{"cache.ttl: must be a duration"}},
		{"bad breaker delay", "breaker: {delay: soon}\n" + withUpstream(""), []string{"breaker.delay: must be a duration"}},
		{"bad retry backoff", withUpstream("    retry: {backoff: 1}\n"), []string{"upstreams[0].retry.backoff: must be a duration"}},
		{"int field not int", "max_body_bytes: lots\n" + withUpstream(""), []string{"max_body_bytes: must be an integer (line 1)"}},
		{"int field float", withUpstream("    priority: 1.5\n"), []string{"upstreams[0].priority: must be an integer"}},
		{"int field exponent", "max_body_bytes: 1e6\n" + withUpstream(""), []string{"max_body_bytes: must be an integer"}},
		{"int field bool", withUpstream("    retry: {attempts: true}\n"), []string{"upstreams[0].retry.attempts: must be an integer"}},
		{"int field from env not int", "max_body_bytes: ${X:-big}\n" + withUpstream(""), []string{"max_body_bytes: must be an integer"}},
		{"int64 field not int", withUpstream("    quota: {limit: many}\n"), []string{"upstreams[0].quota.limit: must be an integer"}},
		{"float field not number", "routing: {weights: {health: high}}\n" + withUpstream(""), []string{"routing.weights.health: must be a number"}},
		{"string field is a list", withUpstream("    api_key: [a, b]\n"), []string{"upstreams[0].api_key: must be a string"}},
		{"upstreams not a list", "upstreams: {name: a}\n", []string{"upstreams: must be a list"}},
		{"upstream not a mapping", "upstreams: [a]\n", []string{"upstreams[0]: must be a mapping"}},
		{"models not a mapping", withUpstream("    models: [a]\n"), []string{"upstreams[0].models: must be a mapping"}},
		{"model not a string", withUpstream("    models: {a: [b]}\n"), []string{"upstreams[0].models.a: must be a string"}},
		{"memcached not a list", "cache: {memcached: 127.0.0.1:11211}\n" + withUpstream(""), []string{"cache.memcached: must be a list"}},
		{"malformed variable", withUpstream("    api_key: ${GROQ KEY}\n"), []string{"upstreams[0].api_key: malformed variable reference", "(line 4)"}},
		{"unclosed variable", withUpstream("    api_key: ${GROQ_KEY\n"), []string{"upstreams[0].api_key: malformed variable reference", "(line 4)"}},
		{"unclosed variable in a nested field", "cache:\n  namespace: ${NS\n" + withUpstream(""), []string{"cache.namespace: malformed variable reference", "(line 2)"}},
		{"unclosed variable in a list", "auth:\n  keys:\n    - a\n    - x${K\n" + withUpstream(""), []string{"auth.keys[1]: malformed variable reference", "(line 4)"}},
		{"unclosed variable in a mapping key", withUpstream("    headers:\n      ${H: x\n"), []string{"upstreams[0].headers: malformed variable reference", "(line 5)"}},
		{"unclosed variable in a merged list", withUpstream("    <<:\n      - {priority: 1}\n      - base_url: ${U\n"), []string{"upstreams[0].base_url: malformed variable reference", "(line 6)"}},
		{"unclosed variable in a merged mapping", withUpstream("    <<:\n      api_key: ${K\n"), []string{"upstreams[0].api_key: malformed variable reference", "(line 5)"}},
		{"malformed variables all reported", "listen: ${1X}\n" + withUpstream("    api_key: ${K\n"), []string{"listen: malformed", "upstreams[0].api_key: malformed"}},
		// A reference without a default is required (see Parse), except
		// in api_key and header values (TestParseEnv).
		{"unset variable in listen", "listen: ${LISTEN}\n" + withUpstream(""), []string{"listen: ${LISTEN} is not set in the environment and has no default (line 1)"}},
		{"unset variable in part of a value", "listen: ${HOST}:8080\n" + withUpstream(""), []string{"listen: ${HOST} is not set"}},
		{"unset variable in admin_listen", "admin_listen: ${ADMIN}\n" + withUpstream(""), []string{"admin_listen: ${ADMIN} is not set"}},
		{"unset variable in an int field", "max_body_bytes: ${MAX}\n" + withUpstream(""), []string{"max_body_bytes: ${MAX} is not set"}},
		{"unset variable in a duration", withUpstream("    timeout: ${T}\n"), []string{"upstreams[0].timeout: ${T} is not set", "(line 4)"}},
		{"unset variable in an auth key", "auth:\n  keys:\n    - ${CLIENT_KEY}\n" + withUpstream(""), []string{"auth.keys[0]: ${CLIENT_KEY} is not set"}},
		{"unset variable in base_url", withUpstream("    base_url: ${URL}/v1\n"), []string{"upstreams[0].base_url: ${URL} is not set"}},
		{"unset variable in a header name", withUpstream("    headers:\n      ${H}: x\n"), []string{"upstreams[0].headers: ${H} is not set"}},
		{"unset variable in a merged mapping", withUpstream("    <<:\n      base_url: ${URL}\n"), []string{"upstreams[0].base_url: ${URL} is not set"}},
		{"unset variable quoted", "cache:\n  namespace: \"${NS}\"\n" + withUpstream(""), []string{"cache.namespace: ${NS} is not set"}},
		{"unset variables all reported", "listen: ${HOST}:${PORT}\n" + withUpstream("    quota_group: ${G}\n"),
			[]string{"listen: ${HOST} is not set", "listen: ${PORT} is not set", "upstreams[0].quota_group: ${G} is not set"}},
		{"reference inside a flow mapping", withUpstream("    quota: {limit: ${LIMIT:-100}}\n"), []string{"yaml:", "did not find expected"}},
		{"env null into int", "max_body_bytes: ${X:-null}\n" + withUpstream(""), []string{"max_body_bytes: must be an integer"}},
		{"quoted env into int", "max_body_bytes: \"${X:-1024}\"\n" + withUpstream(""), []string{"max_body_bytes: must be an integer"}},

		// Validate, top level.
		{"listen not host:port", "listen: localhost\n" + withUpstream(""), []string{"listen: must be host:port"}},
		{"listen bad port", "listen: localhost:99999\n" + withUpstream(""), []string{"listen: port must be a number"}},
		{"listen named port", "listen: localhost:http\n" + withUpstream(""), []string{"listen: port must be a number"}},
		{"admin_listen bad", "admin_listen: '9090'\n" + withUpstream(""), []string{"admin_listen: must be host:port"}},
		{"admin_listen equal to listen", "listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:8080\n" + withUpstream(""),
			[]string{"admin_listen: 127.0.0.1:8080 collides with listen 127.0.0.1:8080"}},
		{"admin_listen equal to the default listen", "admin_listen: 127.0.0.1:8080\n" + withUpstream(""), []string{"admin_listen: 127.0.0.1:8080 collides with listen 127.0.0.1:8080"}},
		{"admin_listen wildcard over listen", "listen: 127.0.0.1:9000\nadmin_listen: 0.0.0.0:9000\n" + withUpstream(""), []string{"admin_listen: 0.0.0.0:9000 collides with listen 127.0.0.1:9000"}},
		{"listen wildcard over admin_listen", "listen: ':9000'\nadmin_listen: 10.0.0.1:9000\n" + withUpstream(""), []string{"admin_listen: 10.0.0.1:9000 collides with listen :9000"}},
		{"admin_listen IPv6 wildcard", "listen: 127.0.0.1:9000\nadmin_listen: '[::]:9000'\n" + withUpstream(""), []string{"admin_listen: [::]:9000 collides"}},
		{"admin_listen same IP spelled differently", "listen: '[::1]:9000'\nadmin_listen: '[0:0:0:0:0:0:0:1]:09000'\n" + withUpstream(""), []string{"admin_listen: [0:0:0:0:0:0:0:1]:09000 collides"}},
		{"admin_listen same host name in another case", "listen: LocalHost:9000\nadmin_listen: localhost:9000\n" + withUpstream(""), []string{"admin_listen: localhost:9000 collides with listen LocalHost:9000"}},
		{"max_body_bytes zero", "max_body_bytes: 0\n" + withUpstream(""), []string{"max_body_bytes: must be positive"}},
		{"max_body_bytes negative", "max_body_bytes: -1\n" + withUpstream(""), []string{"max_body_bytes: must be positive"}},
		{"shutdown_grace negative", "shutdown_grace: -1s\n" + withUpstream(""), []string{"shutdown_grace: must not be negative"}},
		{"read_timeout zero", "read_timeout: 0s\n" + withUpstream(""), []string{"read_timeout: must be at least 100ms"}},
		{"read_timeout 1ns", "read_timeout: 1ns\n" + withUpstream(""), []string{"read_timeout: must be at least 100ms"}},
		{"read_timeout below the minimum", "read_timeout: 99ms\n" + withUpstream(""), []string{"read_timeout: must be at least 100ms"}},
		{"read_timeout negative", "read_timeout: -30s\n" + withUpstream(""), []string{"read_timeout: must be at least 100ms"}},
		{"write_timeout below 1s", "write_timeout: 500ms\n" + withUpstream(""), []string{"write_timeout: must be at least 1s"}},
		{"max_response_bytes small", "max_response_bytes: 1000\n" + withUpstream(""), []string{"max_response_bytes: must be at least 65536"}},
		{"log_level", "log_level: verbose\n" + withUpstream(""), []string{"log_level: must be debug, info, warn or error"}},
		{"memcached no port", "cache: {memcached: ['127.0.0.1:11211', localhost]}\n" + withUpstream(""), []string{"cache.memcached[1]: must be host:port"}},
		{"memcached empty port", "cache: {memcached: ['localhost:']}\n" + withUpstream(""), []string{"cache.memcached[0]: must be host:port"}},
		{"memcached port zero", "cache: {memcached: ['localhost:0']}\n" + withUpstream(""), []string{"cache.memcached[0]: must be host:port"}},
		{"memcached named port", "cache: {memcached: ['localhost:memcache']}\n" + withUpstream(""), []string{"cache.memcached[0]: must be host:port"}},
		{"memcached no host", "cache: {memcached: [':11211']}\n" + withUpstream(""), []string{"cache.memcached[0]: must be host:port"}},
		{"cache ttl negative", "cache: {ttl: -1h}\n" + withUpstream(""), []string{"cache.ttl: must not be negative"}},
		{"namespace with space", "cache: {namespace: 'team a'}\n" + withUpstream(""), []string{"cache.namespace: must be 1-64 characters"}},
		{"namespace with colon", "cache: {namespace: 'a:b'}\n" + withUpstream(""), []string{"cache.namespace: must be 1-64 characters"}},
		{"namespace empty", "cache: {namespace: ''}\n" + withUpstream(""), []string{"cache.namespace: must be 1-64 characters"}},
		{"namespace too long", "cache: {namespace: " + strings.Repeat("n", 65) + "}\n" + withUpstream(""), []string{"cache.namespace: must be 1-64 characters"}},
		{"cache max_bytes", "cache: {max_bytes: 1000}\n" + withUpstream(""), []string{"cache.max_bytes: must be at least 1048576"}},
		{"cache timeout zero", "cache: {timeout: 0s}\n" + withUpstream(""), []string{"cache.timeout: must be at least 10ms"}},
		{"cache timeout below the minimum", "cache: {timeout: 1ms}\n" + withUpstream(""), []string{"cache.timeout: must be at least 10ms"}},
		{"cache max_item_bytes", "cache: {max_item_bytes: 100}\n" + withUpstream(""), []string{"cache.max_item_bytes: must be at least 1024"}},
		{"near_max_bytes below the minimum", "cache: {memcached: ['m:11211'], near_max_bytes: 1048575}\n" + withUpstream(""), []string{"cache.near_max_bytes: must be 0 (no near cache) or at least 1048576"}},
		{"near_max_bytes negative", "cache: {memcached: ['m:11211'], near_max_bytes: -1}\n" + withUpstream(""), []string{"cache.near_max_bytes: must be 0"}},
		{"near_max_bytes without memcached", "cache: {near_max_bytes: 1000}\n" + withUpstream(""), []string{"cache.near_max_bytes: must be 0"}},
		{"near_max_bytes with units", "cache: {near_max_bytes: 16MiB}\n" + withUpstream(""), []string{"cache.near_max_bytes: must be an integer"}},
		{"near_ttl zero", "cache: {memcached: ['m:11211'], near_ttl: 0s}\n" + withUpstream(""), []string{"cache.near_ttl: must be positive"}},
		{"near_ttl negative", "cache: {memcached: ['m:11211'], near_ttl: -1s}\n" + withUpstream(""), []string{"cache.near_ttl: must be positive"}},
		{"near_ttl not a duration", "cache: {near_ttl: 10}\n" + withUpstream(""), []string{"cache.near_ttl: must be a duration"}},
		{"shared_across_keys not a bool", "cache: {shared_across_keys: 1}\n" + withUpstream(""), []string{"cache.shared_across_keys: must be true or false"}},
		{"breaker failure_threshold", "breaker: {failure_threshold: 0}\n" + withUpstream(""), []string{"breaker.failure_threshold: must be at least 1"}},
		{"breaker success_threshold", "breaker: {success_threshold: 0}\n" + withUpstream(""), []string{"breaker.success_threshold: must be at least 1"}},
		{"breaker delay", "breaker: {delay: 0s}\n" + withUpstream(""), []string{"breaker.delay: must be positive"}},
		{"weight above 1", "routing: {weights: {health: 1.5}}\n" + withUpstream(""), []string{"routing.weights.health: must be between 0 and 1"}},
		{"weight negative", "routing: {weights: {quota: -0.1}}\n" + withUpstream(""), []string{"routing.weights.quota: must be between 0 and 1"}},
		{"weight NaN", "routing: {weights: {latency: .nan}}\n" + withUpstream(""), []string{"routing.weights.latency: must be between 0 and 1"}},
		{"weight infinite", "routing: {weights: {health: .inf}}\n" + withUpstream(""), []string{"routing.weights.health: must be between 0 and 1"}},
		{"weights all zero", "routing: {weights: {health: 0, quota: 0, latency: 0}}\n" + withUpstream(""), []string{"routing.weights: must not all be 0"}},
		{"streaming commit", "streaming: {commit: always}\n" + withUpstream(""), []string{"streaming.commit: must be first_event or complete"}},
		{"auth empty key", "auth: {keys: [a, '']}\n" + withUpstream(""), []string{"auth.keys[1]: must not be empty"}},

		// Validate, upstreams.
		{"no upstreams key", "listen: 127.0.0.1:1\n", []string{"upstreams: at least one upstream is required"}},
		{"upstreams empty list", "upstreams: []\n", []string{"upstreams: at least one upstream is required"}},
		{"upstreams null", "upstreams:\n", []string{"upstreams: at least one upstream is required"}},
		{"name missing", "upstreams:\n  - provider: groq\n", []string{"upstreams[0].name: must be 1-64 characters"}},
		{"name with space", withUpstream("  - name: b c\n    provider: groq\n"), []string{"upstreams[1].name: must be 1-64 characters"}},
		{"name too long", "upstreams:\n  - name: " + strings.Repeat("x", 65) + "\n    provider: groq\n", []string{"upstreams[0].name: must be 1-64 characters"}},
		{"duplicate names", withUpstream("  - name: b\n    provider: groq\n  - name: a\n    provider: huggingface\n"), []string{`upstreams[2].name: "a" is already used by upstreams[0]`}},
		{"provider missing", "upstreams:\n  - name: a\n    base_url: https://x/v1\n", []string{"upstreams[0].provider: must be groq, huggingface or openai"}},
		{"provider unknown", "upstreams:\n  - name: a\n    provider: azure\n    base_url: https://x/v1\n", []string{"upstreams[0].provider: must be groq, huggingface or openai"}},
		{"provider case", "upstreams:\n  - name: a\n    provider: Groq\n    base_url: https://x/v1\n", []string{"upstreams[0].provider: must be"}},
		{"base_url scheme", withUpstream("  - name: b\n    provider: groq\n    base_url: ftp://api.groq.com/v1\n"), []string{"upstreams[1].base_url: must be an http(s) URL"}},
		{"base_url not a URL", withUpstream("    base_url: api.groq.com/openai/v1\n"), []string{"upstreams[0].base_url: must be an http(s) URL"}},
		{"base_url no host", withUpstream("    base_url: https:///v1\n"), []string{"upstreams[0].base_url: must be an http(s) URL"}},
		{"base_url query", withUpstream("    base_url: https://x/v1?key=1\n"), []string{"upstreams[0].base_url: must be an http(s) URL"}},
		{"base_url fragment", withUpstream("    base_url: 'https://x/v1#f'\n"), []string{"upstreams[0].base_url: must be an http(s) URL"}},
		{"base_url unparsable", withUpstream("    base_url: 'http://[::1'\n"), []string{"upstreams[0].base_url: must be an http(s) URL"}},
		{"base_url missing for unknown provider", "upstreams:\n  - name: a\n    provider: other\n", []string{"upstreams[0].base_url: must be an http(s) URL"}},
		{"api_key line break", withUpstream("    api_key: \"a\\nb\"\n"), []string{"upstreams[0].api_key: must not contain line breaks"}},
		{"api_key carriage return", withUpstream("    api_key: \"a\\rb\"\n"), []string{"upstreams[0].api_key: must not contain line breaks"}},
		{"timeout negative", withUpstream("    timeout: -1s\n"), []string{"upstreams[0].timeout: must be at least 100ms (or 0 for the default)"}},
		{"timeout 1ns", withUpstream("    timeout: 1ns\n"), []string{"upstreams[0].timeout: must be at least 100ms"}},
		{"first_token_timeout negative", withUpstream("    first_token_timeout: -1s\n"), []string{"upstreams[0].first_token_timeout: must be at least 100ms"}},
		{"first_token_timeout below the minimum", withUpstream("    first_token_timeout: 99ms\n"), []string{"upstreams[0].first_token_timeout: must be at least 100ms"}},
		{"idle_timeout negative", withUpstream("    idle_timeout: -1ms\n"), []string{"upstreams[0].idle_timeout: must be at least 100ms"}},
		{"idle_timeout below the minimum", withUpstream("    idle_timeout: 1us\n"), []string{"upstreams[0].idle_timeout: must be at least 100ms"}},
		{"models empty alias", withUpstream("    models: {'': x}\n"), []string{"upstreams[0].models: aliases and model names must not be empty"}},
		{"models empty model", withUpstream("    models: {x: ''}\n"), []string{"upstreams[0].models: aliases and model names must not be empty"}},
		{"quota limit negative", withUpstream("    quota: {limit: -1}\n"), []string{"upstreams[0].quota.limit: must not be negative"}},
		{"quota default_max_tokens negative", withUpstream("    quota: {limit: 10, unit: tokens, default_max_tokens: -1}\n"), []string{"upstreams[0].quota.default_max_tokens: must not be negative"}},
		{"quota unit", withUpstream("    quota: {limit: 1, unit: bytes}\n"), []string{"upstreams[0].quota.unit: must be requests, tokens or chars"}},
		{"quota period", withUpstream("    quota: {limit: 1, period: week}\n"), []string{"upstreams[0].quota.period: must be day or month"}},
		{"quota period case", withUpstream("    quota: {period: Day}\n"), []string{"upstreams[0].quota.period: must be day or month"}},
		{"quota_group", withUpstream("    quota_group: 'org a'\n"), []string{"upstreams[0].quota_group: must be 1-64 characters"}},
		{"health_half_life negative", "routing: {health_half_life: -1s}\n" + withUpstream(""), []string{"routing.health_half_life: must not be negative"}},
		{"quota group members disagree", withUpstream("    quota_group: g\n    quota: {limit: 1}\n  - name: b\n    provider: groq\n    quota_group: g\n    quota: {limit: 2}\n"),
			[]string{`upstreams[1].quota: differs from upstreams[0].quota, another member of quota_group "g"`}},
		{"retry attempts high", withUpstream("    retry: {attempts: 11}\n"), []string{"upstreams[0].retry.attempts: must be between 0 and 10"}},
		{"retry attempts negative", withUpstream("    retry: {attempts: -1}\n"), []string{"upstreams[0].retry.attempts: must be between 0 and 10"}},
		{"retry backoff negative", withUpstream("    retry: {backoff: -1s}\n"), []string{"upstreams[0].retry.backoff: must not be negative"}},
		{"max_retry_after negative", withUpstream("    retry: {max_retry_after: -1s}\n"), []string{"upstreams[0].retry.max_retry_after: must not be negative"}},
		{"max_retry_after above 60s", withUpstream("    retry: {max_retry_after: 61s}\n"), []string{"upstreams[0].retry.max_retry_after: must be at most 60s"}},
		{"max_retry_after not a duration", withUpstream("    retry: {max_retry_after: 5}\n"), []string{"upstreams[0].retry.max_retry_after: must be a duration"}},
		{"headers not a mapping", withUpstream("    headers: [X-A]\n"), []string{"upstreams[0].headers: must be a mapping"}},
		{"header value not a string", withUpstream("    headers: {X-A: [b]}\n"), []string{"upstreams[0].headers.X-A: must be a string"}},
		{"header name with space", withUpstream("    headers: {'X Team': a}\n"), []string{"upstreams[0].headers.X Team: must be an HTTP header name"}},
		{"header name with colon", withUpstream("    headers: {'X-Team:': a}\n"), []string{"upstreams[0].headers.X-Team:: must be an HTTP header name"}},
		{"header name empty", withUpstream("    headers: {'': a}\n"), []string{"upstreams[0].headers.: must be an HTTP header name"}},
		{"header name not ASCII", withUpstream("    headers: {X-Tëam: a}\n"), []string{"upstreams[0].headers.X-Tëam: must be an HTTP header name"}},
		{"header reserved in any case", withUpstream("    headers: {authorization: Bearer x}\n"), []string{"upstreams[0].headers.authorization: authorization is set by the proxy from api_key and cannot be configured"}},
		{"header names equal in another case", withUpstream("    headers: {X-Team: a, x-team: b}\n"), []string{`upstreams[0].headers.x-team: same header as "X-Team"`}},
		{"header value LF", withUpstream("    headers: {X-A: \"a\\nX-Injected: 1\"}\n"), []string{"upstreams[0].headers.X-A: value must not contain CR, LF or NUL"}},
		{"header value CR", withUpstream("    headers: {X-A: \"a\\rb\"}\n"), []string{"upstreams[0].headers.X-A: value must not contain CR, LF or NUL"}},
		{"header value NUL", withUpstream("    headers: {X-A: \"a\\0b\"}\n"), []string{"upstreams[0].headers.X-A: value must not contain CR, LF or NUL"}},
		{"forward_headers not a list", withUpstream("    forward_headers: X-A\n"), []string{"upstreams[0].forward_headers: must be a list"}},
		{"forward_headers name not a token", withUpstream("    forward_headers: [X-A, 'X(B)']\n"), []string{"upstreams[0].forward_headers[1]: must be an HTTP header name"}},
		{"forward_headers empty name", withUpstream("    forward_headers: ['']\n"), []string{"upstreams[0].forward_headers[0]: must be an HTTP header name"}},
		{"forward_headers Authorization", withUpstream("    forward_headers: [Authorization]\n"), []string{"upstreams[0].forward_headers[0]: Authorization is set by the proxy from api_key"}},
		{"forward_headers duplicate in another case", withUpstream("    forward_headers: [X-HF-Bill-To, x-hf-bill-to]\n"), []string{"upstreams[0].forward_headers[1]: same header as forward_headers[0]"}},
		{"unsupported_params not a list", withUpstream("    unsupported_params: n\n"), []string{"upstreams[0].unsupported_params: must be a list"}},
		{"unsupported_params empty name", withUpstream("    unsupported_params: [n, '']\n"), []string{"upstreams[0].unsupported_params[1]: must not be empty"}},
		{"unsupported_params duplicate", withUpstream("    unsupported_params: [n, logprobs, n]\n"), []string{`upstreams[0].unsupported_params[2]: "n" is already listed at unsupported_params[0]`}},
		{"unsupported_params model", withUpstream("    unsupported_params: [model]\n"), []string{`upstreams[0].unsupported_params[0]: "model" is part of every chat request`}},
		{"unsupported_params messages", withUpstream("    unsupported_params: [n, messages]\n"), []string{`upstreams[0].unsupported_params[1]: "messages" is part of every chat request`}},
		{"endpoints unknown", withUpstream("    endpoints: [chat/completions, v1/embeddings]\n"), []string{`upstreams[0].endpoints[1]: "v1/embeddings" is not an endpoint; use paths under /v1: chat/completions, completions,`}},
		{"endpoints duplicate", withUpstream("    endpoints: [embeddings, embeddings]\n"), []string{`upstreams[0].endpoints[1]: "embeddings" is already listed at endpoints[0]`}},
		{"max_upload_bytes zero", "max_upload_bytes: 0\n" + withUpstream(""), []string{"max_upload_bytes: must be positive"}},
		{"unsupported_params stream", withUpstream("    unsupported_params: [stream]\n"), []string{`upstreams[0].unsupported_params[0]: "stream" is part of every chat request`}},
		{"drop_params not a bool", withUpstream("    drop_params: sometimes\n"), []string{"upstreams[0].drop_params: must be true or false"}},

		// Several problems are all reported.
		{"all problems reported", "log_level: loud\ncache: {namespace: 'a b'}\nupstreams:\n  - name: a\n    provider: x\n    base_url: https://x\n    quota: {unit: bytes}\n",
			[]string{"log_level:", "cache.namespace:", "upstreams[0].provider:", "upstreams[0].quota.unit:"}},
		{"all unknown keys reported", "listn: x\nupstreams:\n  - name: a\n    provider: groq\n    timout: 1s\n    prority: 1\n",
			[]string{"listn: unknown key", "upstreams[0].timout: unknown key (line 5)", "upstreams[0].prority: unknown key (line 6)"}},
	}
	// Every reserved name, in both lists: one rule, so generated.
	for _, h := range []string{"Authorization", "Host", "Content-Length", "Content-Type", "Content-Encoding",
		"Accept", "Accept-Encoding", "X-Request-Id", "Transfer-Encoding", "Connection", "Keep-Alive",
		"Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate", "TE", "Trailer", "Upgrade"} {
		cases = append(cases,
			failCase{"header reserved " + h, withUpstream("    headers: {" + h + ": x}\n"), []string{"upstreams[0].headers." + h + ": " + h + " is ", "and cannot be configured"}},
			failCase{"forward_headers reserved " + h, withUpstream("    forward_headers: [X-A, " + h + "]\n"), []string{"upstreams[0].forward_headers[1]: " + h + " is ", "and cannot be configured"}},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(strings.NewReader(tc.yaml), noEnv)
			if err == nil {
				t.Fatalf("parse succeeded, want error containing %q; got %+v", tc.want, cfg)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Errorf("parse returned a config along with its error: %+v", cfg)
			}
		})
	}
}

func TestParseReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := parse(iotest.ErrReader(boom), noEnv)
	if !errors.Is(err, boom) {
		t.Fatalf("parse(failing reader) = %v, want it to wrap %v", err, boom)
	}
}

func TestParseMergeKey(t *testing.T) {
	const y = `
upstreams:
  - &base
    name: g1
    provider: groq
    timeout: 5s
    models: {a: b}
  - <<: *base
    name: g2
    api_key: k
`
	cfg, err := parse(strings.NewReader(y), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	g2 := cfg.Upstreams[1]
	if g2.Name != "g2" || g2.Timeout != 5*time.Second || g2.Models["a"] != "b" || g2.APIKey != "k" {
		t.Errorf("merged upstream = %+v", g2)
	}
}

func TestParseEnv(t *testing.T) {
	cases := []struct {
		name  string
		env   map[string]string
		yaml  string
		check func(t *testing.T, c Config)
	}{
		{
			name: "var set",
			env:  map[string]string{"GROQ_KEY": "gsk_abc"},
			yaml: withUpstream("    api_key: ${GROQ_KEY}\n"),
			check: func(t *testing.T, c Config) {
				if got := c.Upstreams[0].APIKey; got != "gsk_abc" {
					t.Errorf("api_key = %q, want gsk_abc", got)
				}
			},
		},
		{
			name: "var unset leaves the upstream unconfigured",
			yaml: withUpstream("    api_key: ${GROQ_KEY}\n"),
			check: func(t *testing.T, c Config) {
				if u := c.Upstreams[0]; u.APIKey != "" || u.Configured() {
					t.Errorf("api_key = %q, Configured = %v; want empty, false", u.APIKey, u.Configured())
				}
			},
		},
		{
			name: "default used when unset",
			yaml: "listen: ${LISTEN:-0.0.0.0:9000}\n" + withUpstream(""),
			check: func(t *testing.T, c Config) {
				if c.Listen != "0.0.0.0:9000" {
					t.Errorf("listen = %q, want 0.0.0.0:9000", c.Listen)
				}
			},
		},
		{
			name: "default used when set but empty",
			env:  map[string]string{"LISTEN": ""},
			yaml: "listen: ${LISTEN:-0.0.0.0:9000}\n" + withUpstream(""),
			check: func(t *testing.T, c Config) {
				if c.Listen != "0.0.0.0:9000" {
					t.Errorf("listen = %q, want 0.0.0.0:9000", c.Listen)
				}
			},
		},
		{
			name: "default ignored when set",
			env:  map[string]string{"LISTEN": "10.0.0.1:80"},
			yaml: "listen: ${LISTEN:-0.0.0.0:9000}\n" + withUpstream(""),
			check: func(t *testing.T, c Config) {
				if c.Listen != "10.0.0.1:80" {
					t.Errorf("listen = %q, want 10.0.0.1:80", c.Listen)
				}
			},
		},
		{
			name: "several references in one value",
			env:  map[string]string{"HOST": "10.0.0.2"},
			yaml: "listen: ${HOST}:${PORT:-8081}\n" + withUpstream(""),
			check: func(t *testing.T, c Config) {
				if c.Listen != "10.0.0.2:8081" {
					t.Errorf("listen = %q, want 10.0.0.2:8081", c.Listen)
				}
			},
		},
		{
			name: "unset var with an empty default keeps the built-in default",
			yaml: "listen: ${LISTEN:-}\nmax_body_bytes: ${MAX:-}\n" + withUpstream(""),
			check: func(t *testing.T, c Config) {
				d := Default()
				if c.Listen != d.Listen || c.MaxBodyBytes != d.MaxBodyBytes {
					t.Errorf("listen, max_body_bytes = %q, %d; want defaults %q, %d", c.Listen, c.MaxBodyBytes, d.Listen, d.MaxBodyBytes)
				}
			},
		},
		{
			name: "int field from env default",
			yaml: "max_body_bytes: ${X:-1024}\n" + withUpstream(""),
			check: func(t *testing.T, c Config) {
				if c.MaxBodyBytes != 1024 {
					t.Errorf("max_body_bytes = %d, want 1024", c.MaxBodyBytes)
				}
			},
		},
		{
			name: "int field from env",
			env:  map[string]string{"X": "2048"},
			// A reference in a flow mapping ({limit: ${X}}) is a YAML
			// syntax error (its "}" ends the mapping): use block style.
			yaml: "max_body_bytes: ${X:-1024}\n" + withUpstream("    priority: ${PRIO:-3}\n    quota:\n      limit: ${LIMIT:-100}\n"),
			check: func(t *testing.T, c Config) {
				if c.MaxBodyBytes != 2048 || c.Upstreams[0].Priority != 3 || c.Upstreams[0].Quota.Limit != 100 {
					t.Errorf("max_body_bytes, priority, quota.limit = %d, %d, %d; want 2048, 3, 100",
						c.MaxBodyBytes, c.Upstreams[0].Priority, c.Upstreams[0].Quota.Limit)
				}
			},
		},
		{
			name: "duration and float from env",
			env:  map[string]string{"T": "45s", "W": "0.7"},
			yaml: "routing:\n  weights:\n    health: ${W}\n" + withUpstream("    timeout: ${T}\n"),
			check: func(t *testing.T, c Config) {
				if c.Upstreams[0].Timeout != 45*time.Second || c.Routing.Weights.Health != 0.7 {
					t.Errorf("timeout, weights.health = %v, %v; want 45s, 0.7", c.Upstreams[0].Timeout, c.Routing.Weights.Health)
				}
			},
		},
		{
			name: "list from env stays one string",
			env:  map[string]string{"MC": "[a:1, b:2]"},
			yaml: "cache: {namespace: x}\nauth: {keys: ['${MC}']}\n" + withUpstream(""),
			check: func(t *testing.T, c Config) {
				if !reflect.DeepEqual(c.Auth.Keys, []string{"[a:1, b:2]"}) {
					t.Errorf("auth.keys = %q, want one key %q", c.Auth.Keys, "[a:1, b:2]")
				}
			},
		},
		{
			name: "numeric key stays a string",
			env:  map[string]string{"K": "0012345"},
			yaml: withUpstream("    api_key: ${K}\n"),
			check: func(t *testing.T, c Config) {
				if got := c.Upstreams[0].APIKey; got != "0012345" {
					t.Errorf("api_key = %q, want 0012345", got)
				}
			},
		},
		{
			name: "quoted reference stays a string",
			env:  map[string]string{"K": "12345"},
			yaml: withUpstream("    api_key: \"${K}\"\n    quota_group: '${G:-007}'\n"),
			check: func(t *testing.T, c Config) {
				if u := c.Upstreams[0]; u.APIKey != "12345" || u.QuotaGroup != "007" {
					t.Errorf("api_key, quota_group = %q, %q; want 12345, 007", u.APIKey, u.QuotaGroup)
				}
			},
		},
		{
			name: "quoted unset reference is empty",
			yaml: withUpstream("    api_key: \"${K}\"\n"),
			check: func(t *testing.T, c Config) {
				if c.Upstreams[0].Configured() {
					t.Errorf("api_key = %q, want empty", c.Upstreams[0].APIKey)
				}
			},
		},
		{
			name: "value containing a reference is not expanded again",
			env:  map[string]string{"K": "sk-${NOT_A_VAR}"},
			yaml: withUpstream("    api_key: ${K}\n"),
			check: func(t *testing.T, c Config) {
				if got := c.Upstreams[0].APIKey; got != "sk-${NOT_A_VAR}" {
					t.Errorf("api_key = %q, want it literally", got)
				}
			},
		},
		{
			name: "empty var with an empty default keeps the built-in default",
			env:  map[string]string{"LISTEN": ""},
			yaml: "listen: ${LISTEN:-}\n" + withUpstream(""),
			check: func(t *testing.T, c Config) {
				if c.Listen != Default().Listen {
					t.Errorf("listen = %q, want the default", c.Listen)
				}
			},
		},
		{
			name: "set but empty api_key leaves the upstream unconfigured",
			env:  map[string]string{"GROQ_KEY": ""},
			yaml: withUpstream("    api_key: ${GROQ_KEY}\n"),
			check: func(t *testing.T, c Config) {
				if c.Upstreams[0].Configured() {
					t.Errorf("api_key = %q, want empty", c.Upstreams[0].APIKey)
				}
			},
		},
		{
			name: "unset key in an anchor shared by a merge",
			yaml: "upstreams:\n  - &a\n    name: a\n    provider: groq\n    api_key: ${K}\n  - <<: *a\n    name: b\n",
			check: func(t *testing.T, c Config) {
				if len(c.Upstreams) != 2 || c.Upstreams[1].Configured() {
					t.Errorf("upstreams = %+v, want two unconfigured", c.Upstreams)
				}
			},
		},
		{
			name: "header values from env",
			env:  map[string]string{"HF_BILL_TO": "my-org"},
			yaml: withUpstream("    headers:\n      X-HF-Bill-To: ${HF_BILL_TO}\n      X-Unset: ${UNSET}\n      X-Default: ${UNSET:-d}\n"),
			check: func(t *testing.T, c Config) {
				want := map[string]string{"X-HF-Bill-To": "my-org", "X-Unset": "", "X-Default": "d"}
				if got := c.Upstreams[0].Headers; !reflect.DeepEqual(got, want) {
					t.Errorf("headers = %q, want %q", got, want)
				}
			},
		},
		{
			name: "base_url from env with default",
			yaml: withUpstream("    base_url: ${GROQ_URL:-http://127.0.0.1:9999/v1/}\n"),
			check: func(t *testing.T, c Config) {
				if got := c.Upstreams[0].BaseURL; got != "http://127.0.0.1:9999/v1" {
					t.Errorf("base_url = %q", got)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(strings.NewReader(tc.yaml), envOf(tc.env))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			tc.check(t, cfg)
		})
	}
}

// TestParseEnvSpecialCharacters checks that a value with YAML syntax in it
// is taken as the string it is and cannot change the document's structure.
func TestParseEnvSpecialCharacters(t *testing.T) {
	values := []string{
		"abc: #def",
		"abc #def",
		"#abc",
		"- item",
		"[a, b]",
		"{a: b}",
		"*alias",
		"&anchor x",
		"!!int 5",
		"!tag",
		"|",
		">-",
		"'single'",
		`"double"`,
		`back\slash`,
		"%percent",
		"@at `tick`",
		"? key",
		"a\tb",
		"null",
		"true",
		"~x",
		"0x1F",
		"1e3",
		" leading and trailing ",
		"ключ-🔑",
	}
	const y = "upstreams:\n  - name: a\n    provider: groq\n    api_key: ${K}\n    priority: 2\n  - name: b\n    provider: groq\n    api_key: ${K}\n"
	for _, v := range values {
		t.Run(v, func(t *testing.T) {
			cfg, err := parse(strings.NewReader(y), envOf(map[string]string{"K": v}))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if len(cfg.Upstreams) != 2 {
				t.Fatalf("%d upstreams, want 2", len(cfg.Upstreams))
			}
			for i, u := range cfg.Upstreams {
				if u.APIKey != v {
					t.Errorf("upstreams[%d].api_key = %q, want %q", i, u.APIKey, v)
				}
			}
			if cfg.Upstreams[0].Priority != 2 || cfg.Upstreams[1].Name != "b" {
				t.Errorf("structure changed: %+v", cfg.Upstreams)
			}
		})
	}
}

// TestParseEnvNotInErrors checks that an error never quotes an expanded
// value: the environment holds secrets.
func TestParseEnvNotInErrors(t *testing.T) {
	const secret = "gsk_SECRET${"
	for _, y := range []string{
		withUpstream("    api_key: ${K}\n    timeout: ${K}\n"),
		withUpstream("    api_key: ${K}\n    priority: ${K}\n"),
		withUpstream("    api_key: ${K}\n    provider: ${K}\n"),
		withUpstream("    headers:\n      X-Key: ${K}\n      X-Bad: ${BAD}\n"),
		// A key written in the file is as secret as one in the environment.
		withUpstream("    api_key: gsk_SECRET_in_file${\n"),
		withUpstream("    api_key: gsk_SECRET_in_file\n    timeout: ${UNSET_T}\n"),
	} {
		_, err := parse(strings.NewReader(y), envOf(map[string]string{"K": secret, "BAD": "SECRET\r\nX: 1"}))
		if err == nil {
			t.Errorf("parse(%q) succeeded, want an error", y)
			continue
		}
		if strings.Contains(err.Error(), "SECRET") {
			t.Errorf("error quotes the secret: %v", err)
		}
	}
}

// TestParseEnvRequired covers the variables set in the environment but
// empty: like an unset one, an error where the reference has no default,
// except in api_key and header values. The error names the variable.
func TestParseEnvRequired(t *testing.T) {
	env := envOf(map[string]string{"EMPTY": "", "SET": "127.0.0.1:9000"})
	for _, tc := range []struct {
		name, yaml string
		want       string // "" for no error
	}{
		{"empty listen", "listen: ${EMPTY}\n" + withUpstream(""), "listen: ${EMPTY} is empty in the environment and has no default (line 1)"},
		{"empty listen with a default", "listen: ${EMPTY:-127.0.0.1:9001}\n" + withUpstream(""), ""},
		{"empty listen with an empty default", "listen: ${EMPTY:-}\n" + withUpstream(""), ""},
		{"set listen", "listen: ${SET}\n" + withUpstream(""), ""},
		{"empty api_key", withUpstream("    api_key: ${EMPTY}\n"), ""},
		{"empty header value", withUpstream("    headers:\n      X-Org: ${EMPTY}\n"), ""},
		{"empty in a second upstream's base_url", withUpstream("  - name: b\n    provider: openai\n    base_url: ${EMPTY}\n"), "upstreams[1].base_url: ${EMPTY} is empty in the environment"},
		{"empty model name", withUpstream("    models:\n      a: ${EMPTY}\n"), "upstreams[0].models.a: ${EMPTY} is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(strings.NewReader(tc.yaml), env)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("parse: %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("parse: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestParseWarnings checks the warning for an api_key that does not come
// from the environment: one per key, naming its path and line, never
// quoting the key.
func TestParseWarnings(t *testing.T) {
	const key = "gsk_LITERAL_1234"
	env := envOf(map[string]string{"K": "gsk_from_env", "EMPTY": ""})
	for _, tc := range []struct {
		name, yaml string
		want       []string // a prefix of each warning, in order
	}{
		{"literal", withUpstream("    api_key: " + key + "\n"), []string{"upstreams[0].api_key: the key is written in the config file (line 4)"}},
		{"quoted literal", withUpstream("    api_key: '" + key + "'\n"), []string{"upstreams[0].api_key: "}},
		{"numeric literal", withUpstream("    api_key: 12345\n"), []string{"upstreams[0].api_key: "}},
		{"default from the file", withUpstream("    api_key: ${UNSET:-" + key + "}\n"), []string{"upstreams[0].api_key: "}},
		{"default from the file, variable empty", withUpstream("    api_key: ${EMPTY:-" + key + "}\n"), []string{"upstreams[0].api_key: "}},
		{"one of two upstreams", withUpstream("    api_key: ${K}\n  - name: b\n    provider: groq\n    api_key: " + key + "\n"), []string{"upstreams[1].api_key: "}},
		{"two upstreams", withUpstream("    api_key: " + key + "\n  - name: b\n    provider: groq\n    api_key: " + key + "\n"),
			[]string{"upstreams[0].api_key: ", "upstreams[1].api_key: "}},
		{"an anchor is reported where it is written", withUpstream("    api_key: &k " + key + "\n  - name: b\n    provider: groq\n    api_key: *k\n"),
			[]string{"upstreams[0].api_key: "}},
		{"in a merged mapping", withUpstream("    <<:\n      api_key: " + key + "\n"), []string{"upstreams[0].api_key: "}},
		{"from the environment", withUpstream("    api_key: ${K}\n"), nil},
		{"partly from the environment", withUpstream("    api_key: gsk_${K}\n"), nil},
		{"default not used", withUpstream("    api_key: ${K:-" + key + "}\n"), nil},
		{"unset", withUpstream("    api_key: ${UNSET}\n"), nil},
		{"empty", withUpstream("    api_key: ''\n"), nil},
		{"null", withUpstream("    api_key: ~\n"), nil},
		{"left out", withUpstream(""), nil},
		// Only api_key: other literal values are not checked.
		{"literal header and auth key", "auth: {keys: [" + key + "]}\n" + withUpstream("    headers: {X-Token: "+key+"}\n"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(strings.NewReader(tc.yaml), env)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if len(cfg.Warnings) != len(tc.want) {
				t.Fatalf("warnings = %q, want %d", cfg.Warnings, len(tc.want))
			}
			for i, w := range cfg.Warnings {
				if !strings.HasPrefix(w, tc.want[i]) {
					t.Errorf("warnings[%d] = %q, want it to start with %q", i, w, tc.want[i])
				}
				if strings.Contains(w, "LITERAL") || strings.Contains(w, "12345") || strings.Contains(w, "from_env") {
					t.Errorf("warnings[%d] = %q quotes the key", i, w)
				}
			}
		})
	}
	// Warnings are not a YAML key.
	if _, err := parse(strings.NewReader("warnings: [x]\n"+withUpstream("")), noEnv); err == nil || !strings.Contains(err.Error(), "warnings: unknown key") {
		t.Errorf("warnings as a key: %v, want unknown key", err)
	}
	if _, err := parse(strings.NewReader("'-': [x]\n"+withUpstream("")), noEnv); err == nil || !strings.Contains(err.Error(), "-: unknown key") {
		t.Errorf("- as a key: %v, want unknown key", err)
	}
}

// TestParseLimitsAccepted covers the accepted side of the address and
// timeout rules: distinct admin and API addresses, port 0 (any free
// port) on both, and each minimum timeout itself.
func TestParseLimitsAccepted(t *testing.T) {
	for _, y := range []string{
		"listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:9090\n",
		"listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n",
		"listen: ':0'\nadmin_listen: ':0'\n",
		"listen: 127.0.0.1:9000\nadmin_listen: 127.0.0.2:9000\n",
		"listen: 127.0.0.1:9000\nadmin_listen: '[::1]:9000'\n",
		"listen: localhost:9000\nadmin_listen: 127.0.0.1:9001\n",
		"read_timeout: 100ms\ncache: {timeout: 10ms}\n",
	} {
		y += withUpstream("    timeout: 100ms\n    first_token_timeout: 100ms\n    idle_timeout: 100ms\n")
		if _, err := parse(strings.NewReader(y), noEnv); err != nil {
			t.Errorf("parse(%q): %v", y, err)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	const y = `
upstreams:
  - name: g
    provider: groq
  - name: h
    provider: huggingface
  - name: o
    provider: openai
  - name: local
    provider: openai
    base_url: http://127.0.0.1:8000/v1///
  - name: explicit
    provider: groq
    timeout: 0s
    first_token_timeout: 3s
    quota: {unit: tokens}
`
	cfg, err := parse(strings.NewReader(y), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	d := Default()
	top := cfg
	top.Upstreams = nil
	if !reflect.DeepEqual(top, d) {
		t.Errorf("top-level settings = %+v, want Default() %+v", top, d)
	}
	wantURL := []string{
		"https://api.groq.com/openai/v1",
		"https://router.huggingface.co/v1",
		"https://api.openai.com/v1",
		"http://127.0.0.1:8000/v1",
		"https://api.groq.com/openai/v1",
	}
	for i, u := range cfg.Upstreams {
		if u.BaseURL != wantURL[i] {
			t.Errorf("upstreams[%d].base_url = %q, want %q", i, u.BaseURL, wantURL[i])
		}
		if u.Timeout != 60*time.Second || u.IdleTimeout != 10*time.Second {
			t.Errorf("upstreams[%d] timeout, idle_timeout = %v, %v; want 60s, 10s", i, u.Timeout, u.IdleTimeout)
		}
		wantPeriod := PeriodDay
		if u.Provider == ProviderHuggingFace {
			wantPeriod = PeriodMonth // monthly credits
		}
		if u.Quota.Period != wantPeriod || u.Quota.Limit != 0 {
			t.Errorf("upstreams[%d].quota = %+v, want period %s, limit 0", i, u.Quota, wantPeriod)
		}
		if u.Retry != (Retry{Backoff: 200 * time.Millisecond}) {
			t.Errorf("upstreams[%d].retry = %+v, want backoff 200ms, no attempts", i, u.Retry)
		}
		if u.Priority != 0 || u.Configured() {
			t.Errorf("upstreams[%d] priority, configured = %d, %v; want 0, false", i, u.Priority, u.Configured())
		}
	}
	for i, want := range []time.Duration{10 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second, 3 * time.Second} {
		if got := cfg.Upstreams[i].FirstTokenTimeout; got != want {
			t.Errorf("upstreams[%d].first_token_timeout = %v, want %v", i, got, want)
		}
	}
	for i, want := range []string{UnitRequests, UnitRequests, UnitRequests, UnitRequests, UnitTokens} {
		if got := cfg.Upstreams[i].Quota.Unit; got != want {
			t.Errorf("upstreams[%d].quota.unit = %q, want %q", i, got, want)
		}
	}
}

// TestParseProviderDefaults checks that after Parse forward_headers and
// unsupported_params hold the effective lists: the provider default when
// the key is left out or null, the file's list otherwise, with an explicit
// [] meaning none. The lists are never nil after Parse.
func TestParseProviderDefaults(t *testing.T) {
	groqParams := []string{"n", "logprobs", "top_logprobs", "logit_bias"}
	cases := []struct {
		name        string
		provider    string
		fields      string
		forward     []string
		unsupported []string
	}{
		{"groq defaults", "groq", "", []string{}, groqParams},
		{"huggingface defaults", "huggingface", "", []string{"X-HF-Bill-To"}, []string{}},
		{"openai defaults", "openai", "", []string{}, []string{}},
		{"groq explicit empty", "groq", "    unsupported_params: []\n    forward_headers: []\n", []string{}, []string{}},
		{"huggingface explicit empty", "huggingface", "    forward_headers: []\n", []string{}, []string{}},
		{"groq explicit null is the default", "groq", "    unsupported_params:\n    forward_headers: ~\n", []string{}, groqParams},
		{"groq override", "groq", "    unsupported_params: [logit_bias, parallel_tool_calls]\n", []string{}, []string{"logit_bias", "parallel_tool_calls"}},
		{"huggingface override", "huggingface", "    forward_headers: [X-HF-Bill-To, X-Trace-Id]\n    unsupported_params: [n]\n",
			[]string{"X-HF-Bill-To", "X-Trace-Id"}, []string{"n"}},
		{"openai block list", "openai", "    forward_headers:\n      - X-Trace-Id\n", []string{"X-Trace-Id"}, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y := "upstreams:\n  - name: a\n    provider: " + tc.provider + "\n" + tc.fields
			cfg, err := parse(strings.NewReader(y), noEnv)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			u := cfg.Upstreams[0]
			if u.ForwardHeaders == nil || !reflect.DeepEqual(u.ForwardHeaders, tc.forward) {
				t.Errorf("forward_headers = %#v, want %#v", u.ForwardHeaders, tc.forward)
			}
			if u.UnsupportedParams == nil || !reflect.DeepEqual(u.UnsupportedParams, tc.unsupported) {
				t.Errorf("unsupported_params = %#v, want %#v", u.UnsupportedParams, tc.unsupported)
			}
			if u.DropParams || u.Headers != nil || u.Retry.MaxRetryAfter != 0 {
				t.Errorf("drop_params, headers, max_retry_after = %v, %v, %v; want false, none, 0", u.DropParams, u.Headers, u.Retry.MaxRetryAfter)
			}
		})
	}
}

// TestParseProviderDefaultsNotShared checks that each upstream gets its own
// copy of a default list: changing one upstream's list (or the defaults
// table) after Parse changes nothing else.
func TestParseProviderDefaultsNotShared(t *testing.T) {
	cfg, err := parse(strings.NewReader(withUpstream("  - name: b\n    provider: groq\n")), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	cfg.Upstreams[0].UnsupportedParams[0] = "changed"
	if got := cfg.Upstreams[1].UnsupportedParams[0]; got != "n" {
		t.Errorf("upstreams[1].unsupported_params[0] = %q after editing upstreams[0]'s, want n", got)
	}
	if got := DefaultUnsupportedParams[ProviderGroq][0]; got != "n" {
		t.Errorf("DefaultUnsupportedParams[groq][0] = %q after editing a parsed list, want n", got)
	}
}

// TestYAMLEmptyListIsNotNil pins the yaml.v3 behaviour the provider
// defaults rely on: "key: []" decodes to an empty, non-nil slice, while a
// missing key or "key:" (null) leaves the field nil.
func TestYAMLEmptyListIsNotNil(t *testing.T) {
	var v struct {
		Empty   []string `yaml:"empty"`
		Null    []string `yaml:"null"`
		Missing []string `yaml:"missing"`
	}
	if err := yaml.Unmarshal([]byte("empty: []\nnull:\n"), &v); err != nil {
		t.Fatal(err)
	}
	if v.Empty == nil || len(v.Empty) != 0 {
		t.Errorf("empty: [] decoded as %#v, want []string{}", v.Empty)
	}
	if v.Null != nil || v.Missing != nil {
		t.Errorf("null, missing decoded as %#v, %#v; want nil, nil", v.Null, v.Missing)
	}
}

func TestReservedHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"Authorization", true}, {"authorization", true}, {"HOST", true}, {"Te", true},
		{"Accept-Encoding", true}, {"Proxy-Authorization", true},
		{"X-HF-Bill-To", false}, {"X-Authorization", false}, {"Accept-Language", false}, {"", false},
	} {
		if got := ReservedHeader(tc.name); got != tc.want {
			t.Errorf("ReservedHeader(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestParseNearCache covers the accepted near-cache settings: the
// defaults, the minimum size, and 0, which turns the near cache off and
// makes near_ttl irrelevant.
func TestParseNearCache(t *testing.T) {
	cases := []struct {
		name     string
		cache    string
		maxBytes int64
		ttl      time.Duration
	}{
		{"defaults", "cache: {memcached: ['m:11211']}\n", 16 << 20, 10 * time.Second},
		{"minimum size", "cache: {memcached: ['m:11211'], near_max_bytes: 1048576, near_ttl: 500ms}\n", 1 << 20, 500 * time.Millisecond},
		{"off", "cache: {memcached: ['m:11211'], near_max_bytes: 0}\n", 0, 10 * time.Second},
		{"off, near_ttl then unused", "cache: {memcached: ['m:11211'], near_max_bytes: 0, near_ttl: 0s}\n", 0, 0},
		{"embedded cache keeps the defaults", "cache: {max_bytes: 1048576}\n", 16 << 20, 10 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(strings.NewReader(tc.cache+withUpstream("")), noEnv)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if cfg.Cache.NearMaxBytes != tc.maxBytes || cfg.Cache.NearTTL != tc.ttl {
				t.Errorf("near_max_bytes, near_ttl = %d, %v; want %d, %v", cfg.Cache.NearMaxBytes, cfg.Cache.NearTTL, tc.maxBytes, tc.ttl)
			}
		})
	}
}

func TestDefaultIsValidWithAnUpstream(t *testing.T) {
	c := Default()
	c.Upstreams = []Upstream{{Name: "a", Provider: ProviderGroq}}
	c.Upstreams[0].applyDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("Default() plus one upstream: %v", err)
	}
	c.Upstreams = nil
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "upstreams:") {
		t.Errorf("Default() without upstreams: Validate() = %v, want an upstreams error", err)
	}
}

// TestShippedConfig loads the repository's config.yaml the way a fresh
// checkout starts: no keys in the environment.
func TestShippedConfig(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := parse(strings.NewReader(string(raw)), noEnv)
	if err != nil {
		t.Fatalf("shipped config.yaml: %v", err)
	}
	want := []struct {
		name, provider, baseURL string
		priority                int
	}{
		{"groq_1", ProviderGroq, "https://api.groq.com/openai/v1", 1},
		{"groq_2", ProviderGroq, "https://api.groq.com/openai/v1", 1},
		{"groq_3", ProviderGroq, "https://api.groq.com/openai/v1", 1},
		{"huggingface_1", ProviderHuggingFace, "https://router.huggingface.co/v1", 5},
		{"huggingface_2", ProviderHuggingFace, "https://router.huggingface.co/v1", 6},
	}
	if len(cfg.Upstreams) != len(want) {
		t.Fatalf("%d upstreams, want %d", len(cfg.Upstreams), len(want))
	}
	for i, w := range want {
		u := cfg.Upstreams[i]
		if u.Name != w.name || u.Provider != w.provider || u.BaseURL != w.baseURL || u.Priority != w.priority {
			t.Errorf("upstreams[%d] = %s/%s/%s/%d, want %s/%s/%s/%d", i,
				u.Name, u.Provider, u.BaseURL, u.Priority, w.name, w.provider, w.baseURL, w.priority)
		}
		if u.Configured() {
			t.Errorf("upstreams[%d] (%s) is configured with no environment", i, u.Name)
		}
		if u.Models["llama-3.3-70b"] == "" || u.Models["llama-3.1-8b"] == "" {
			t.Errorf("upstreams[%d] (%s) models = %v, want both aliases", i, u.Name, u.Models)
		}
		// Groq limits are per organisation: the keys of one org share a group.
		if w.provider == ProviderGroq && (u.QuotaGroup != "groq_org" || u.Quota != cfg.Upstreams[0].Quota) {
			t.Errorf("upstreams[%d] (%s) quota_group %q quota %+v, want groq_org sharing groq_1's quota", i, u.Name, u.QuotaGroup, u.Quota)
		}
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("shipped config.yaml warns: %q", cfg.Warnings)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.Streaming.Commit != CommitFirstEvent || len(cfg.Cache.Memcached) != 0 {
		t.Errorf("listen, commit, memcached = %q, %q, %v", cfg.Listen, cfg.Streaming.Commit, cfg.Cache.Memcached)
	}

	// With every key set, all five are configured and the summary counts
	// them without printing any.
	env := map[string]string{
		"GROQ_API_KEY_1": "gsk_one", "GROQ_API_KEY_2": "gsk_two", "GROQ_API_KEY_3": "gsk_three",
		"HF_API_KEY_1": "hf_one", "HF_API_KEY_2": "hf_two", "SWITCHYARD_LISTEN": "0.0.0.0:8080",
	}
	cfg, err = parse(strings.NewReader(string(raw)), envOf(env))
	if err != nil {
		t.Fatalf("shipped config.yaml with keys: %v", err)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("shipped config.yaml with keys warns: %q", cfg.Warnings)
	}
	for i, k := range []string{"gsk_one", "gsk_two", "gsk_three", "hf_one", "hf_two"} {
		if got := cfg.Upstreams[i].APIKey; got != k {
			t.Errorf("upstreams[%d].api_key = %q, want %q", i, got, k)
		}
	}
	s := cfg.Summary()
	if !strings.Contains(s, "5 upstreams (5 with keys)") || !strings.Contains(s, "0.0.0.0:8080") {
		t.Errorf("Summary() = %q", s)
	}
	for _, k := range env {
		if strings.Contains(s, k) && k != env["SWITCHYARD_LISTEN"] {
			t.Errorf("Summary() %q contains a key", s)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(ok, []byte(withUpstream("    api_key: literal\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(ok)
	if err != nil || cfg.Upstreams[0].APIKey != "literal" {
		t.Errorf("Load(ok) = %+v, %v", cfg, err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(withUpstream("    timout: 1s\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "upstreams[0].timout") {
		t.Errorf("Load(bad) = %v, want the path and the key", err)
	}

	missing := filepath.Join(dir, "missing.yaml")
	if _, err := Load(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

func TestSummary(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(c *Config)
		cache string
	}{
		{"embedded", func(c *Config) {}, "embedded"},
		{"memcached with the near cache", func(c *Config) { c.Cache.Memcached = []string{"a:1", "b:2"} },
			"memcached(2 servers)+near(16777216 bytes, 10s)"},
		{"memcached without the near cache", func(c *Config) { c.Cache.Memcached, c.Cache.NearMaxBytes = []string{"a:1", "b:2"}, 0 },
			"memcached(2 servers)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Upstreams = []Upstream{{Name: "a", APIKey: "secret"}, {Name: "b"}}
			tc.edit(&c)
			want := "config ok: listen 127.0.0.1:8080, 2 upstreams (1 with keys), cache " + tc.cache + " ttl 720h0m0s"
			if got := c.Summary(); got != want {
				t.Errorf("Summary() = %q, want %q", got, want)
			}
		})
	}
}
