package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"syscall"

	"github.com/valyala/fasthttp"
)

// Requests answered before the handler (fasthttp could not read them) or
// instead of it (ambiguous framing) are rejections: counted in
// switchyard_requests_total{route="rejected",status} and logged, one line
// each, with a reason and the facts of the connection, never the request's
// own text (its head may hold keys, its body prompts).

// routeRejected is the route label of rejections.
const routeRejected = "rejected"

// Rejection reasons, the reason field of the "request rejected" log line.
const (
	reasonBodyTooLarge    = "body_too_large"    // 413: over max_body_bytes
	reasonHeadersTooLarge = "headers_too_large" // 431: over the 8 KiB read buffer
	reasonBareLF          = "bare_lf"           // 400: head ending in bare LF
	reasonAmbiguous       = "ambiguous_framing" // 400: Content-Length and Transfer-Encoding
	reasonMalformed       = "malformed"         // 400: anything else fasthttp could not parse
	reasonIncomplete      = "incomplete"        // 400: the client closed or reset mid-request
	reasonTimeout         = "timeout"           // 408: not sent within read_timeout
)

// rejection is how one class of unreadable request is answered.
type rejection struct {
	status  int
	reason  string
	message string
	code    string
	level   slog.Level
	// linger: the client may still be sending (a body behind an oversize
	// head or body): drain before closing, or it reads a reset.
	linger bool
}

var (
	rejectBodyTooLarge = rejection{fasthttp.StatusRequestEntityTooLarge, reasonBodyTooLarge,
		"request body is larger than max_body_bytes", codeBodyTooLarge, slog.LevelWarn, true}
	rejectHeadersTooLarge = rejection{fasthttp.StatusRequestHeaderFieldsTooLarge, reasonHeadersTooLarge,
		"request headers too large", "headers_too_large", slog.LevelWarn, true}
	rejectBareLF = rejection{fasthttp.StatusBadRequest, reasonBareLF,
		"malformed HTTP request: lines must end in CRLF, not a bare LF", "bad_request", slog.LevelWarn, true}
	rejectAmbiguous = rejection{fasthttp.StatusBadRequest, reasonAmbiguous,
		"malformed HTTP request: both Content-Length and Transfer-Encoding", "bad_request", slog.LevelWarn, false}
	rejectMalformed = rejection{fasthttp.StatusBadRequest, reasonMalformed,
		"malformed HTTP request", "bad_request", slog.LevelWarn, true}
	rejectIncomplete = rejection{fasthttp.StatusBadRequest, reasonIncomplete,
		"malformed HTTP request: incomplete", "bad_request", slog.LevelInfo, false}
	rejectTimeout = rejection{fasthttp.StatusRequestTimeout, reasonTimeout,
		"request read timed out", "request_timeout", slog.LevelInfo, false}
)

// classifyRejection maps an error fasthttp reports for a request it could
// not read to its answer.
func classifyRejection(err error) rejection {
	var small *fasthttp.ErrSmallBuffer
	var timeout interface{ Timeout() bool }
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return rejectBodyTooLarge
	case errors.As(err, &small):
		return rejectHeadersTooLarge
	case errors.Is(err, errBareLF):
		return rejectBareLF
	case errors.As(err, &timeout) && timeout.Timeout():
		return rejectTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return rejectIncomplete
	}
	return rejectMalformed
}

// ErrorHandler is the fasthttp server's ErrorHandler. It answers a request
// fasthttp could not read (body over max_body_bytes, head over the read
// buffer, a malformed or bare-LF head, read_timeout) in OpenAI's error
// shape, counts and logs it as a rejection, and, when the client may still
// be sending, makes the close a lingering one (see linger).
func (s *Server) ErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	s.rejectWith(ctx, classifyRejection(err))
}

// rejectWith answers, counts and logs rejection r (see ErrorHandler).
func (s *Server) rejectWith(ctx *fasthttp.RequestCtx, r rejection) {
	writeError(ctx, r.status, r.message, typeInvalidRequest, "", r.code)
	if r.linger {
		cfg := &s.st.Load().cfg
		linger(ctx.Conn(), 2*int64(cfg.MaxBodyBytes), cfg.ReadTimeout)
	}
	s.reject(ctx, r)
}

// Guard returns h behind what fasthttp leaves to its user: the body read
// of every route but uploads (see bufferBody), and one framing check.
//
// fasthttp reads a request that has both Content-Length and
// Transfer-Encoding: chunked by its chunks, and closes the connection after
// it (RFC 9112 section 6.1 allows that, or rejecting it); a proxy in front
// that went by Content-Length saw other requests in it. Such a request gets
// 400, as nginx answers it, and reaches no upstream. fasthttp marks it
// Connection: close, which makes the check free on the hot path.
func (s *Server) Guard(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		hdr := &ctx.Request.Header
		if hdr.ConnectionClose() && hasHeaderLine(hdr.RawHeaders(), "transfer-encoding") &&
			hasHeaderLine(hdr.RawHeaders(), "content-length") {
			writeError(ctx, rejectAmbiguous.status, rejectAmbiguous.message, typeInvalidRequest, "", rejectAmbiguous.code)
			ctx.SetConnectionClose()
			s.reject(ctx, rejectAmbiguous)
			return
		}
		if uploadRouteOf(ctx.Path()) == nil {
			if r, ok := bufferBody(&ctx.Request, s.st.Load().cfg.MaxBodyBytes); !ok {
				ctx.SetConnectionClose()
				s.rejectWith(ctx, r)
				return
			}
		}
		h(ctx)
	}
}

// hasHeaderLine reports whether the raw header block has a field named
// name (lower case).
func hasHeaderLine(raw []byte, name string) bool {
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if len(line) > len(name) && line[len(name)] == ':' && bytes.EqualFold(line[:len(name)], []byte(name)) {
			return true
		}
	}
	return false
}

// reject counts and logs one rejection.
func (s *Server) reject(ctx *fasthttp.RequestCtx, r rejection) {
	requestsCounter(routeRejected, r.status).Inc()
	if !s.log.Enabled(context.Background(), r.level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("route", routeRejected),
		slog.Int("status", r.status),
		slog.String("reason", r.reason),
		slog.String("remote_addr", ctx.RemoteAddr().String()),
	}
	if r.reason == reasonBodyTooLarge {
		if n := declaredLength(&ctx.Request.Header); n > 0 { // chunked: -1, the size is unknown
			attrs = append(attrs, slog.Int("content_length", n))
		}
	}
	s.log.LogAttrs(context.Background(), r.level, "request rejected", attrs...)
}
