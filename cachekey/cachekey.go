// Package cachekey derives memcached-safe cache keys from OpenAI
// chat-completions request bodies.
//
// Switchyard answers a repeated request from its response cache. Two request
// bodies that ask for the same answer must therefore map to the same key, and
// two bodies that may be answered differently must not. [Derive] achieves
// this by
//
//  1. parsing the body as strict JSON (RFC 8259) with a streaming
//     canonicalizer (no encoding/json, no maps, no float64 rounding),
//  2. dropping the top-level request fields listed below,
//  3. writing the rest in a canonical form (see [Canonicalize]), and
//  4. hashing the canonical bytes, after a domain separator, with SHA-256.
//
// The key has the form "<namespace>:v1:<64 lowercase hex digits>". With a
// namespace accepted by [ValidNamespace] it is at most 132 bytes long and
// contains no space, control character or DEL, so it is a legal memcached
// key. "v1" names the canonical form and field list: any change that would
// map an existing body to a different key must bump it.
//
// A client may also choose the key itself (X-Cache-Key header); [FromText]
// turns such a text into a key of the same shape, hashed with a domain
// separator so it can never collide with a derived key.
//
// # Dropped fields
//
// Only top-level members of the request object are ever dropped, and only
// those that cannot change the generated answer:
//
//   - stream, stream_options: transport framing only (SSE chunks versus one
//     JSON document, whether a usage chunk is sent). The generated message
//     is the same either way; replaying a cached answer in the requested
//     shape is the caller's job.
//   - user, safety_identifier: an opaque end-user identifier for the
//     provider's abuse monitoring (safety_identifier is its successor).
//   - metadata, store: tags for, and whether to keep, the completion in the
//     provider's stored-completions dashboard.
//   - prompt_cache_key, prompt_cache_retention: routing and retention hints
//     for the provider's prompt-prefix cache; they change latency and the
//     cached-token count, not the output.
//
// Everything else stays, in particular model, messages, n, seed,
// temperature, top_p, max_tokens, max_completion_tokens, stop, tools,
// tool_choice, parallel_tool_calls, response_format, logprobs, top_logprobs,
// logit_bias, reasoning_effort and any unknown or vendor-specific extension.
// service_tier is deliberately kept: it selects a different serving pool,
// and the response echoes it, so a cached answer for one tier is not an
// answer for another. Nested members named like a dropped field (for
// example a tool parameter called "user") are kept.
//
// # Strictness
//
// Inputs that are not a single valid JSON text are rejected with an error
// wrapping [ErrInvalidJSON]; so are a few texts that RFC 8259 permits but a
// cache key must not silently merge:
//
//   - duplicate member names in one object (parsers disagree on which value
//     wins, so there is no single meaning to key on);
//   - invalid UTF-8 in a string, and \u escapes forming a lone surrogate
//     (replacing them with U+FFFD would collide distinct requests);
//   - nesting deeper than [MaxDepth] arrays and objects.
//
// No input makes the package panic.
package cachekey

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
)

// ErrInvalidJSON is returned, wrapped with the offending byte offset and a
// description, for any input that is not a valid JSON text, or that this
// package refuses (duplicate object keys, invalid UTF-8, lone surrogates,
// nesting deeper than MaxDepth, a non-object request body). Test for it
// with errors.Is.
var ErrInvalidJSON = errors.New("cachekey: invalid JSON")

// ErrInvalidNamespace is returned by Derive and AppendDerive when the
// namespace does not satisfy ValidNamespace.
var ErrInvalidNamespace = errors.New("cachekey: invalid namespace")

// MaxDepth is the deepest nesting of arrays and objects accepted. The
// top-level value of a document such as {"a":[1]} is at depth 1, the array at
// depth 2.
const MaxDepth = 1000

// version is the key-format version embedded in every key.
const version = "v1"

// Domain separators prefixed to the hashed input, so that a derived key and
// a text key can never be computed over the same bytes.
const (
	derivePrefix = "json\x00"
	textPrefix   = "text\x00"
)

// MaxKeyLen is the longest key Derive or FromText can return: a 64-byte
// namespace, ":v1:" and 64 hex digits. It is well below memcached's 250.
const MaxKeyLen = 64 + 1 + len(version) + 1 + 2*sha256.Size

// ValidNamespace reports whether ns is usable as a key namespace: 1 to 64
// bytes, each an ASCII letter, digit, '_', '.' or '-'.
func ValidNamespace(ns string) bool {
	if len(ns) == 0 || len(ns) > 64 {
		return false
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// Derive returns "<namespace>:v1:<64 hex sha256>" for a chat-completions
// request body: the body must be a JSON object; the top-level fields that do
// not change the answer (see the package documentation) are dropped, the
// rest is canonicalized as by Canonicalize, and SHA-256 is taken over
// "json\x00" followed by the canonical bytes. Bodies that differ only in key order, whitespace, string escaping,
// number spelling or dropped fields get the same key.
//
// The error wraps ErrInvalidJSON for a body that is not a valid JSON object,
// or is ErrInvalidNamespace.
func Derive(namespace string, body []byte) (string, error) {
	var arr [MaxKeyLen]byte
	b, err := AppendDerive(arr[:0], namespace, body)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// AppendDerive is like Derive but appends the key to dst and returns the
// extended slice, so a caller with a reusable buffer derives keys without
// allocating. On error dst is returned unchanged.
func AppendDerive(dst []byte, namespace string, body []byte) ([]byte, error) {
	if !ValidNamespace(namespace) {
		return dst, ErrInvalidNamespace
	}
	s := getState()
	out := append(s.out[:0], derivePrefix...)
	out, err := s.canonicalize(out, body, true)
	if err != nil {
		s.out = out
		putState(s)
		return dst, err
	}
	sum := sha256.Sum256(out)
	s.out = out
	putState(s)
	return appendKey(dst, namespace, &sum), nil
}

// FromText returns the key for a caller-chosen text, such as the value of
// an X-Cache-Key header: "<namespace>:v1:<64 hex sha256>", the hash taken
// over "text\x00" followed by text. Derive hashes "json\x00" followed by
// the canonical body, so the two hash inputs always differ and a text key
// cannot collide with a derived key (short of a SHA-256 collision). Any text (empty,
// spaces, control characters, invalid UTF-8, kilobytes long) gives a valid
// memcached key.
//
// namespace must satisfy ValidNamespace (validate it once, when loading
// configuration); if it does not, FromText returns the empty string, which
// no cache accepts as a key.
func FromText(namespace, text string) string {
	if !ValidNamespace(namespace) {
		return ""
	}
	var sum [sha256.Size]byte
	if len(textPrefix)+len(text) <= 512 {
		var arr [512]byte
		b := append(append(arr[:0], textPrefix...), text...)
		sum = sha256.Sum256(b)
	} else {
		s := getState()
		s.out = append(append(s.out[:0], textPrefix...), text...)
		sum = sha256.Sum256(s.out)
		putState(s)
	}
	var arr [MaxKeyLen]byte
	return string(appendKey(arr[:0], namespace, &sum))
}

func appendKey(dst []byte, namespace string, sum *[sha256.Size]byte) []byte {
	dst = append(dst, namespace...)
	dst = append(dst, ':')
	dst = append(dst, version...)
	dst = append(dst, ':')
	return hex.AppendEncode(dst, sum[:])
}

// Canonicalize appends the canonical form of the JSON document in src to dst
// and returns the extended slice; dst and src must not overlap. On error dst
// is returned unchanged and the error wraps ErrInvalidJSON. Any JSON value is
// accepted at the top level, and no field is dropped (that is Derive's job).
//
// The canonical form is valid JSON with one spelling per value:
//
//   - no insignificant whitespace;
//   - object members sorted by the bytes of their decoded names (UTF-8, so
//     this is also code-point order), at every depth; duplicate names are
//     an error;
//   - strings with every escape decoded and re-encoded minimally: only '"'
//     and '\' are escaped (as \" and \\), and control characters below 0x20
//     (as \b \f \n \r \t, otherwise \u00xx with lowercase hex); everything
//     else, including '/', DEL and non-ASCII, is literal UTF-8;
//   - numbers written exactly, by decimal value (see below);
//   - true, false and null as they are.
//
// Numbers are reduced, without rounding, to an optional '-', a digit string
// D without leading or trailing zeros and a scientific exponent X (the value
// is D[0].D[1:] × 10^X). Zero, including -0 and 0e5, is written "0". Otherwise,
// following ECMAScript's Number-to-String layout but keeping every digit:
//
//   - 0 <= X < 21: positional, e.g. 1, 100, 12.5, 123456789012345678901;
//   - -7 < X < 0: "0." plus zeros, e.g. 0.5, 0.000001;
//   - otherwise: D[0] "." D[1:] "e" sign X, e.g. 1e-7, 1e+21,
//     1.2345678901234567890123456789e+29 (the "." part omitted when D has
//     one digit).
//
// So 1, 1.0, 1e0, 10e-1 and 0.1e1 all become 1, and two numbers have the same
// canonical form exactly when they denote the same decimal value. Exponents
// of any size are handled exactly.
//
// Canonicalize is idempotent: canonicalizing its output reproduces it.
func Canonicalize(dst, src []byte) ([]byte, error) {
	s := getState()
	out, err := s.canonicalize(dst, src, false)
	putState(s)
	if err != nil {
		return dst, err
	}
	return out, nil
}

var statePool = sync.Pool{New: func() any { return new(state) }}

func getState() *state {
	return statePool.Get().(*state)
}

// Limits on what a pooled state keeps between uses, so that one huge body
// does not pin its memory forever.
const (
	keepBytes   = 1 << 20
	keepRecords = 1 << 14
)

func putState(s *state) {
	s.src = nil
	if cap(s.out) > keepBytes {
		s.out = nil
	}
	if cap(s.arena) > keepBytes {
		s.arena = nil
	}
	if cap(s.keys) > keepBytes {
		s.keys = nil
	}
	if cap(s.mems) > keepRecords {
		s.mems = nil
	}
	if cap(s.objs) > keepRecords {
		s.objs = nil
	}
	if cap(s.perm) > keepRecords {
		s.perm = nil
	}
	statePool.Put(s)
}
