package openai_test

import (
	"fmt"

	"switchyard/openai"
)

func ExampleRewriteModel() {
	body := []byte(`{"messages":[{"role":"user","model":"kept","content":"hi"}], "model": "llama-3.3-70b", "stream":true}`)
	out, err := openai.RewriteModel(body, "llama-3.3-70b-versatile")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(out))

	_, err = openai.RewriteModel([]byte(`{"messages":[]}`), "x")
	fmt.Println(err)
	// Output:
	// {"messages":[{"role":"user","model":"kept","content":"hi"}], "model": "llama-3.3-70b-versatile", "stream":true}
	// request body has no top-level model string
}

func ExampleParseError() {
	for _, body := range []string{
		`{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}`,
		`{"error":"Model meta-llama/Llama-3.1-8B-Instruct is currently loading","estimated_time":20.0}`,
		"{\"error\":\"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096\",\"error_type\":\"validation\"}",
		`<html>502 Bad Gateway</html>`,
	} {
		e, ok := openai.ParseError([]byte(body))
		fmt.Printf("%v %d %q %q %q %v\n", ok, e.Shape, e.Type, e.Code, e.Message, e.EstimatedTime)
	}
	// Output:
	// true 1 "invalid_request_error" "invalid_api_key" "Invalid API Key" 0
	// true 2 "" "" "Model meta-llama/Llama-3.1-8B-Instruct is currently loading" 20
	// true 2 "validation" "" "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096" 0
	// false 0 "" "" "" 0
}

func ExampleUsedParam() {
	groqRejects := []string{"n", "logprobs", "top_logprobs", "logit_bias"}
	for _, body := range []string{
		`{"model":"m","messages":[],"n":1,"logprobs":false}`,
		`{"model":"m","messages":[],"n":2}`,
		`{"model":"m","messages":[],"logit_bias":{"50256":-100}}`,
	} {
		fmt.Printf("%q\n", openai.UsedParam([]byte(body), groqRejects))
	}
	fmt.Println(string(openai.DropParams([]byte(`{"model":"m","logprobs":true,"messages":[],"top_logprobs":2}`), groqRejects)))
	// Output:
	// ""
	// "n"
	// "logit_bias"
	// {"model":"m","messages":[]}
}
