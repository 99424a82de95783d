package upstream

import (
	"testing"

	"switchyard/policy"
)

const (
	hfCreditsBody = `{"error": "You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO to get 20x more monthly included credits."}`
	groqTPM413    = `{"error":{"message":"Request too large for model ` + "`llama-3.3-70b-versatile`" + ` in organization ` + "`org_x`" +
		` on tokens per minute (TPM): Limit 6000, Requested 9000, please reduce your message size and try again.","type":"tokens","code":"rate_limit_exceeded"}}`
	groq429      = `{"error":{"message":"Rate limit reached for model gemma2-9b-it in organization org_x on tokens per minute (TPM): Limit 15000, Used 11972, Requested 4351. Please try again in 5.289s.","type":"tokens","code":"rate_limit_exceeded"}}`
	contextLen   = `{"error":{"message":"Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`
	badRequest   = `{"error":{"message":"'logprobs' is not supported","type":"invalid_request_error","param":"logprobs","code":null}}`
	vllmInBand   = `{"error":{"message":"CUDA out of memory. Tried to allocate 2.00 GiB","type":"InternalServerError","code":500}}`
	groqFlex498  = `{"error":{"message":"Flex tier capacity exceeded. This is a known issue and we are working on it.","type":"invalid_request_error","code":"capacity_exceeded"}}`
	nginx413HTML = "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n</body>\r\n</html>\r\n"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   policy.Outcome
	}{
		{"200", 200, `{"choices":[]}`, policy.OK},
		{"201", 201, "", policy.OK},
		{"204", 204, "", policy.OK},
		{"429 Groq", 429, groq429, policy.RateLimited},
		{"429 no body", 429, "", policy.RateLimited},
		{"402 HF credits", 402, hfCreditsBody, policy.QuotaExhausted},
		{"402 NOT_ENOUGH_BALANCE", 402, `{"error":"NOT_ENOUGH_BALANCE"}`, policy.QuotaExhausted},
		{"401", 401, `{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}`, policy.KeyRejected},
		{"403", 403, `{"error":"Forbidden"}`, policy.KeyRejected},
		{"404", 404, `{"error":{"message":"The model ` + "`x`" + ` does not exist","type":"invalid_request_error","code":"model_not_found"}}`, policy.NotServed},
		{"413 Groq tokens per minute", 413, groqTPM413, policy.RateLimited},
		{"413 tokens per day, string error", 413, `{"error":"Request too large on Tokens Per Day (TPD)"}`, policy.RateLimited},
		{"413 other", 413, `{"error":{"message":"Request Entity Too Large","type":"invalid_request_error"}}`, policy.NotServed},
		{"413 HTML", 413, nginx413HTML, policy.NotServed},
		{"413 no body", 413, "", policy.NotServed},
		{"413 tokens per outside message", 413, `{"error":{"message":"too large"},"hint":"tokens per minute"}`, policy.NotServed},
		{"400 context_length_exceeded", 400, contextLen, policy.NotServed},
		{"400 other", 400, badRequest, policy.ClientError},
		{"400 context length in message only", 400, `{"error":{"message":"context_length_exceeded"}}`, policy.ClientError},
		{"400 HF string", 400, `{"error":"Model not supported by provider"}`, policy.ClientError},
		{"400 garbage", 400, "bad request", policy.ClientError},
		{"422", 422, `{"error":{"message":"Unprocessable Entity"}}`, policy.ClientError},
		{"409", 409, "", policy.ClientError},
		{"498 Groq flex capacity", 498, groqFlex498, policy.Failure},
		{"408 upstream timeout", 408, `{"error":{"message":"Request timed out"}}`, policy.Failure},
		{"499 Groq request cancelled", 499, `{"error":{"message":"request cancelled"}}`, policy.Failure},
		{"500", 500, `{"error":{"message":"Internal Server Error","type":"internal_server_error"}}`, policy.Failure},
		{"502", 502, "<html>Bad Gateway</html>", policy.Failure},
		{"503", 503, `{"error":{"message":"Service Unavailable","type":"internal_server_error"}}`, policy.Failure},
		{"504", 504, "", policy.Failure},
		{"599", 599, "", policy.Failure},
		{"3xx", 302, "", policy.Failure},
		{"1xx", 100, "", policy.Failure},
		{"no status", 0, "", policy.Failure},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.status, []byte(tc.body)); got != tc.want {
				t.Errorf("Classify(%d, %.60q) = %v, want %v", tc.status, tc.body, got, tc.want)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	cases := []struct {
		name, body, want string
	}{
		{"OpenAI", `{"error":{"message":"Invalid API Key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`, "Invalid API Key"},
		{"OpenAI int code", vllmInBand, "CUDA out of memory. Tried to allocate 2.00 GiB"},
		{"Groq 413", groqTPM413, "Request too large for model `llama-3.3-70b-versatile` in organization `org_x` on tokens per minute (TPM): Limit 6000, Requested 9000, please reduce your message size and try again."},
		{"HuggingFace string", hfCreditsBody, "You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO to get 20x more monthly included credits."},
		{"escapes", `{"error":"a \"quoted\" \u00e9\n"}`, "a \"quoted\" é\n"},
		{"object without message", `{"error":{"type":"x"}}`, ""},
		{"null error", `{"error":null}`, ""},
		{"number error", `{"error":42}`, ""},
		{"array error", `{"error":["x"]}`, ""},
		{"message not a string", `{"error":{"message":1}}`, ""},
		{"top-level message", `{"message":"x"}`, ""},
		{"no error key", `{"choices":[]}`, ""},
		{"array", `[{"error":"x"}]`, ""},
		{"HTML", nginx413HTML, ""},
		{"text", "upstream connect error or disconnect/reset before headers", ""},
		{"truncated", `{"error":{"message":"cut`, ""},
		{"empty", "", ""},
	}
	for _, tc := range cases {
		if got := ErrorMessage([]byte(tc.body)); got != tc.want {
			t.Errorf("%s: ErrorMessage(%.60q) = %q, want %q", tc.name, tc.body, got, tc.want)
		}
	}
}

func TestIsOpenAIError(t *testing.T) {
	cases := map[string]bool{
		groqTPM413:                  true,
		vllmInBand:                  true,
		contextLen:                  true,
		`{"error":{}}`:              true,
		hfCreditsBody:               false, // a string: must be normalized
		`{"error":null}`:            false,
		`{"error":42}`:              false,
		`{"error":[]}`:              false,
		`{"message":"x"}`:           false,
		`{"error":{"message":"cut`:  false,
		nginx413HTML:                false,
		"":                          false,
		`{"error":{"message":1}}`:   false,
		`{"choices":[],"error":{}}`: true,
	}
	for body, want := range cases {
		if got := IsOpenAIError([]byte(body)); got != want {
			t.Errorf("IsOpenAIError(%.60q) = %v, want %v", body, got, want)
		}
	}
}

func TestIsErrorEvent(t *testing.T) {
	cases := []struct {
		name, data string
		want       bool
	}{
		{"vLLM in-band error", vllmInBand, true},
		{"OpenAI shape", `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`, true},
		{"string error", `{"error":"upstream overloaded"}`, true},
		{"spaces", `{ "error" : { "message" : "x" } }`, true},
		{"content mentions error", `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"An error occurred in your code"},"finish_reason":null}]}`, false},
		{"content is the word error quoted", `{"choices":[{"delta":{"content":"error"}}]}`, false},
		{"content with an escaped error object", `{"choices":[{"delta":{"content":"{\"error\": {\"message\": \"x\"}}"}}]}`, false},
		{"null error", `{"error":null,"choices":[{"delta":{"content":"hi"}}]}`, false},
		{"nested error", `{"choices":[{"error":{"message":"x"}}]}`, false},
		{"tool arguments mention error", `{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"error\":true}"}}]}}]}`, false},
		{"usage chunk", `{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`, false},
		{"done", "[DONE]", false},
		{"not JSON", `"error": oops`, false},
		{"empty", "", false},
	}
	for _, tc := range cases {
		if got := IsErrorEvent([]byte(tc.data)); got != tc.want {
			t.Errorf("%s: IsErrorEvent(%.60q) = %v, want %v", tc.name, tc.data, got, tc.want)
		}
	}
}

func TestIsErrorEventNoAllocForNormalChunk(t *testing.T) {
	chunk := []byte(`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hello"},"finish_reason":null}]}`)
	if n := testing.AllocsPerRun(100, func() { IsErrorEvent(chunk) }); n != 0 {
		t.Errorf("IsErrorEvent allocates %v times on a normal chunk", n)
	}
}
