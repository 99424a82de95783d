package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/openai"
	"switchyard/sse"
	"switchyard/upstream"
	"switchyard/verdict"
)

// What the proxy says of a failed attempt, in /status's last_error and
// the log's stream_error: the upstream's HTTP status, error type and code,
// or the proxy's own account of a transport failure. Never the upstream's
// message or body: providers quote the request in them ("could not
// process 'my SSN is …'"), and /status and the log are read by people who
// did not send it. The client whose request it was gets the upstream's
// message in its own answer (keys redacted); the log keeps it at debug
// level only (logAttemptDetail).

// inBandErr is an error an upstream reported inside a 2xx answer: an
// "error" member in a plain answer, or an error event in a stream. Its
// Error names the upstream and the error's type and code only.
type inBandErr struct {
	upstream  string
	typ, code string // the upstream's, when they are tokens (see token)
	detail    string // the upstream's message, or its data, cut short: debug logs only
}

func (e *inBandErr) Error() string {
	return "upstream " + e.upstream + ": " + joinWords("in-band error", e.typ, e.code)
}

func (e *inBandErr) Unwrap() error { return errInBandError }

// inBandError is the error of an answer that carried an error in-band.
func inBandError(upstreamName string, data []byte) error {
	e, _ := openai.ParseError(data)
	detail := e.Message
	switch {
	case detail != "":
	case len(data) == 0:
		detail = "event: error"
	default:
		detail = string(data)
	}
	return &inBandErr{upstream: upstreamName, typ: token(e.Type), code: token(e.Code), detail: truncate(detail, 300)}
}

// describe says why an attempt failed, for /status and the log (see the
// top of this file), with any configured key redacted.
func (st *state) describe(r *attemptResult) string {
	switch {
	case r.err != nil:
		return st.describeErr(r.u.Name, r.err)
	case r.resp != nil:
		e, _ := openai.ParseError(r.resp.Body)
		return st.redact(joinWords("HTTP "+strconv.Itoa(r.resp.Status), token(e.Type), token(e.Code)))
	}
	return r.v.Reason
}

// describeErr is describe for an attempt's error: a transport failure, an
// unusable 2xx, an in-band error, a stream cut.
func (st *state) describeErr(upstreamName string, err error) string {
	return st.redact(errSummary(err, st.timeoutsOf(upstreamName)))
}

// upstreamDetail is what the upstream itself said of a failed attempt:
// its message, its body, or the transport error's full text (which can
// hold bytes of the answer). It can quote the request: debug logs only.
func upstreamDetail(r *attemptResult, err error) string {
	var ib *inBandErr
	switch {
	case errors.As(err, &ib):
		return ib.detail
	case err != nil:
		return truncate(err.Error(), 300)
	case r != nil && r.resp != nil:
		if e, ok := openai.ParseError(r.resp.Body); ok && e.Message != "" {
			return truncate(e.Message, 300)
		}
		return truncate(string(r.resp.Body), 300)
	}
	return ""
}

// timeouts are an upstream's configured waits, for describing a timeout.
type timeouts struct {
	whole, firstToken, idle time.Duration
}

func (st *state) timeoutsOf(name string) timeouts {
	for i := range st.cfg.Upstreams {
		if u := &st.cfg.Upstreams[i]; u.Name == name {
			return timeouts{whole: u.Timeout, firstToken: u.FirstTokenTimeout, idle: u.IdleTimeout}
		}
	}
	return timeouts{}
}

// errSummary describes an attempt's error in the proxy's own words: a
// fixed phrase per failure class, the configured timeout that expired, and
// for an in-band error the upstream's type and code. Error texts from
// below (fasthttp's can quote the bytes it could not parse) are not used.
func errSummary(err error, t timeouts) string {
	var (
		ib   *inBandErr
		dns  *net.DNSError
		cert *tls.CertificateVerificationError
		rec  tls.RecordHeaderError
		ne   net.Error
	)
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ib):
		return joinWords("in-band error", ib.typ, ib.code)
	case errors.Is(err, upstream.ErrFirstTokenTimeout):
		return "no first event within first_token_timeout" + after(t.firstToken)
	case errors.Is(err, upstream.ErrIdleTimeout):
		return "stream idle for longer than idle_timeout" + after(t.idle)
	case errors.Is(err, upstream.ErrTimeout):
		return "timeout" + after(t.whole)
	case errors.Is(err, verdict.ErrTimeout):
		return "timeout"
	case errors.Is(err, verdict.ErrBusy):
		return "connection pool to the upstream exhausted"
	case errors.Is(err, errInvalidJSON), errors.Is(err, errCutStream), errors.Is(err, errCompleteBound):
		return unwrapped(err)
	case errors.Is(err, upstream.ErrContentEncoding):
		return "answer in an unsupported Content-Encoding"
	case errors.Is(err, sse.ErrEventTooLarge):
		return "stream event too large"
	case errors.Is(err, sse.ErrTruncated):
		return "stream ended mid-event"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed before the answer was complete"
	case errors.As(err, &dns):
		if dns.IsNotFound {
			return "DNS lookup failed: no such host"
		}
		return "DNS lookup failed"
	case errors.As(err, &cert):
		return "TLS certificate not accepted"
	case errors.As(err, &rec):
		return "TLS handshake failed: not a TLS server"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "transport error (details at log_level debug)"
}

// unwrapped returns the text of the proxy's own sentinel at the end of
// err's chain, without the context phrases wrapped around it.
func unwrapped(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

func after(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return " after " + d.String()
}

// token returns s when it looks like an error type or code (1-64 letters,
// digits, '_', '-', '.', ':'), else "": a type or code is an enum, and
// anything else in its place may be text.
func token(s string) string {
	if len(s) == 0 || len(s) > 64 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == '.', c == ':':
		default:
			return ""
		}
	}
	return s
}

// joinWords joins the non-empty words with spaces.
func joinWords(words ...string) string {
	var b strings.Builder
	for _, w := range words {
		if w == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
	}
	return b.String()
}
