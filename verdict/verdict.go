// Package verdict is the one table that says what an upstream's answer
// means: for every answer (status, headers, body or first stream event,
// transport error) it decides the routing outcome (fail over or not, and
// whom to blame: the breaker, a cooldown, the quota, nobody), and what the
// client gets if this answer is the last one (status, OpenAI error type
// and code, Retry-After, x-should-retry).
//
// Providers speak dialects of the OpenAI format (Groq's 413 for a request
// over its TPM, HuggingFace's 402 for credits and string errors, TGI's
// 422): the rules recognise each by what it says, so an OpenAI-compatible
// server that speaks the same dialect is read the same way. The package is
// pure; the proxy asks it and the policy acts on the outcome.
package verdict

import (
	"errors"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"switchyard/openai"
)

// Transport error classes. The upstream client wraps its errors in these,
// so that Classify can tell them apart without knowing the client.
var (
	// ErrBusy: the proxy's own connection pool to the upstream is full.
	// Not the upstream's fault.
	ErrBusy = errors.New("connection pool exhausted")
	// ErrTimeout: the upstream did not answer (or went silent) in time.
	ErrTimeout = errors.New("timeout")
)

// Outcome is how one upstream attempt ended, for the routing policy.
type Outcome int

const (
	// OK is a 2xx answer.
	OK Outcome = iota
	// Failure is the upstream's own fault: a connection error, a timeout,
	// a 5xx, an in-band error, an invalid answer, a stream cut. It fails
	// over and counts against the breaker and health.
	Failure
	// RateLimited is a 429. It fails over, is not a breaker failure, and
	// cools the model down for the quota group (Verdict.Cooldown).
	RateLimited
	// QuotaExhausted is a 402 (HuggingFace credits): the key's quota
	// group is out until its period resets. It fails over and blames
	// nobody.
	QuotaExhausted
	// KeyRejected is a 401 or 403. It fails over and counts against the
	// upstream's key breaker (every model).
	KeyRejected
	// NotServed: this upstream cannot serve this request, though another
	// may (a model it lacks, a context or TPM too small, a model loading,
	// our own pool full). It fails over and blames nobody.
	NotServed
	// ClientError: the request is wrong, and any upstream would say so.
	// The answer goes back to the client at once.
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

// String returns the outcome's name, as logs and /status show it.
func (o Outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// FailsOver reports whether the next candidate is tried: every outcome but
// OK and ClientError.
func (o Outcome) FailsOver() bool { return o != OK && o != ClientError }

// IsBreakerFailure reports whether the outcome counts against a circuit
// breaker and the upstream's health: Failure and KeyRejected.
func (o Outcome) IsBreakerFailure() bool { return o == Failure || o == KeyRejected }

// RateLimit is the parsed x-ratelimit-* and retry-after headers of one
// answer (Groq's and OpenAI's). A zero field is unknown.
type RateLimit struct {
	// LimitRequests and RemainingRequests are the requests window (Groq:
	// per day).
	LimitRequests, RemainingRequests int64
	// ResetRequests is the time until the requests window resets.
	ResetRequests time.Duration
	// LimitTokens and RemainingTokens are the tokens window (Groq: per
	// minute).
	LimitTokens, RemainingTokens int64
	// ResetTokens is the time until the tokens window resets.
	ResetTokens time.Duration
	// RetryAfter is retry-after-ms or retry-after.
	RetryAfter time.Duration
	// Known is true when any of the headers was present.
	Known bool
}

// Exhausted returns how long until a window the headers report as used up
// resets (0 when none is).
func (rl *RateLimit) Exhausted() time.Duration {
	var wait time.Duration
	if rl.LimitRequests > 0 && rl.RemainingRequests <= 0 {
		wait = max(wait, rl.ResetRequests)
	}
	if rl.LimitTokens > 0 && rl.RemainingTokens <= 0 {
		wait = max(wait, rl.ResetTokens)
	}
	return wait
}

// Answer is one attempt's result as the upstream gave it.
type Answer struct {
	// Provider is the upstream's provider (groq, huggingface, openai).
	Provider string
	// Status is the HTTP status; 0 when no answer came (Err says why).
	Status int
	// RateLimit is the parsed rate-limit headers.
	RateLimit RateLimit
	// Body is a non-2xx answer's body, or the data of an in-band error
	// (InBand).
	Body []byte
	// InBand says Body is an error carried inside a 2xx answer or stream
	// (an "error" member, or an "event: error" frame).
	InBand bool
	// Err is a transport failure (Status 0), or a 2xx answer the proxy
	// could not use (invalid JSON, a stream cut before its commit point).
	Err error
}

// Verdict is what an answer means.
type Verdict struct {
	// Outcome is what routing does with it.
	Outcome Outcome
	// Reason names the rule that decided, for logs and /status
	// ("tpm_request_too_large", "credits_exhausted", "model_loading", ...).
	Reason string
	// Cooldown is how long the model should not be sent to this quota
	// group: a 429's wait, or a window the headers report as used up.
	Cooldown time.Duration

	// What the client gets when this is the last answer and nothing
	// succeeded. Status 0 means the proxy's own 502.
	Status int
	// Type, Code and Param of the client's error object; Code "" is null.
	Type, Code, Param string
	// Message is the upstream's message (not yet redacted), or "" when
	// the proxy describes the failure itself.
	Message string
	// Relay says the client gets the upstream's own error (Status, Type,
	// Code, Message): it sent one in a dialect the table reads, or its
	// status means something to the client (a 429, a 413). Otherwise the
	// proxy answers 502 in its own words.
	Relay bool
	// RetryAfter is when the client may retry (0: no Retry-After).
	RetryAfter time.Duration
	// NoRetry says the client should not retry on its own
	// (x-should-retry: false): the same request cannot succeed soon.
	NoRetry bool
}

// sdkMaxRetryAfter is the longest Retry-After the OpenAI SDKs obey; past
// it they retry on their own backoff, and only x-should-retry: false
// stops them.
const sdkMaxRetryAfter = 60 * time.Second

// defaultCooldown is a 429's cooldown when it says nothing of when to
// come back.
const defaultCooldown = 10 * time.Second

// Classify decides what an answer means. The rules, in order:
//
//	answer                                          outcome         client gets (when last)
//	our connection pool full                        NotServed       503, Retry-After 1
//	timeout, connection error                       Failure         502 upstream_error
//	2xx                                             OK              -
//	2xx with an in-band error, or unusable          Failure         502, the upstream's type/code/message
//	429                                             RateLimited     429, upstream's error, truthful Retry-After
//	413 "… tokens per minute (TPM) …" (Groq)        NotServed       413, upstream's error, x-should-retry: false
//	402 (HuggingFace credits)                       QuotaExhausted  429 insufficient_quota, x-should-retry: false
//	401, 403                                        KeyRejected     502 upstream_error, x-should-retry: false
//	503 with estimated_time or "currently loading"  NotServed       503, Retry-After ceil(estimated_time)
//	404, other 413                                  NotServed       the upstream's error
//	400/422 context length (code or message), TGI   NotServed       the upstream's error
//	  "`inputs` tokens + `max_new_tokens` must be <=",
//	  model_not_supported
//	408, 498 (Groq flex capacity), 499, 5xx         Failure         the upstream's error (408→504, 498→503, 499→502)
//	other 4xx                                       ClientError     the upstream's error, as it is
//
// Any answer whose rate-limit headers report a window used up also gets a
// Cooldown until that window resets.
func Classify(a Answer) Verdict {
	v := classify(a)
	if v.Outcome != RateLimited {
		v.Cooldown = a.RateLimit.Exhausted()
	}
	if v.RetryAfter > sdkMaxRetryAfter {
		v.NoRetry = true
	}
	return v
}

func classify(a Answer) Verdict {
	if a.Status == 0 || (a.Err != nil && !a.InBand) {
		v := transport(a.Err)
		if a.Status != 0 && v.Reason == "connection" {
			v.Reason = "invalid_answer" // a 2xx the proxy could not use
		}
		return v
	}
	if a.Status >= 200 && a.Status < 300 && !a.InBand {
		return Verdict{Outcome: OK, Reason: "ok"} // before any parsing: the hot path
	}
	e, shaped := openai.ParseError(a.Body)
	own := func(o Outcome, reason string, status int) Verdict {
		v := Verdict{Outcome: o, Reason: reason, Status: status, Message: e.Message, Type: e.Type, Code: e.Code, Param: e.Param,
			Relay: shaped || o != Failure}
		if !shaped || v.Message == "" {
			v.Message = openai.StatusText(a.Status)
		}
		if e.Shape != openai.ObjectShape || v.Type == "" {
			v.Type = openai.TypeForStatus(status)
		}
		return v
	}
	msg := strings.ToLower(e.Message)
	switch s := a.Status; {
	case a.InBand:
		return own(Failure, "in_band_error", 502)
	case s == 429:
		v := own(RateLimited, "rate_limited", 429)
		v.Cooldown = max(a.RateLimit.RetryAfter, a.RateLimit.Exhausted())
		if v.Cooldown <= 0 {
			v.Cooldown = defaultCooldown
		}
		v.RetryAfter = v.Cooldown
		if v.Code == "" {
			v.Code = "rate_limit_exceeded"
		}
		return v
	case s == 413 && (strings.Contains(msg, "tokens per minute") || strings.Contains(msg, "(tpm)")):
		// Groq: this one request is larger than the organisation's TPM.
		// Smaller requests still go through, so nobody cools down; a
		// bigger limit elsewhere may take it.
		v := own(NotServed, "tpm_request_too_large", 413)
		v.NoRetry = true
		return v
	case s == 402:
		v := own(QuotaExhausted, "credits_exhausted", 429)
		v.Type, v.Code, v.NoRetry = "insufficient_quota", "insufficient_quota", true
		return v
	case s == 401 || s == 403:
		return Verdict{Outcome: KeyRejected, Reason: "key_rejected", NoRetry: true,
			Message: "the upstream rejected its API key (HTTP " + strconv.Itoa(s) + ")"}
	case s == 503 && (e.EstimatedTime > 0 || strings.Contains(msg, "currently loading")):
		// HuggingFace: the model is being loaded; it says nothing of the
		// provider's health.
		v := own(NotServed, "model_loading", 503)
		v.RetryAfter = time.Duration(math.Ceil(max(e.EstimatedTime, 1))) * time.Second
		return v
	case s == 404:
		return own(NotServed, "not_found", 404)
	case s == 413:
		return own(NotServed, "too_large", 413)
	case (s == 400 || s == 422) && cannotServe(e.Code, msg):
		return own(NotServed, "cannot_serve", s)
	case s == 408:
		return own(Failure, "upstream_timeout", 504)
	case s == 498:
		return own(Failure, "capacity_exceeded", 503)
	case s == 499:
		return own(Failure, "cancelled", 502)
	case s >= 400 && s < 500:
		return own(ClientError, "client_error", s)
	case s >= 500 && s < 600:
		return own(Failure, "server_error", s)
	default:
		return own(Failure, "unexpected_status", 502)
	}
}

// cannotServe reports whether a 400 or 422 says this upstream cannot serve
// the request although another might: the context is too short for it, or
// the model is not available there.
func cannotServe(code, msg string) bool {
	switch code {
	case "context_length_exceeded", "model_not_supported", "model_not_found":
		return true
	}
	return strings.Contains(msg, "context length") || strings.Contains(msg, "context_length") ||
		strings.Contains(msg, "context window") ||
		(strings.Contains(msg, "max_new_tokens") && strings.Contains(msg, "must be <=")) ||
		strings.Contains(msg, "is not supported by any provider")
}

func transport(err error) Verdict {
	var ne net.Error
	switch {
	case errors.Is(err, ErrBusy):
		return Verdict{Outcome: NotServed, Reason: "busy", Status: 503, Type: openai.TypeServer,
			Code: "no_upstream_available", Message: "all connections to the upstream are busy", RetryAfter: time.Second}
	case errors.Is(err, ErrTimeout) || (errors.As(err, &ne) && ne.Timeout()):
		return Verdict{Outcome: Failure, Reason: "timeout"}
	}
	return Verdict{Outcome: Failure, Reason: "connection"}
}
