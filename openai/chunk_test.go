package openai

import (
	"encoding/json"
	"testing"
)

func TestErrorBody(t *testing.T) {
	cases := []struct {
		name                      string
		body                      []byte
		message, typ, param, code string
	}{
		{"with param", ErrorBody("you must provide a model", TypeInvalidRequest, "model", CodeMissingParam), "you must provide a model", TypeInvalidRequest, "model", CodeMissingParam},
		{"no param", ErrorBody("boom", TypeServer, "", "upstream_error"), "boom", TypeServer, "", "upstream_error"},
		{"quotes escaped", ErrorBody(`a "quoted" <b>`, TypeServer, "", "x"), `a "quoted" <b>`, TypeServer, "", "x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := ParseError(tc.body)
			if !ok || e.Shape != ObjectShape || e.Message != tc.message || e.Type != tc.typ || e.Param != tc.param || e.Code != tc.code {
				t.Errorf("ParseError(%s) = %+v, %v", tc.body, e, ok)
			}
			var raw map[string]map[string]json.RawMessage
			_ = json.Unmarshal(tc.body, &raw)
			for _, k := range []string{"message", "type", "param", "code"} {
				if _, ok := raw["error"][k]; !ok {
					t.Errorf("field %q missing: %s", k, tc.body)
				}
			}
		})
	}
	// An empty code is null, never "": SDKs read "" as a code.
	if got := string(ErrorBody("m", TypeServer, "", "")); got != `{"error":{"message":"m","type":"server_error","param":null,"code":null}}` {
		t.Errorf("ErrorBody with no code = %s", got)
	}
	if got := string(ErrorEvent("x failed", TypeServer, "stream_interrupted")); got != `data: {"error":{"message":"x failed","type":"server_error","param":null,"code":"stream_interrupted"}}`+"\n\n" {
		t.Errorf("ErrorEvent = %q", got)
	}
}

func TestParseErrorShapes(t *testing.T) {
	cases := []struct {
		body string
		ok   bool
		want ErrorInfo
	}{
		{`{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}`, true,
			ErrorInfo{Shape: ObjectShape, Message: "Invalid API Key", Type: "invalid_request_error", Code: "invalid_api_key"}},
		{`{"error":{"message":"m","type":"t","param":"messages","code":null}}`, true, ErrorInfo{Shape: ObjectShape, Message: "m", Type: "t", Param: "messages"}},
		{`{"error":{"message":"m","code":429}}`, true, ErrorInfo{Shape: ObjectShape, Message: "m", Code: "429"}},
		{`{"error":"NOT_ENOUGH_BALANCE"}`, true, ErrorInfo{Shape: StringShape, Message: "NOT_ENOUGH_BALANCE"}},
		{`{"error":"Model x is currently loading","estimated_time":20.5}`, true, ErrorInfo{Shape: StringShape, Message: "Model x is currently loading", EstimatedTime: 20.5}},
		{`{"error":"bad","error_type":"validation"}`, true, ErrorInfo{Shape: StringShape, Message: "bad", Type: "validation"}},
		{`{"error":null}`, false, ErrorInfo{}},
		{`{"error":[1]}`, false, ErrorInfo{}},
		{`<html>502</html>`, false, ErrorInfo{}},
		{``, false, ErrorInfo{}},
	}
	for _, tc := range cases {
		got, ok := ParseError([]byte(tc.body))
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseError(%s) = %+v, %v; want %+v, %v", tc.body, got, ok, tc.want, tc.ok)
		}
	}
}

func TestReadChunkUsage(t *testing.T) {
	cases := []struct {
		in        string
		usageOnly bool
		usage     int64
		strip     string // WithoutUsage, "" when there is no usage member to strip
	}{
		{`{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5}}`, true, 17, `{"id":"x","choices":[]}`},
		{`{"id":"x","choices":[{"delta":{}}],"usage":null}`, false, 0, `{"id":"x","choices":[{"delta":{}}]}`},
		{`{"id":"x","choices":[],"usage":null}`, false, 0, `{"id":"x","choices":[]}`},
		{`{"id":"x","object":"text_completion","choices":[{"text":"a","index":0,"logprobs":null,"finish_reason":null}],"usage":null}`, false, 0, `{"id":"x","object":"text_completion","choices":[{"text":"a","index":0,"logprobs":null,"finish_reason":null}]}`},
		{`{"id":"x","object":"text_completion","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}`, true, 9, `{"id":"x","object":"text_completion","choices":[]}`},
		{`{"id":"x","choices":[{"delta":{},"finish_reason":"stop"}],"x_groq":{"usage":{"prompt_tokens":3,"completion_tokens":4}}}`, false, 7, ""},
		{`{"id":"x","choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}`, false, 7, `{"id":"x","choices":[{"delta":{},"finish_reason":"stop"}]}`},
		{`{"id":"x","choices":[{"delta":{"content":"\"usage\""}}]}`, false, 0, ""},
		{`{"choices":[ ],"usage":{"prompt_tokens":1,"completion_tokens":1}}`, true, 2, `{"choices":[ ]}`},
		{`{"choices":null,"usage":{"prompt_tokens":1}}`, true, 1, `{"choices":null}`},
		{`{"usage":{"completion_tokens":2}}`, true, 2, `{}`},
		{`{"choices":1,"usage":{"prompt_tokens":1}}`, false, 1, `{"choices":1}`},
		{`{"choices":[],"usage":{}}`, true, 0, `{"choices":[]}`},
		{`{"choices":[],"usage":"n/a"}`, false, 0, ""},
		{`{"choices":[],"usage":{"prompt_tokens":1}`, false, 0, ""}, // invalid JSON
		{`[{"usage":{"prompt_tokens":1}}]`, false, 0, ""},
	}
	for _, tc := range cases {
		c := ReadChunk([]byte(tc.in))
		if c.UsageOnly != tc.usageOnly {
			t.Errorf("ReadChunk(%s).UsageOnly = %v", tc.in, c.UsageOnly)
		}
		if c.Usage.PromptTokens+c.Usage.CompletionTokens != tc.usage {
			t.Errorf("ReadChunk(%s).Usage = %+v", tc.in, c.Usage)
		}
		if got := string(c.WithoutUsage([]byte(tc.in))); tc.strip != "" && got != tc.strip || tc.strip == "" && got != tc.in {
			t.Errorf("WithoutUsage(%s) = %s, want %s", tc.in, got, tc.strip)
		}
	}
}

func TestUsageOf(t *testing.T) {
	for in, want := range map[string][2]int64{
		`{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}`:               {12, 5},
		`{"queue_time":0.01,"prompt_tokens":3,"completion_tokens":500000}`:           {3, 500000},
		`{"prompt_tokens":-1,"completion_tokens":1.5}`:                               {0, 0},
		`{"prompt_tokens":"12"}`:                                                     {0, 0},
		`{"prompt_tokens":1234567890123456789,"completion_tokens":2}`:                {0, 2},
		`{"nested":{"prompt_tokens":9},"completion_tokens":4,"completion_tokens":7}`: {0, 7},
		`[1]`: {0, 0},
		`{`:   {0, 0},
	} {
		u := usageOf([]byte(in))
		if u.PromptTokens != want[0] || u.CompletionTokens != want[1] {
			t.Errorf("usageOf(%s) = %+v, want %v", in, u, want)
		}
	}
}

func TestFinishes(t *testing.T) {
	cases := []struct {
		name     string
		chunks   []string
		complete bool
	}{
		{"one choice finished", []string{`{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}`, `{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`}, true},
		{"spaces around", []string{`{"choices":[{"delta":{},"finish_reason" : "length"}]}`}, true},
		{"no finish", []string{`{"choices":[{"index":0,"delta":{"content":"finish_reason"},"finish_reason":null}]}`}, false},
		{"empty finish_reason", []string{`{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":""}]}`}, false},
		{"n 2, one unfinished", []string{`{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}`, `{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`}, false},
		{"n 2, both finished in one chunk", []string{`{"choices":[{"index":1,"delta":{"content":"b"}}]}`, `{"choices":[{"finish_reason":null,"index":0},{"index":1,"finish_reason":"stop"},{"index":0,"finish_reason":"stop"}]}`}, true},
		{"large index", []string{`{"choices":[{"index":70,"delta":{},"finish_reason":"stop"}]}`}, true},
		{"large index unfinished", []string{`{"choices":[{"index":0,"finish_reason":"stop"},{"index":70,"delta":{}}]}`}, false},
		{"usage only", []string{`{"choices":[],"usage":{"prompt_tokens":1}}`}, false},
	}
	for _, tc := range cases {
		var f Finishes
		for _, ch := range tc.chunks {
			c := ReadChunk([]byte(ch))
			f.Add([]byte(ch), &c)
		}
		if f.Complete() != tc.complete {
			t.Errorf("%s: Complete() = %v", tc.name, f.Complete())
		}
	}
}

func TestReadEvent(t *testing.T) {
	cases := []struct {
		raw                            string
		isData, done, errFrame, failed bool
	}{
		{"data: {\"choices\":[]}\n\n", true, false, false, false},
		{"data: [DONE]\n\n", true, true, false, false},
		{": keep-alive\n\n", false, false, false, false},
		{"event: error\ndata: {\"message\":\"boom\"}\n\n", true, false, true, true},
		{"data: {\"error\":{\"message\":\"boom\"}}\n\n", true, false, false, true},
		{"data: {\"error\":null,\"choices\":[]}\n\n", true, false, false, false},
	}
	for _, tc := range cases {
		e := ReadEvent([]byte(tc.raw))
		if e.IsData != tc.isData || e.Done != tc.done || e.ErrorFrame != tc.errFrame || e.Failed() != tc.failed {
			t.Errorf("ReadEvent(%q) = %+v failed %v", tc.raw, e, e.Failed())
		}
	}
}

func TestWithIncludeUsage(t *testing.T) {
	cases := map[string]string{
		`{"model":"m","messages":[],"stream":true}`:                                          `{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":false}}`: `{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":false}}`,
		"{\"model\":\"m\",\"messages\":[]}\n":                                                "{\"model\":\"m\",\"messages\":[],\"stream_options\":{\"include_usage\":true}}\n",
	}
	for in, want := range cases {
		req, err := ParseChatRequest([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(WithIncludeUsage([]byte(in), &req)); got != want {
			t.Errorf("%q: got %q want %q", in, got, want)
		}
	}
	empty := Request{}
	if got := string(WithIncludeUsage([]byte(`{ }`), &empty)); got != `{ "stream_options":{"include_usage":true}}` {
		t.Errorf("empty object: got %q", got)
	}
}
