package policy

import (
	"time"

	"switchyard/verdict"
)

// charged applies the quota rule: 2xx or 4xx other than 429 is charged.
func charged(status int, o verdict.Outcome) bool {
	if status == 0 {
		// No HTTP status known: the upstream answered when the outcome
		// says it did (anything but a transport failure or a 429).
		return o != verdict.Failure && o != verdict.RateLimited
	}
	return (status >= 200 && status < 300) || (status >= 400 && status < 500 && status != 429)
}

// Usage is the token usage reported by the upstream.
type Usage struct {
	PromptTokens, CompletionTokens int64
}

// Attempt is what one call inside [Policy.Do] returns.
type Attempt struct {
	// Outcome classifies the attempt. When the call also returns an error
	// and leaves Outcome at OK, Do treats the attempt as a Failure.
	Outcome verdict.Outcome
	// RetryAfter is the upstream's retry-after, if any. Do's retry waits
	// that long before trying again (see Retry.MaxRetryAfter; a Failure
	// asking for more than 2s is not retried: the caller fails over).
	RetryAfter time.Duration
	// NoRetry says the attempt must not be retried on the same upstream:
	// a first-token or header timeout, where another try would cost the
	// client the whole timeout again.
	NoRetry bool
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
	Outcome verdict.Outcome
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
	RateLimit verdict.RateLimit
	// Cooldown is how long the model should rest in the upstream's quota
	// group (verdict.Verdict.Cooldown): a 429's wait, or a window the
	// headers report as used up. 0 starts none.
	Cooldown time.Duration
	// Err is a short message for /status; it must contain no secrets. At
	// most 256 bytes are kept.
	Err string
	// Reservation is the quota Do reserved for this attempt (the one it
	// passed to the call); Observe settles it, once: a charged attempt
	// (Status) is reconciled to its real cost, any other is released.
	// Nil charges the real cost directly, as for an attempt Do did not
	// run.
	Reservation *Reservation
}
