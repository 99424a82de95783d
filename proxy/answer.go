package proxy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/openai"
	"switchyard/policy"
	"switchyard/upstream"
	"switchyard/verdict"
)

// forward runs the attempt loop over the ranked candidates and answers. It
// returns true when a stream relay took over the rest of the request
// (the finish).
func (s *Server) forward(ctx *fasthttp.RequestCtx, c *call, targets []policy.Target) bool {
	ranked, skipped := c.st.policy.Rank(targets)
	c.ranked = ranked
	var last *attemptResult // the latest failure, for the all-failed answer
	for _, cand := range ranked {
		if last != nil {
			fallbacksTotal.Inc() // a failed attempt hands over to the next candidate
		}
		u := c.st.byName[cand.Name]
		r := s.attempt(c, u, cand.Model)
		if errors.Is(r.err, policy.ErrBreakerOpen) {
			c.tried = append(c.tried, attempt{upstream: u.Name, model: cand.Model, breakerOpen: true, err: r.err})
			continue
		}
		var qe *policy.QuotaError
		if errors.As(r.err, &qe) { // its reservation did not fit: skipped, not tried
			skipped = append(skipped, qe.Skipped)
			continue
		}
		a := attempt{upstream: u.Name, model: cand.Model, outcome: r.v.Outcome, reason: r.v.Reason, err: r.err}
		if r.resp != nil {
			a.status = r.resp.Status
		}
		c.tried = append(c.tried, a)
		if last != nil {
			last.release()
		}
		switch r.v.Outcome {
		case verdict.OK:
			c.upstream = u.Name
			setAttempts(ctx, c.tried)
			if c.req.Stream {
				return s.startRelay(ctx, c, r)
			}
			s.answerPlain(ctx, c, r)
			return false
		case verdict.ClientError:
			c.upstream = u.Name
			setAttempts(ctx, c.tried)
			s.answerUpstreamError(ctx, c, r)
			return false
		}
		last = r
	}
	setAttempts(ctx, c.tried)
	s.answerAllFailed(ctx, c, last, skipped, targets)
	return false
}

// setUpstreamHeaders copies the kept upstream headers to the client's
// response: Content-Type, x-ratelimit-*, retry-after; the upstream's
// x-request-id becomes X-Upstream-Request-Id.
func setUpstreamHeaders(ctx *fasthttp.RequestCtx, u *upstream.Client, resp *upstream.Response) {
	for _, h := range resp.Headers {
		if strings.EqualFold(h.Key, "X-Request-Id") {
			ctx.Response.Header.Set("X-Upstream-Request-Id", h.Value)
			continue
		}
		ctx.Response.Header.Set(h.Key, h.Value)
	}
	ctx.Response.Header.Set("X-Upstream", u.Name)
}

// answerPlain relays a successful plain answer, any configured key in it
// redacted; the finish stores it.
func (s *Server) answerPlain(ctx *fasthttp.RequestCtx, c *call, r *attemptResult) {
	ctx.SetStatusCode(r.resp.Status)
	setUpstreamHeaders(ctx, r.u, r.resp)
	ctx.Response.Header.Set("X-Cache", c.xcache)
	body := c.st.scrubAnswer(r.resp.Body) // a copy only when it held a key
	ctx.Response.SetBodyRaw(body)         // ours (upstream.Do read it into its own buffer): no copy
	s.finish(c, r, outcomeResult{status: r.resp.Status, entry: body, stream: false,
		contentType: r.resp.Header("Content-Type"), cacheable: r.resp.Status == fasthttp.StatusOK})
}

// answerUpstreamError answers with an upstream's error: its status, type,
// code and message (echoed keys redacted) as the failure table read them,
// in OpenAI's shape whatever the upstream's dialect. The upstream is named
// in X-Upstream, not in the body.
func (s *Server) answerUpstreamError(ctx *fasthttp.RequestCtx, c *call, r *attemptResult) {
	v := &r.v
	ctx.SetStatusCode(v.Status)
	setUpstreamHeaders(ctx, r.u, r.resp)
	ctx.Response.Header.Del("Retry-After") // set below from the verdict, when it has one
	ctx.Response.Header.Del("Retry-After-Ms")
	setRetryHeaders(ctx, v.RetryAfter, v.NoRetry)
	writeError(ctx, v.Status, c.st.redact(v.Message), v.Type, v.Param, v.Code)
}

// setRetryHeaders sets Retry-After (whole seconds, rounded up) when wait is
// positive, and x-should-retry: false when the client should not retry on
// its own, or when wait is longer than the SDKs obey (60 s).
func setRetryHeaders(ctx *fasthttp.RequestCtx, wait time.Duration, noRetry bool) {
	if wait > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
	}
	if noRetry || wait > time.Minute {
		ctx.Response.Header.Set("x-should-retry", "false")
	}
}

// answerAllFailed answers when no candidate served the request:
//   - the last upstream's own answer, as the failure table reads it, when
//     it is one the client should see (Verdict.Relay), with a truthful
//     Retry-After for rate limits and quotas: the earliest moment any
//     candidate comes back;
//   - 429 when nothing could be tried because every candidate is rate
//     limited or out of quota;
//   - 503 when nothing could be tried for another reason (breakers open);
//   - else 502 in the proxy's words, listing each attempt's status and
//     reason (never an upstream's text).
func (s *Server) answerAllFailed(ctx *fasthttp.RequestCtx, c *call, last *attemptResult, skipped []policy.Skipped, targets []policy.Target) {
	defer func() {
		if last != nil {
			last.release()
		}
	}()
	if c.sticky != "" {
		s.answerStickyFailed(ctx, c, last, skipped, targets)
		return
	}
	limited := last != nil && (last.v.Outcome == verdict.RateLimited || last.v.Outcome == verdict.QuotaExhausted)
	if limited {
		// The attempts just put candidates in cooldown: ask the policy
		// when each comes back, rather than trust the ranking's list.
		skipped = c.st.policy.Skipped(targets)
	}
	comeBack, allLimited, allQuota := time.Duration(0), len(skipped) > 0, len(skipped) > 0
	var earliest time.Time
	for _, sk := range skipped {
		if !sk.Until.IsZero() && (earliest.IsZero() || sk.Until.Before(earliest)) {
			earliest = sk.Until
		}
		allLimited = allLimited && (sk.Reason == policy.ReasonRateLimited || sk.Reason == policy.ReasonQuotaExhausted)
		allQuota = allQuota && sk.Reason == policy.ReasonQuotaExhausted
	}
	if !earliest.IsZero() {
		comeBack = max(time.Until(earliest), time.Second)
	}
	switch {
	case last != nil && last.resp != nil && last.v.Relay:
		if limited && comeBack > 0 {
			last.v.RetryAfter = comeBack
		}
		s.answerUpstreamError(ctx, c, last)
	case last == nil && allLimited && !anyBreakerOpen(c.tried):
		typ, code, msg := openai.TypeRateLimit, "rate_limit_exceeded", "every upstream serving this model is rate limited"
		if allQuota {
			typ, code, msg = "insufficient_quota", "insufficient_quota", "every upstream serving this model has used up its quota"
		}
		setRetryHeaders(ctx, comeBack, allQuota)
		writeError(ctx, fasthttp.StatusTooManyRequests, msg+": "+describeSkipped(c.tried, skipped), typ, "", code)
	case last == nil:
		setRetryHeaders(ctx, comeBack, comeBack == 0)
		writeError(ctx, fasthttp.StatusServiceUnavailable, "no upstream can serve this request now: "+describeSkipped(c.tried, skipped), typeServer, "", codeNoUpstream)
	default:
		if last.resp != nil {
			setUpstreamHeaders(ctx, last.u, last.resp)
		} else {
			ctx.Response.Header.Set("X-Upstream", last.u.Name)
		}
		ctx.Response.Header.Del("Retry-After")
		ctx.Response.Header.Del("Retry-After-Ms")
		status, code := fasthttp.StatusBadGateway, codeUpstreamFailed
		if last.v.Reason == "busy" {
			status, code = fasthttp.StatusServiceUnavailable, codeNoUpstream
		}
		setRetryHeaders(ctx, last.v.RetryAfter, allKeyRejected(c.tried)) // a retry may find another candidate, unless every key was refused
		writeError(ctx, status, "all upstreams failed: "+describeAttempts(c.tried), typeServer, "", code)
	}
}

// describeAttempts lists each attempt's upstream, status and outcome, for
// the proxy's own 502: no upstream text, which can quote the request.
func describeAttempts(tried []attempt) string {
	parts := make([]string, 0, len(tried))
	for _, a := range tried {
		switch {
		case a.breakerOpen:
			parts = append(parts, a.upstream+": circuit breaker open")
		case a.status != 0:
			parts = append(parts, fmt.Sprintf("%s: HTTP %d (%s)", a.upstream, a.status, a.reason))
		default:
			parts = append(parts, fmt.Sprintf("%s: %s", a.upstream, a.reason))
		}
	}
	return strings.Join(parts, "; ")
}

func anyBreakerOpen(tried []attempt) bool {
	for _, a := range tried {
		if a.breakerOpen {
			return true
		}
	}
	return false
}

// describeSkipped says why nothing could be tried, upstream by upstream:
// the proxy's own account, naming no request data.
func describeSkipped(tried []attempt, skipped []policy.Skipped) string {
	var parts []string
	for _, a := range tried {
		if a.breakerOpen {
			parts = append(parts, a.upstream+": circuit breaker open")
		}
	}
	for _, sk := range skipped {
		parts = append(parts, sk.Name+": "+sk.Reason)
	}
	if len(parts) == 0 {
		return "no candidate"
	}
	return strings.Join(parts, "; ")
}

// setAttempts sets X-Attempts when more than one upstream was actually
// called (candidates skipped by an open breaker are not attempts).
func setAttempts(ctx *fasthttp.RequestCtx, tried []attempt) {
	n := 0
	for _, a := range tried {
		if !a.breakerOpen {
			n++
		}
	}
	if n > 1 {
		ctx.Response.Header.Set("X-Attempts", strconv.Itoa(n))
	}
}

func allKeyRejected(tried []attempt) bool {
	for _, a := range tried {
		if !a.breakerOpen && a.outcome != verdict.KeyRejected {
			return false
		}
	}
	return true
}

// errorEvent is the in-band error event that ends a client's stream when
// the upstream fails after the commit point.
func errorEvent(message, code string) []byte {
	return openai.ErrorEvent(message, typeServer, code)
}
