package proxy

import (
	"github.com/valyala/fasthttp"

	"switchyard/openai"
)

// Error types and codes Switchyard itself answers with, in OpenAI's error
// shape (see openai.ErrorBody).
const (
	typeInvalidRequest = openai.TypeInvalidRequest
	typeAuth           = openai.TypeAuth
	typeServer         = openai.TypeServer

	codeModelNotFound     = "model_not_found"
	codeBodyTooLarge      = "request_too_large"
	codeNotFound          = "not_found"
	codeMethod            = "method_not_allowed"
	codeContentType       = "unsupported_media_type"
	codeInvalidAPIKey     = "invalid_api_key"
	codeUpstreamFailed    = "upstream_error"
	codeNoUpstream        = "no_upstream_available"
	codeStreamInterrupted = "stream_interrupted"
	codeShuttingDown      = "server_shutting_down"
	codeInternal          = "internal_error"
	codeCacheMiss         = "cache_miss"
)

// writeError answers with status and an OpenAI-shaped error body.
func writeError(ctx *fasthttp.RequestCtx, status int, message, typ, param, code string) {
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(status)
	ctx.SetBody(openai.ErrorBody(message, typ, param, code))
}
