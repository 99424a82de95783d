package proxy

import (
	"encoding/json"
	"strconv"

	"github.com/valyala/fasthttp"
)

// Error types and codes Switchyard itself answers with, in OpenAI's error
// shape {"error":{"message","type","param","code"}}.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuth           = "authentication_error"
	typeRateLimit      = "rate_limit_error"
	typeServer         = "server_error"

	codeModelNotFound     = "model_not_found"
	codeInvalidJSON       = "invalid_json"
	codeMissingParam      = "missing_required_parameter"
	codeBodyTooLarge      = "request_too_large"
	codeNotFound          = "not_found"
	codeMethod            = "method_not_allowed"
	codeContentType       = "unsupported_media_type"
	codeInvalidAPIKey     = "invalid_api_key"
	codeRateLimited       = "rate_limit_exceeded"
	codeUpstreamFailed    = "upstream_error"
	codeNoUpstream        = "no_upstream_available"
	codeStreamInterrupted = "stream_interrupted"
	codeInternal          = "internal_error"
	codeCacheMiss         = "cache_miss"
)

// apiError is OpenAI's error object.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// errorJSON returns {"error":{...}}.
func errorJSON(message, typ, param, code string) []byte {
	e := apiError{Message: message, Type: typ, Code: code}
	if param != "" {
		e.Param = &param
	}
	b, err := json.Marshal(struct {
		Error apiError `json:"error"`
	}{e})
	if err != nil {
		panic("BUG: marshal error object: " + err.Error())
	}
	return b
}

// writeError answers with status and an OpenAI-shaped error body.
func writeError(ctx *fasthttp.RequestCtx, status int, message, typ, param, code string) {
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(status)
	ctx.SetBody(errorJSON(message, typ, param, code))
}

// errorEvent returns an SSE event carrying an error object: what a client
// stream gets when the upstream fails after the commit point. openai-python
// and openai-node raise an APIError on it.
func errorEvent(message, code string) []byte {
	b := append([]byte("data: "), errorJSON(message, typeServer, "", code)...)
	return append(b, "\n\n"...)
}

// normalizeError turns an upstream's non-OpenAI error body (HuggingFace's
// {"error":"text"}, plain text, HTML) into OpenAI's shape.
func normalizeError(status int, body []byte, message string) []byte {
	if message == "" {
		message = "upstream answered HTTP " + strconv.Itoa(status)
	}
	typ := typeInvalidRequest
	switch {
	case status == 401 || status == 403:
		typ = typeAuth
	case status == 429 || status == 402:
		typ = typeRateLimit
	case status >= 500:
		typ = typeServer
	}
	code := ""
	switch status {
	case 402:
		code = "insufficient_quota"
	case 429:
		code = codeRateLimited
	}
	return errorJSON(message, typ, "", code)
}
