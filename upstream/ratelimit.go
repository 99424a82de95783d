package upstream

import (
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/verdict"
)

// ParseRateLimit reads the OpenAI/Groq rate-limit headers
// (x-ratelimit-{limit,remaining,reset}-{requests,tokens}) and retry-after /
// retry-after-ms. Unparsable values are ignored.
func ParseRateLimit(h *fasthttp.ResponseHeader, now time.Time) verdict.RateLimit {
	// One pass over the headers (a Peek per name costs a scan each); the
	// first occurrence of a name counts, as with Peek.
	var v [len(rateLimitNames) + 2][]byte // the x-ratelimit-* values, then retry-after-ms and retry-after
	const retryMs, retry = len(rateLimitNames), len(rateLimitNames) + 1
	set := func(i int, val []byte) {
		if v[i] == nil {
			v[i] = val
		}
	}
	for k, val := range h.All() {
		switch {
		case hasPrefixFold(k, "x-ratelimit-"):
			rest := k[len("x-ratelimit-"):]
			for i, name := range rateLimitNames {
				if equalFold(rest, name) {
					set(i, val)
					break
				}
			}
		case equalFold(k, "retry-after-ms"):
			set(retryMs, val)
		case equalFold(k, "retry-after"):
			set(retry, val)
		}
	}
	var rl verdict.RateLimit
	var knownReq, knownTok bool
	rl.LimitRequests, rl.RemainingRequests, rl.ResetRequests, knownReq = parseWindow(v[0], v[1], v[2])
	rl.LimitTokens, rl.RemainingTokens, rl.ResetTokens, knownTok = parseWindow(v[3], v[4], v[5])
	rl.Known = knownReq || knownTok
	if d, ok := ParseRetryAfter(string(v[retryMs]), string(v[retry]), now); ok {
		rl.RetryAfter, rl.Known = d, true
	}
	return rl
}

// rateLimitNames are the x-ratelimit-* headers read, after the prefix, as
// limit, remaining and reset of the requests window, then of the tokens
// window.
var rateLimitNames = [...]string{
	"limit-requests", "remaining-requests", "reset-requests",
	"limit-tokens", "remaining-tokens", "reset-tokens",
}

// parseWindow reads one window's limit, remaining count and reset; known
// reports whether any of them was usable. A limit counts only with its
// remaining count: alone, it would read as "0 remaining" (exhausted) to
// the policy.
func parseWindow(limit, remaining, reset []byte) (lim, rem int64, rst time.Duration, known bool) {
	rem, okRem := parseInt(string(remaining))
	if n, ok := parseInt(string(limit)); ok && okRem {
		lim = n
	}
	if !okRem {
		rem = 0
	}
	rst, okRst := ParseReset(string(reset)) // 0 when not ok
	return lim, rem, rst, okRem || okRst
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
