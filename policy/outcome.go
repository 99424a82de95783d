package policy

import (
	"strconv"
	"time"
)

// Outcome is how one upstream attempt ended, as classified by the caller.
type Outcome int

const (
	// OK is a 2xx answer.
	OK Outcome = iota
	// Failure is a connection error, reset, timeout, 5xx, Groq 498, an
	// in-band SSE error as first event, or a stream stall or cut. It fails
	// over and counts against the breaker and health.
	Failure
	// RateLimited is a 429, or a 413 whose message mentions "tokens per". It
	// fails over, is not a breaker failure, and starts a cooldown until
	// RetryAfter or the rate-limit reset.
	RateLimited
	// QuotaExhausted is a 402 (HuggingFace credits). It fails over, is not a
	// breaker failure, and disables the upstream's quota group until its
	// quota period ends (or the reset given).
	QuotaExhausted
	// KeyRejected is a 401 or 403. It fails over and is a breaker failure
	// for every model of that upstream (the key breaker).
	KeyRejected
	// NotServed is a 404, a 413 not about quota, or a 400
	// context_length_exceeded. It fails over with no breaker or health
	// effect.
	NotServed
	// ClientError is any other 4xx. The answer goes back to the client as
	// is: no fail over, no breaker or health effect.
	ClientError
)

var outcomeNames = [...]string{
	OK:             "ok",
	Failure:        "error",
	RateLimited:    "rate_limited",
	QuotaExhausted: "quota_exhausted",
	KeyRejected:    "key_rejected",
	NotServed:      "not_served",
	ClientError:    "client_error",
}

// String returns the outcome's metric label: "ok", "error", "rate_limited",
// "quota_exhausted", "key_rejected", "not_served" or "client_error".
func (o Outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// FailsOver reports whether the caller should try the next candidate: true
// for every outcome except OK and ClientError.
func (o Outcome) FailsOver() bool {
	switch o {
	case Failure, RateLimited, QuotaExhausted, KeyRejected, NotServed:
		return true
	}
	return false
}

// IsBreakerFailure reports whether the outcome counts against the
// deployment's circuit breaker and the upstream's health: Failure and
// KeyRejected.
func (o Outcome) IsBreakerFailure() bool {
	return o == Failure || o == KeyRejected
}

// Charged reports whether an attempt with this outcome uses quota when its
// HTTP status is not known: true when the upstream answered with 2xx or a
// 4xx other than 429 (OK, ClientError, NotServed, KeyRejected,
// QuotaExhausted). Observe uses Observation.Status instead when it is set, so
// a 413 "tokens per minute" (RateLimited, but 4xx) is charged there.
func (o Outcome) Charged() bool {
	switch o {
	case OK, ClientError, NotServed, KeyRejected, QuotaExhausted:
		return true
	}
	return false
}

// charged applies the quota rule: 2xx or 4xx other than 429 is charged.
func charged(status int, o Outcome) bool {
	if status == 0 {
		return o.Charged()
	}
	return (status >= 200 && status < 300) || (status >= 400 && status < 500 && status != 429)
}

// RateLimit is the parsed x-ratelimit-* and retry-after headers of one
// answer. Parsing happens in the upstream package; a zero field is unknown.
type RateLimit struct {
	// LimitRequests and RemainingRequests are Groq's requests per day.
	LimitRequests, RemainingRequests int64
	// ResetRequests is the time until the requests window resets.
	ResetRequests time.Duration
	// LimitTokens and RemainingTokens are Groq's tokens per minute.
	LimitTokens, RemainingTokens int64
	// ResetTokens is the time until the tokens window resets.
	ResetTokens time.Duration
	// RetryAfter is the retry-after header.
	RetryAfter time.Duration
	// Known is true when any of the headers was present.
	Known bool
}

// Usage is the token usage reported by the upstream.
type Usage struct {
	PromptTokens, CompletionTokens int64
}

// Attempt is what one call inside [Policy.Do] returns.
type Attempt struct {
	// Outcome classifies the attempt. When the call also returns an error
	// and leaves Outcome at OK, Do treats the attempt as a Failure.
	Outcome Outcome
	// RetryAfter is the upstream's retry-after, if any. Do's retry waits
	// that long when it is at most 2s and gives up (so the caller fails
	// over) when it is longer.
	RetryAfter time.Duration
	// Pending, set by the call on an OK attempt, says the result is not
	// final: a stream that reached its commit point can still fail. Do then
	// leaves the breakers' permits taken and returns Deferred; the caller
	// reports the end with StreamDone or StreamFailed.
	Pending bool
	// Deferred, set by Do, says the breakers have not recorded this attempt
	// yet (Pending was honoured: it is, when no retry policy is configured).
	Deferred bool
}

// Observation is what an attempt produced, reported with [Policy.Observe].
type Observation struct {
	// Outcome classifies the attempt.
	Outcome Outcome
	// Status is the HTTP status, 0 for a connection failure. It decides
	// whether the attempt is charged against the quota.
	Status int
	// Latency is the time to the full answer, or to the first token for a
	// stream. Only OK attempts feed the latency average.
	Latency time.Duration
	// Usage is the token usage, for Quota.Unit "tokens".
	Usage Usage
	// Chars is the character count, for Quota.Unit "chars".
	Chars int64
	// RateLimit is the parsed rate-limit headers of the answer.
	RateLimit RateLimit
	// Err is a short message for /status; it must contain no secrets. At
	// most 256 bytes are kept.
	Err string
}
