package upstream_test

import (
	"fmt"
	"time"

	"switchyard/upstream"
)

func ExampleRewriteModel() {
	body := []byte(`{"messages":[{"role":"user","model":"kept","content":"hi"}], "model": "llama-3.3-70b", "stream":true}`)
	out, err := upstream.RewriteModel(body, "llama-3.3-70b-versatile")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(out))

	_, err = upstream.RewriteModel([]byte(`{"messages":[]}`), "x")
	fmt.Println(err)
	// Output:
	// {"messages":[{"role":"user","model":"kept","content":"hi"}], "model": "llama-3.3-70b-versatile", "stream":true}
	// request body has no top-level model string
}

func ExampleTopLevelValue() {
	body := []byte(`{"model":"m","stream_options":{"include_usage":true},"stream":true}`)
	start, end, ok := upstream.TopLevelValue(body, "stream_options")
	fmt.Println(string(body[start:end]), ok)
	_, _, ok = upstream.TopLevelValue(body, "include_usage") // nested: not top-level
	fmt.Println(ok)
	// Output:
	// {"include_usage":true} true
	// false
}

func ExampleClassify() {
	hf := []byte(`{"error": "You have exceeded your monthly included credits for Inference Providers. Subscribe to PRO to get 20x more monthly included credits."}`)
	groq := []byte(`{"error":{"message":"Request too large for model llama-3.3-70b-versatile on tokens per minute (TPM): Limit 6000, Requested 9000","type":"tokens","code":"rate_limit_exceeded"}}`)
	fmt.Println(upstream.Classify(402, hf))
	fmt.Println(upstream.Classify(413, groq))
	fmt.Println(upstream.Classify(413, nil))
	fmt.Println(upstream.Classify(503, nil))
	// Output:
	// quota_exhausted
	// rate_limited
	// not_served
	// error
}

func ExampleErrorMessage() {
	fmt.Println(upstream.ErrorMessage([]byte(`{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}`)))
	fmt.Println(upstream.ErrorMessage([]byte(`{"error":"NOT_ENOUGH_BALANCE"}`)))
	fmt.Printf("%q\n", upstream.ErrorMessage([]byte(`<html>502 Bad Gateway</html>`)))
	// Output:
	// Invalid API Key
	// NOT_ENOUGH_BALANCE
	// ""
}

func ExampleParseReset() {
	for _, s := range []string{"2m59.56s", "7.66s", "12ms", "1.5", "abc"} {
		d, ok := upstream.ParseReset(s)
		fmt.Println(s, d, ok)
	}
	// Output:
	// 2m59.56s 2m59.56s true
	// 7.66s 7.66s true
	// 12ms 12ms true
	// 1.5 1.5s true
	// abc 0s false
}

func ExampleParseRetryAfter() {
	now := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	fmt.Println(upstream.ParseRetryAfter("1500", "2", now))
	fmt.Println(upstream.ParseRetryAfter("", "2", now))
	fmt.Println(upstream.ParseRetryAfter("", "Sat, 14 Mar 2026 12:00:30 GMT", now))
	// Output:
	// 1.5s true
	// 2s true
	// 30s true
}
