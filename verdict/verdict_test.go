package verdict

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// Recorded answers, as the providers send them (see shared/wire.md).
const (
	groq413TPM = "{\"error\":{\"message\":\"Request too large for model `llama-3.3-70b-versatile` in organization `org_x` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 7000, please reduce your message size and try again.\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}"
	groq429    = "{\"error\":{\"message\":\"Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_x` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 5990, Requested 700. Please try again in 6.9s.\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}"
	hf402      = `{"error":"You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO to get 20x more monthly included credits."}`
	hf503      = `{"error":"Model meta-llama/Llama-3.1-8B-Instruct is currently loading","estimated_time":20.3}`
	hf400ctx   = `{"error":{"message":"This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (8000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":null}}`
	tgi422     = "{\"error\":\"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 500 `max_new_tokens`\",\"error_type\":\"validation\"}"
	hf400model = `{"error":{"message":"The requested model 'foo/bar' is not supported by any provider you have enabled.","type":"invalid_request_error","param":"model","code":"model_not_supported"}}`
	openai400  = `{"error":{"message":"Invalid value for 'temperature': must be <= 2.","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}`
	oa500      = `{"error":{"message":"boom","type":"server_error","code":null}}`
	groq401    = `{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}`
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestClassify(t *testing.T) {
	rl := func(retry time.Duration) RateLimit { return RateLimit{RetryAfter: retry, Known: retry > 0} }
	groqExhausted := RateLimit{LimitRequests: 14400, RemainingRequests: 0, ResetRequests: 3 * time.Hour, LimitTokens: 6000, RemainingTokens: 5000, ResetTokens: time.Second, Known: true}
	tests := []struct {
		name string
		a    Answer
		want Verdict
	}{
		{"2xx", Answer{Status: 200}, Verdict{Outcome: OK, Reason: "ok"}},
		{"2xx whose headers say the day is used up", Answer{Status: 200, RateLimit: groqExhausted},
			Verdict{Outcome: OK, Reason: "ok", Cooldown: 3 * time.Hour}},
		{"groq 413 request over the TPM: nobody blamed, no cooldown", Answer{Provider: "groq", Status: 413, Body: []byte(groq413TPM)},
			Verdict{Relay: true, Outcome: NotServed, Reason: "tpm_request_too_large", Status: 413, Type: "tokens", Code: "rate_limit_exceeded",
				Message: "Request too large for model `llama-3.3-70b-versatile` in organization `org_x` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 7000, please reduce your message size and try again.", NoRetry: true}},
		{"groq 429 with retry-after", Answer{Provider: "groq", Status: 429, Body: []byte(groq429), RateLimit: rl(7 * time.Second)},
			Verdict{Relay: true, Outcome: RateLimited, Reason: "rate_limited", Cooldown: 7 * time.Second, Status: 429, Type: "tokens", Code: "rate_limit_exceeded",
				Message: "Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_x` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 5990, Requested 700. Please try again in 6.9s.", RetryAfter: 7 * time.Second}},
		{"429 an hour out: x-should-retry false", Answer{Status: 429, Body: []byte(`{"error":{"message":"slow down","type":"rate_limit_error","code":null}}`), RateLimit: rl(time.Hour)},
			Verdict{Relay: true, Outcome: RateLimited, Reason: "rate_limited", Cooldown: time.Hour, Status: 429, Type: "rate_limit_error", Code: "rate_limit_exceeded", Message: "slow down", RetryAfter: time.Hour, NoRetry: true}},
		{"429 whose headers say the day is used up", Answer{Status: 429, RateLimit: groqExhausted},
			Verdict{Relay: true, Outcome: RateLimited, Reason: "rate_limited", Cooldown: 3 * time.Hour, Status: 429, Type: "rate_limit_error", Code: "rate_limit_exceeded", Message: "upstream answered HTTP 429", RetryAfter: 3 * time.Hour, NoRetry: true}},
		{"429 saying nothing", Answer{Status: 429, Body: []byte("Too Many Requests")},
			Verdict{Relay: true, Outcome: RateLimited, Reason: "rate_limited", Cooldown: 10 * time.Second, Status: 429, Type: "rate_limit_error", Code: "rate_limit_exceeded", Message: "upstream answered HTTP 429", RetryAfter: 10 * time.Second}},
		{"hf 402 credits", Answer{Provider: "huggingface", Status: 402, Body: []byte(hf402)},
			Verdict{Relay: true, Outcome: QuotaExhausted, Reason: "credits_exhausted", Status: 429, Type: "insufficient_quota", Code: "insufficient_quota",
				Message: "You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO to get 20x more monthly included credits.", NoRetry: true}},
		{"hf 503 model loading: transient, not a breaker failure", Answer{Provider: "huggingface", Status: 503, Body: []byte(hf503)},
			Verdict{Relay: true, Outcome: NotServed, Reason: "model_loading", Status: 503, Type: "server_error", Message: "Model meta-llama/Llama-3.1-8B-Instruct is currently loading", RetryAfter: 21 * time.Second}},
		{"hf 400 context length in the message only", Answer{Provider: "huggingface", Status: 400, Body: []byte(hf400ctx)},
			Verdict{Relay: true, Outcome: NotServed, Reason: "cannot_serve", Status: 400, Type: "invalid_request_error", Param: "messages",
				Message: "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (8000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion."}},
		{"tgi 422 inputs + max_new_tokens", Answer{Status: 422, Body: []byte(tgi422)},
			Verdict{Relay: true, Outcome: NotServed, Reason: "cannot_serve", Status: 422, Type: "invalid_request_error",
				Message: "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 500 `max_new_tokens`"}},
		{"hf 400 model_not_supported", Answer{Provider: "huggingface", Status: 400, Body: []byte(hf400model)},
			Verdict{Relay: true, Outcome: NotServed, Reason: "cannot_serve", Status: 400, Type: "invalid_request_error", Param: "model", Code: "model_not_supported",
				Message: "The requested model 'foo/bar' is not supported by any provider you have enabled."}},
		{"openai context_length_exceeded", Answer{Status: 400, Body: []byte(`{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`)},
			Verdict{Relay: true, Outcome: NotServed, Reason: "cannot_serve", Status: 400, Type: "invalid_request_error", Param: "messages", Code: "context_length_exceeded", Message: "too long"}},
		{"404 model not here", Answer{Status: 404, Body: []byte(`{"error":{"message":"The model x does not exist","type":"invalid_request_error","code":"model_not_found"}}`)},
			Verdict{Relay: true, Outcome: NotServed, Reason: "not_found", Status: 404, Type: "invalid_request_error", Code: "model_not_found", Message: "The model x does not exist"}},
		{"413 body too large", Answer{Status: 413, Body: []byte("<html>413</html>")},
			Verdict{Relay: true, Outcome: NotServed, Reason: "too_large", Status: 413, Type: "invalid_request_error", Message: "upstream answered HTTP 413"}},
		{"other 400: the request is wrong", Answer{Status: 400, Body: []byte(openai400)},
			Verdict{Relay: true, Outcome: ClientError, Reason: "client_error", Status: 400, Type: "invalid_request_error", Param: "temperature", Code: "invalid_value", Message: "Invalid value for 'temperature': must be <= 2."}},
		{"401 key rejected", Answer{Provider: "groq", Status: 401, Body: []byte(groq401)},
			Verdict{Outcome: KeyRejected, Reason: "key_rejected", NoRetry: true, Message: "the upstream rejected its API key (HTTP 401)"}},
		{"403 key rejected", Answer{Status: 403},
			Verdict{Outcome: KeyRejected, Reason: "key_rejected", NoRetry: true, Message: "the upstream rejected its API key (HTTP 403)"}},
		{"500 with its own error", Answer{Status: 500, Body: []byte(oa500)},
			Verdict{Relay: true, Outcome: Failure, Reason: "server_error", Status: 500, Type: "server_error", Message: "boom"}},
		{"502 html", Answer{Status: 502, Body: []byte("<html>Bad Gateway</html>")},
			Verdict{Outcome: Failure, Reason: "server_error", Status: 502, Type: "server_error", Message: "upstream answered HTTP 502"}},
		{"503 not loading", Answer{Status: 503, Body: []byte(`{"error":"Service Unavailable"}`)},
			Verdict{Relay: true, Outcome: Failure, Reason: "server_error", Status: 503, Type: "server_error", Message: "Service Unavailable"}},
		{"groq 498 flex capacity", Answer{Provider: "groq", Status: 498, Body: []byte(`{"error":{"message":"capacity exceeded","type":"capacity_exceeded","code":"capacity_exceeded"}}`)},
			Verdict{Relay: true, Outcome: Failure, Reason: "capacity_exceeded", Status: 503, Type: "capacity_exceeded", Code: "capacity_exceeded", Message: "capacity exceeded"}},
		{"408 upstream timeout", Answer{Status: 408}, Verdict{Outcome: Failure, Reason: "upstream_timeout", Status: 504, Type: "server_error", Message: "upstream answered HTTP 408"}},
		{"499 cancelled", Answer{Status: 499}, Verdict{Outcome: Failure, Reason: "cancelled", Status: 502, Type: "server_error", Message: "upstream answered HTTP 499"}},
		{"in-band error in a 200", Answer{Status: 200, InBand: true, Body: []byte(`{"error":{"message":"engine died","type":"server_error","code":"engine_error"}}`)},
			Verdict{Relay: true, Outcome: Failure, Reason: "in_band_error", Status: 502, Type: "server_error", Code: "engine_error", Message: "engine died"}},
		{"bare event: error", Answer{Status: 200, InBand: true, Body: []byte{}},
			Verdict{Outcome: Failure, Reason: "in_band_error", Status: 502, Type: "server_error", Message: "upstream answered HTTP 200"}},
		{"invalid 2xx", Answer{Status: 200, Err: errors.New("2xx answer is not valid JSON")}, Verdict{Outcome: Failure, Reason: "invalid_answer"}},
		{"connection refused", Answer{Err: errors.New("dial tcp: connection refused")}, Verdict{Outcome: Failure, Reason: "connection"}},
		{"timeout class", Answer{Err: fmt.Errorf("upstream x: %w", ErrTimeout)}, Verdict{Outcome: Failure, Reason: "timeout"}},
		{"net timeout", Answer{Err: timeoutErr{}}, Verdict{Outcome: Failure, Reason: "timeout"}},
		{"our pool full: not the upstream's fault", Answer{Err: fmt.Errorf("upstream x: %w", ErrBusy)},
			Verdict{Outcome: NotServed, Reason: "busy", Status: 503, Type: "server_error", Code: "no_upstream_available", Message: "all connections to the upstream are busy", RetryAfter: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.a); got != tt.want {
				t.Errorf("Classify:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestOutcome(t *testing.T) {
	tests := []struct {
		o                  Outcome
		name               string
		failsOver, breaker bool
	}{
		{OK, "ok", false, false},
		{Failure, "error", true, true},
		{RateLimited, "rate_limited", true, false},
		{QuotaExhausted, "quota_exhausted", true, false},
		{KeyRejected, "key_rejected", true, true},
		{NotServed, "not_served", true, false},
		{ClientError, "client_error", false, false},
	}
	for _, tt := range tests {
		if tt.o.String() != tt.name || tt.o.FailsOver() != tt.failsOver || tt.o.IsBreakerFailure() != tt.breaker {
			t.Errorf("%d: %s %v %v", tt.o, tt.o, tt.o.FailsOver(), tt.o.IsBreakerFailure())
		}
	}
	if got := Outcome(42).String(); got != "Outcome(42)" {
		t.Errorf("unknown outcome String() = %q", got)
	}
}

// FuzzClassify: any answer gets a verdict without panicking, and a verdict
// that fails over or returns an error always has something for the client.
func FuzzClassify(f *testing.F) {
	for _, b := range []string{groq413TPM, groq429, hf402, hf503, hf400ctx, tgi422, hf400model, openai400, oa500, groq401, "", "null", `{"error":null}`} {
		for _, s := range []int{200, 400, 402, 413, 422, 429, 500, 503} {
			f.Add(s, []byte(b), false)
		}
	}
	f.Fuzz(func(t *testing.T, status int, body []byte, inBand bool) {
		v := Classify(Answer{Status: status, Body: body, InBand: inBand})
		if v.Outcome != OK && v.Outcome != KeyRejected && status != 0 && (v.Status == 0 || v.Type == "" || v.Message == "") {
			t.Fatalf("Classify(%d, %q) = %+v: nothing for the client", status, body, v)
		}
		if v.RetryAfter > time.Minute && !v.NoRetry {
			t.Fatalf("Classify(%d, %q): Retry-After %s without x-should-retry: false", status, body, v.RetryAfter)
		}
	})
}
