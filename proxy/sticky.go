package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"switchyard/cachekey"
	"switchyard/openai"
	"switchyard/policy"
	"switchyard/verdict"
)

// Stickiness of the Responses API's state.
//
// A response an upstream stored (previous_response_id) and a conversation
// it holds exist on that upstream only: another provider, or another key,
// has never seen the id. So every successful Responses answer with an id
// records "response id → upstream" (unless "store": false: nothing was
// kept), and one that continues a conversation records "conversation id →
// upstream", in the proxy's cache backend: memcached when configured, so
// every replica sees them, else the embedded cache of this process. An
// upstream is one key, so the upstream is also the key.
//
// A request that names either id goes to that upstream alone. If it
// cannot take the request now (breaker open, cooling down after a rate
// limit, quota used up, or failing on this very attempt) the client gets
// a 503 naming it and why, never another upstream's answer to a question
// about an id it does not know. An id the proxy has no record of (never
// seen, expired after cache.ttl, evicted, or its backend unreachable) is
// routed like any request: the upstream decides.
//
// Records live under "<namespace>:[<scope>:]sticky:v1:<hash>", apart from
// every answer's key, with the hash over the kind and the id (an id is
// client data: it never becomes part of a key as it is), scoped per
// inbound key when auth.keys is set, so one client cannot learn where
// another's responses live. They are written before the client receives
// the id; a failed write is counted and logged, and the answer goes on.

// stickyTTLDefault is how long records live when cache.ttl is 0 (answers
// not cached): 30 days, OpenAI's retention of stored responses.
const stickyTTLDefault = 30 * 24 * time.Hour

// codeStickyUnavailable is the error code of the 503 for a request whose
// response or conversation is held by an upstream that cannot take it now.
const codeStickyUnavailable = "sticky_upstream_unavailable"

// Sticky record kinds.
const (
	stickyResponse     = "response"
	stickyConversation = "conversation"
)

var (
	stickyLookups = map[string]*metrics.Counter{
		"hit":   metrics.NewCounter(`switchyard_responses_sticky_lookups_total{result="hit"}`),
		"miss":  metrics.NewCounter(`switchyard_responses_sticky_lookups_total{result="miss"}`),
		"error": metrics.NewCounter(`switchyard_responses_sticky_lookups_total{result="error"}`),
	}
	stickyWrites = map[string]*metrics.Counter{
		"ok":    metrics.NewCounter(`switchyard_responses_sticky_writes_total{result="ok"}`),
		"error": metrics.NewCounter(`switchyard_responses_sticky_writes_total{result="error"}`),
	}
	// stickyUnavailable counts requests answered 503 because the upstream
	// holding their response or conversation could not take them.
	stickyUnavailable = metrics.NewCounter(`switchyard_responses_sticky_unavailable_total`)
)

// stickyKey is the cache key of a record: see the top of this file.
func stickyKey(ns, scope, kind, id string) string {
	k := cachekey.FromText(ns, kind+"\x00"+id)
	return scopedKey(taggedKey(k, ns, "sticky"), ns, scope)
}

// stickyRef names what a continuing request refers to, for messages:
// previous_response_id "resp_…" or conversation "conv_…", or the
// response "resp_…" an operation on a stored response names (stored.go).
// It returns the record's kind and id too; kind is "" for a request that
// refers to nothing stored.
func stickyRef(req *openai.Request, stored string) (kind, id, ref string) {
	switch {
	case stored != "":
		return stickyResponse, stored, fmt.Sprintf("the response %q", truncate(stored, 100))
	case req.PreviousResponseID != "":
		return stickyResponse, req.PreviousResponseID, fmt.Sprintf("previous_response_id %q", truncate(req.PreviousResponseID, 100))
	case req.Conversation != "":
		return stickyConversation, req.Conversation, fmt.Sprintf("conversation %q", truncate(req.Conversation, 100))
	}
	return "", "", ""
}

// stickyTargets pins a request that continues a response or conversation
// the proxy has a record of to the upstream that holds it: targets
// becomes that one target (c.sticky names it). It returns targets as they
// are for anything else. When the upstream cannot serve this request at
// all (its model, endpoint, params or key), it answers itself, and ok is
// false.
func (s *Server) stickyTargets(ctx *fasthttp.RequestCtx, c *call, targets []policy.Target) (_ []policy.Target, ok bool) {
	kind, id, ref := stickyRef(&c.req, c.stored)
	name := s.stickyHolder(c, kind, id)
	if name == "" {
		return targets, true
	}
	for _, t := range targets {
		if t.Name == name {
			c.sticky = name
			targets[0] = t
			return targets[:1], true
		}
	}
	u := c.st.byName[name]
	if u == nil {
		// Renamed or removed since: no upstream of this config holds the
		// id under that name; the upstreams decide.
		s.log.Debug("sticky upstream no longer configured", "request_id", c.rid, "upstream", name)
		return targets, true
	}
	c.sticky, c.upstream = name, name // the log line names it
	ctx.Response.Header.Set("X-Upstream", name)
	_, servesModel := u.Model(c.req.Model)
	switch {
	case !servesModel:
		writeError(ctx, fasthttp.StatusBadRequest,
			fmt.Sprintf("%s is held by upstream %q, which does not serve the model %q: continue it with a model that upstream serves", ref, name, truncate(c.req.Model, 200)),
			typeInvalidRequest, "model", codeModelNotFound)
	case !u.Serves(openai.Responses) || !u.Configured():
		ctx.Response.Header.Set("x-should-retry", "false")
		writeError(ctx, fasthttp.StatusServiceUnavailable,
			fmt.Sprintf("%s is held by upstream %q, which no longer serves /v1/responses (its endpoints or API key changed)", ref, name),
			typeServer, "", codeNoUpstream)
	default: // a param it cannot take (UsedParam without drop_params)
		p := openai.UsedParam(c.body, u.UnsupportedParams())
		writeError(ctx, fasthttp.StatusBadRequest,
			fmt.Sprintf("%s is held by upstream %q, which does not support the parameter %q; remove it, or set drop_params on that upstream", ref, name, p),
			typeInvalidRequest, p, openai.CodeUnsupported)
	}
	return nil, false
}

// stickyHolder returns the upstream the record of (kind, id) names, or ""
// when there is none: kind is "", no record, or the backend failed.
func (s *Server) stickyHolder(c *call, kind, id string) string {
	if kind == "" || s.cache == nil {
		return ""
	}
	raw, err := s.cache.Get(stickyKey(c.st.cfg.Cache.Namespace, c.scope, kind, id))
	switch {
	case err == nil:
		stickyLookups["hit"].Inc()
		return string(raw)
	case s.isMiss(err):
		stickyLookups["miss"].Inc()
	default:
		stickyLookups["error"].Inc()
		s.log.Debug("sticky lookup", "request_id", c.rid, "err", err)
	}
	return ""
}

// remember records, once per answer, that r's upstream holds the response
// it created and the conversation the request continues (see the top of
// this file). It waits for the backend (bounded by its timeout), so the
// client never holds an id the other replicas cannot place yet.
func (s *Server) remember(c *call, r *attemptResult) {
	rs := &r.rs
	if rs.recorded || rs.id == "" || s.cache == nil || c.req.Endpoint != openai.Responses {
		return
	}
	rs.recorded = true
	ttl := c.st.cfg.Cache.TTL
	if ttl <= 0 {
		ttl = stickyTTLDefault
	}
	ns, name := c.st.cfg.Cache.Namespace, []byte(r.u.Name)
	set := func(kind, id string) {
		if err := s.cache.Set(stickyKey(ns, c.scope, kind, id), name, ttl); err != nil {
			stickyWrites["error"].Inc()
			s.log.LogAttrs(context.Background(), slog.LevelWarn, "sticky record not stored: a follow-up naming it is routed like a new request",
				slog.String("request_id", c.rid), slog.String("kind", kind), slog.String("upstream", r.u.Name), slog.String("err", err.Error()))
			return
		}
		stickyWrites["ok"].Inc()
	}
	if !c.req.NoStore {
		set(stickyResponse, rs.id)
	}
	if c.req.Conversation != "" {
		set(stickyConversation, c.req.Conversation)
	}
}

// answerStickyFailed answers a pinned request (c.sticky) that its upstream
// did not serve: the upstream's own answer when it judged the request
// itself (a 404 for an id it no longer has, a context too long), else a
// 503 naming the upstream and why it cannot take requests now, with
// Retry-After when that is known. Nothing was sent to another upstream.
func (s *Server) answerStickyFailed(ctx *fasthttp.RequestCtx, c *call, last *attemptResult, skipped []policy.Skipped, targets []policy.Target) {
	if last != nil && last.resp != nil && last.v.Outcome == verdict.NotServed && last.v.Relay {
		s.answerUpstreamError(ctx, c, last)
		return
	}
	stickyUnavailable.Inc()
	var why string
	var wait time.Duration
	if last != nil && (last.v.Outcome == verdict.RateLimited || last.v.Outcome == verdict.QuotaExhausted) {
		skipped = c.st.policy.Skipped(targets) // the attempt just cooled it down: until when?
	}
	for _, sk := range skipped {
		if sk.Name != c.sticky {
			continue
		}
		why = sk.Reason
		if !sk.Until.IsZero() {
			wait = max(time.Until(sk.Until), time.Second)
		}
	}
	switch {
	case last != nil:
		why = "it failed just now: " + describeAttempts(c.tried)
		wait = max(wait, last.v.RetryAfter)
	case why == "" && anyBreakerOpen(c.tried):
		why = policy.ReasonBreakerOpen
	case why == "":
		why = "no candidate"
	}
	_, _, ref := stickyRef(&c.req, c.stored)
	c.upstream = c.sticky // the log line names it
	ctx.Response.Header.Set("X-Upstream", c.sticky)
	ctx.Response.Header.Del("Retry-After")
	ctx.Response.Header.Del("Retry-After-Ms")
	setRetryHeaders(ctx, wait, false)
	writeError(ctx, fasthttp.StatusServiceUnavailable,
		fmt.Sprintf("%s is held by upstream %q, the only one that knows it, and that upstream cannot take requests now (%s); the request was not sent to another upstream: retry later",
			ref, c.sticky, c.st.redact(why)),
		typeServer, "", codeStickyUnavailable)
}
