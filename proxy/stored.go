package proxy

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/openai"
	"switchyard/policy"
	"switchyard/upstream"
	"switchyard/verdict"
)

// Operations on a stored response (OpenAI's API reference, "Responses"):
//
//	GET    /v1/responses/{id}               retrieve (client.responses.retrieve)
//	DELETE /v1/responses/{id}               delete   (client.responses.delete)
//	POST   /v1/responses/{id}/cancel        cancel a background response
//	GET    /v1/responses/{id}/input_items   list its input items
//
// A stored response exists on the upstream (and key) that created it
// only, so the operation goes there: to the upstream its sticky record
// names (sticky.go), or, when there is no record (expired, evicted, a
// response created before this proxy saw it), to each configured upstream
// serving /v1/responses in config order until one knows the id, that is,
// answers other than "not here" (see saysNotHeld). A retrieval found that
// way records the id, so a follow-up with previous_response_id goes
// straight there. Only an open key breaker skips an upstream.
//
// A pinned upstream that cannot be reached, fails or has its breaker open
// gets the client a 503 sticky_upstream_unavailable naming it, as for
// previous_response_id; its own answer (a 404 for an id it no longer
// has, a 400) is relayed. The query string is passed on as the client sent
// it (include[], pagination). Answers are never cached (a background
// response changes until it completes), and a retrieval asking for a
// stream (?stream=true) is relayed whole once the upstream has sent it.
// These calls reserve no quota and do not count toward an upstream's
// health or latency: they are bookkeeping, not generations. A deleted
// response's record is left to expire; a follow-up naming it gets the
// holder's own 404.

// storedSuffixes are the operations under /v1/responses/{id}, each with
// the one method it takes ("" is the response itself: GET or DELETE).
var storedSuffixes = map[string]string{
	"":             "",
	"/cancel":      fasthttp.MethodPost,
	"/input_items": fasthttp.MethodGet,
}

// storedRoute labels the operations' metrics and log lines.
var storedRoute = &apiRoute{ep: openai.Responses, label: routeStoredResponses}

// storedPrefix is the API path of a stored response's operations, under /v1.
const storedPrefix = "responses/"

// splitStoredPath splits the API path of an operation on a stored
// response ("responses/{id}[/cancel|/input_items]") into the id and the
// operation's suffix; ok is false for any other path under responses/.
func splitStoredPath(p []byte) (id, suffix string, ok bool) {
	rest := p[len(storedPrefix):]
	i := bytes.IndexByte(rest, '/')
	if i < 0 {
		i = len(rest)
	}
	id, suffix = string(rest[:i]), string(rest[i:])
	if _, known := storedSuffixes[suffix]; !known || id == "" || id == "." || id == ".." {
		return "", "", false
	}
	return id, suffix, true
}

// handleStoredResponse serves one operation on a stored response; p is
// its API path (see apiPath).
func (s *Server) handleStoredResponse(ctx *fasthttp.RequestCtx, start time.Time, p []byte) {
	c := s.admit(ctx, start, storedRoute)
	defer s.leave(ctx, c)
	st := c.st
	c.req.Endpoint = openai.Responses

	id, suffix, ok := splitStoredPath(p)
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown path %q", truncate(string(ctx.Path()), 200)), typeInvalidRequest, "", codeNotFound)
		return
	}
	method := string(ctx.Method())
	switch allow := storedSuffixes[suffix]; {
	case allow == "" && method == fasthttp.MethodPost:
		// POST /v1/responses/{name} is another API (input_tokens,
		// compact), not an operation on a stored response.
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown path %q", truncate(string(ctx.Path()), 200)), typeInvalidRequest, "", codeNotFound)
		return
	case allow == "" && method != fasthttp.MethodGet && method != fasthttp.MethodDelete:
		s.methodNotAllowed(ctx, "GET, DELETE")
		return
	case allow != "" && method != allow:
		s.methodNotAllowed(ctx, allow)
		return
	}
	scope, ok := s.authorized(ctx, st)
	if !ok {
		return
	}
	c.scope, c.stored = scope, id
	c.header = &ctx.Request.Header
	ctx.Response.Header.Set("X-Cache", cacheBypass)

	path := "/" + url.PathEscape(id) + suffix
	if q := ctx.URI().QueryString(); len(q) > 0 {
		path += "?" + string(q)
	}
	candidates, unconfigured := s.storedCandidates(c, id)
	switch {
	case len(candidates) > 0:
	case len(unconfigured) > 0:
		ctx.Response.Header.Set("x-should-retry", "false")
		writeError(ctx, fasthttp.StatusServiceUnavailable,
			fmt.Sprintf("no upstream serving /v1/responses has an API key configured (unconfigured: %s)", strings.Join(unconfigured, ", ")),
			typeServer, "", codeNoUpstream)
		return
	default:
		writeError(ctx, fasthttp.StatusNotFound, "no upstream lists responses in its endpoints, so none holds stored responses", typeInvalidRequest, "", codeNotFound)
		return
	}

	targets := make([]policy.Target, len(candidates))
	for i, u := range candidates {
		targets[i] = policy.Target{Name: u.Name}
	}
	// Only an open key breaker stops these calls: quotas, cooldowns and
	// model breakers concern generations.
	var skipped []policy.Skipped
	var notHeld, failed *attemptResult // the first answer saying "not here"; the latest failure
	for _, u := range candidates {
		if until, open := st.policy.KeyBreakerOpen(u.Name); open {
			skipped = append(skipped, policy.Skipped{Name: u.Name, Reason: policy.ReasonBreakerOpen, Until: until})
			continue
		}
		r := s.tryStored(c, u, method, path)
		a := attempt{upstream: u.Name, outcome: r.v.Outcome, reason: r.v.Reason, err: r.err}
		if r.resp != nil {
			a.status = r.resp.Status
		}
		c.tried = append(c.tried, a)
		if r.v.Outcome != verdict.OK {
			s.logAttemptDetail(c, r, st.describe(r), r.err)
		}
		switch {
		case r.v.Outcome == verdict.OK:
			c.upstream = u.Name
			setAttempts(ctx, c.tried)
			ctx.SetStatusCode(r.resp.Status)
			setUpstreamHeaders(ctx, u, r.resp)
			ctx.Response.SetBodyRaw(st.scrubAnswer(r.resp.Body))
			if c.sticky == "" && method != fasthttp.MethodDelete {
				r.rs.id = id // found by asking: record where it lives (remember)
			}
			s.finish(c, r, outcomeResult{status: r.resp.Status})
			return
		case c.sticky != "" && r.v.Outcome == verdict.ClientError:
			// The holder judged the request itself (a 400 for a bad
			// query): its answer.
			c.upstream = u.Name
			setAttempts(ctx, c.tried)
			s.answerUpstreamError(ctx, c, r)
			return
		case saysNotHeld(r):
			// This one does not know the id (404; a 400 or 405 from a
			// server that keeps no such responses): ask the next.
			if notHeld == nil {
				notHeld = r
			}
		default:
			failed = r
		}
	}
	setAttempts(ctx, c.tried)
	switch {
	case c.sticky != "":
		last := failed
		if last == nil {
			last = notHeld
		}
		s.answerStickyFailed(ctx, c, last, skipped, targets)
	case failed == nil && len(skipped) == 0 && notHeld != nil:
		// Every upstream that could hold it said it does not.
		c.upstream = notHeld.u.Name
		s.answerUpstreamError(ctx, c, notHeld)
	default:
		// Some could not be asked, or failed: the id may live there.
		s.answerAllFailed(ctx, c, failed, skipped, targets)
	}
}

// storedCandidates returns the upstreams to ask about the stored response
// id: the one its record names (c.sticky is then set), else every one
// serving /v1/responses with a key, in config order, and the names of
// those serving it without a key.
func (s *Server) storedCandidates(c *call, id string) (candidates []*upstream.Client, unconfigured []string) {
	if holder := s.stickyHolder(c, stickyResponse, id); holder != "" {
		if u := c.st.byName[holder]; u != nil && u.Serves(openai.Responses) && u.Configured() {
			c.sticky = holder
			return []*upstream.Client{u}, nil
		}
	}
	for _, u := range c.st.upstreams {
		switch {
		case !u.Serves(openai.Responses):
		case u.Configured():
			candidates = append(candidates, u)
		default:
			unconfigured = append(unconfigured, u.Name)
		}
	}
	return candidates, unconfigured
}

// saysNotHeld reports whether an upstream's answer to an operation on a
// stored response says it does not hold it: a 4xx other than a rate
// limit or a refused key.
func saysNotHeld(r *attemptResult) bool {
	switch r.v.Outcome {
	case verdict.RateLimited, verdict.QuotaExhausted, verdict.KeyRejected:
		return false
	}
	return r.resp != nil && r.resp.Status/100 == 4
}

// tryStored is one operation sent to one upstream, classified by the
// failure table.
func (s *Server) tryStored(c *call, u *upstream.Client, method, path string) *attemptResult {
	r := &attemptResult{u: u, start: time.Now()}
	req := upstream.Request{Endpoint: openai.Responses, Method: method, Path: path}
	if answer, ok := c.exchange(r, &req); ok {
		r.v = verdict.Classify(answer)
	}
	return r
}
