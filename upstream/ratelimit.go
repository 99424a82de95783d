package upstream

import (
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/policy"
)

// ParseRateLimit reads the OpenAI/Groq rate-limit headers
// (x-ratelimit-{limit,remaining,reset}-{requests,tokens}) and retry-after /
// retry-after-ms. Unparsable values are ignored.
func ParseRateLimit(h *fasthttp.ResponseHeader, now time.Time) policy.RateLimit {
	var rl policy.RateLimit
	get := func(k string) string { return string(h.Peek(k)) }
	if v, ok := parseInt(get("x-ratelimit-limit-requests")); ok {
		rl.LimitRequests, rl.Known = v, true
	}
	if v, ok := parseInt(get("x-ratelimit-remaining-requests")); ok {
		rl.RemainingRequests, rl.Known = v, true
	}
	if v, ok := ParseReset(get("x-ratelimit-reset-requests")); ok {
		rl.ResetRequests, rl.Known = v, true
	}
	if v, ok := parseInt(get("x-ratelimit-limit-tokens")); ok {
		rl.LimitTokens, rl.Known = v, true
	}
	if v, ok := parseInt(get("x-ratelimit-remaining-tokens")); ok {
		rl.RemainingTokens, rl.Known = v, true
	}
	if v, ok := ParseReset(get("x-ratelimit-reset-tokens")); ok {
		rl.ResetTokens, rl.Known = v, true
	}
	if v, ok := ParseRetryAfter(get("retry-after-ms"), get("retry-after"), now); ok {
		rl.RetryAfter, rl.Known = v, true
	}
	return rl
}

func parseInt(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	return v, err == nil && v >= 0
}

// ParseReset parses a rate-limit reset value: a Go duration ("2m59.56s",
// "7.66s", "12ms", "6m0s") or a bare number of seconds ("1.5").
func ParseReset(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return d, true
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && f < 1e9 {
		return time.Duration(f * float64(time.Second)), true
	}
	return 0, false
}

// ParseRetryAfter reads retry-after-ms (milliseconds) first, then
// retry-after (seconds or an HTTP date), as the OpenAI SDKs do.
func ParseRetryAfter(ms, after string, now time.Time) (time.Duration, bool) {
	if ms == "" && after == "" {
		return 0, false // the common case: no error value allocated
	}
	if v, err := strconv.ParseFloat(strings.TrimSpace(ms), 64); err == nil && v >= 0 && v < 1e12 {
		return time.Duration(v * float64(time.Millisecond)), true
	}
	after = strings.TrimSpace(after)
	if after == "" {
		return 0, false
	}
	if v, err := strconv.ParseFloat(after, 64); err == nil && v >= 0 && v < 1e9 {
		return time.Duration(v * float64(time.Second)), true
	}
	if t, err := fasthttp.ParseHTTPDate([]byte(after)); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
