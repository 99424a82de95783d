package proxy

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestErrorShapes(t *testing.T) {
	cases := []struct {
		name                      string
		body                      []byte
		message, typ, param, code string
	}{
		{"with param", errorJSON("you must provide a model", typeInvalidRequest, "model", codeMissingParam), "you must provide a model", typeInvalidRequest, "model", codeMissingParam},
		{"no param", errorJSON("boom", typeServer, "", codeUpstreamFailed), "boom", typeServer, "", codeUpstreamFailed},
		{"quotes escaped", errorJSON(`a "quoted" <b>`, typeServer, "", codeInternal), `a "quoted" <b>`, typeServer, "", codeInternal},
		{"HF string error normalized", normalizeError(402, []byte(`{"error":"credits"}`), "credits"), "credits", typeRateLimit, "", "insufficient_quota"},
		{"plain text normalized", normalizeError(503, []byte(`oops`), ""), "upstream answered HTTP 503", typeServer, "", ""},
		{"401 normalized", normalizeError(401, nil, "bad key"), "bad key", typeAuth, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var v struct {
				Error *struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    string  `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(tc.body, &v); err != nil || v.Error == nil {
				t.Fatalf("not an error object: %s (%v)", tc.body, err)
			}
			e := v.Error
			param := ""
			if e.Param != nil {
				param = *e.Param
			}
			if e.Message != tc.message || e.Type != tc.typ || param != tc.param || e.Code != tc.code {
				t.Errorf("got %+v param %q", *e, param)
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
}

func TestErrorEvent(t *testing.T) {
	ev := errorEvent("upstream x failed mid-stream", codeStreamInterrupted)
	want := `data: {"error":{"message":"upstream x failed mid-stream","type":"server_error","param":null,"code":"stream_interrupted"}}` + "\n\n"
	if string(ev) != want {
		t.Errorf("got %q", ev)
	}
}

func TestParseCacheControl(t *testing.T) {
	cases := []struct {
		in   string
		want cacheControl
	}{
		{"", cacheControl{}},
		{"no-cache", cacheControl{noCache: true}},
		{"No-Store", cacheControl{noStore: true}},
		{"max-age=60", cacheControl{maxAge: time.Minute, hasMaxAge: true}},
		{`max-age="5", no-cache`, cacheControl{noCache: true, maxAge: 5 * time.Second, hasMaxAge: true}},
		{"max-age=-1", cacheControl{}},
		{"max-age=abc", cacheControl{}},
		{"only-if-cached", cacheControl{onlyIfCached: true}},
		{" no-store , max-age=0 ", cacheControl{noStore: true, hasMaxAge: true}},
	}
	for _, tc := range cases {
		if got := parseCacheControl([]byte(tc.in)); got != tc.want {
			t.Errorf("%q: got %+v want %+v", tc.in, got, tc.want)
		}
	}
}

func TestHasFinishReason(t *testing.T) {
	cases := map[string]bool{
		`{"choices":[{"delta":{},"finish_reason":"stop"}]}`:             true,
		`{"choices":[{"delta":{},"finish_reason" : "length"}]}`:         true,
		`{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}`:  false,
		`{"choices":[{"delta":{"content":"finish_reason"}}]}`:           false,
		`{"choices":[{"finish_reason":null},{"finish_reason":"stop"}]}`: true,
		`{"choices":[],"usage":{"prompt_tokens":1}}`:                    false,
	}
	for in, want := range cases {
		if got := hasFinishReason([]byte(in)); got != want {
			t.Errorf("%s: got %v", in, got)
		}
	}
}

func TestUsageChunks(t *testing.T) {
	cases := []struct {
		in        string
		usageOnly bool
		usage     int64
	}{
		{`{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5}}`, true, 17},
		{`{"id":"x","choices":[{"delta":{}}],"usage":null}`, false, 0},
		{`{"id":"x","choices":[{"delta":{},"finish_reason":"stop"}],"x_groq":{"usage":{"prompt_tokens":3,"completion_tokens":4}}}`, false, 7},
		{`{"id":"x","choices":[{"delta":{"content":"\"usage\""}}]}`, false, 0},
		{`{"choices":[ ],"usage":{"prompt_tokens":1,"completion_tokens":1}}`, true, 2},
		{`{"choices":null,"usage":{"prompt_tokens":1}}`, true, 1},
		{`{"usage":{"completion_tokens":2}}`, true, 2},
		{`{"choices":1,"usage":{"prompt_tokens":1}}`, false, 1},
		{`{"choices":"","usage":{"prompt_tokens":1}}`, false, 1},
		{`{"choices":[],"usage":{}}`, true, 0},
		{`{"choices":[],"usage":"n/a"}`, false, 0},
		{`{"choices":[],"usage":{"prompt_tokens":1}`, false, 0}, // invalid JSON
		{`[{"usage":{"prompt_tokens":1}}]`, false, 0},
	}
	for _, tc := range cases {
		if got := isUsageOnly([]byte(tc.in)); got != tc.usageOnly {
			t.Errorf("isUsageOnly(%s) = %v", tc.in, got)
		}
		u, _ := chunkUsage([]byte(tc.in))
		if u.PromptTokens+u.CompletionTokens != tc.usage {
			t.Errorf("chunkUsage(%s) = %+v", tc.in, u)
		}
	}
}

func TestWithIncludeUsage(t *testing.T) {
	cases := map[string]string{
		`{"model":"m","stream":true}`:                                          `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false}}`: `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`,
		"{\"model\":\"m\"}\n":                                                  "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true}}\n",
	}
	for in, want := range cases {
		if got := string(withIncludeUsage([]byte(in))); got != want {
			t.Errorf("%q: got %q want %q", in, got, want)
		}
	}
}

func TestValidRequestID(t *testing.T) {
	cases := map[string]bool{
		"abc-123_x.y:z":           true,
		"":                        false,
		"has space":               false,
		"new\nline":               false,
		string(make([]byte, 129)): false,
		"é":                       false,
	}
	for in, want := range cases {
		if got := validRequestID([]byte(in)); got != want {
			t.Errorf("%q: got %v", in, got)
		}
	}
}

func TestErrorHandlerShapes(t *testing.T) {
	cases := []struct {
		err    error
		status int
	}{
		{fasthttp.ErrBodyTooLarge, 413},
		{&fasthttp.ErrSmallBuffer{}, 431},
		{errTest("garbage"), 400},
	}
	for _, tc := range cases {
		var ctx fasthttp.RequestCtx
		ErrorHandler(&ctx, tc.err)
		if ctx.Response.StatusCode() != tc.status {
			t.Errorf("%v: status %d", tc.err, ctx.Response.StatusCode())
		}
		var v map[string]map[string]any
		if json.Unmarshal(ctx.Response.Body(), &v) != nil || v["error"]["message"] == "" {
			t.Errorf("%v: body %s", tc.err, ctx.Response.Body())
		}
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

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
