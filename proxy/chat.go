package proxy

import (
	"bytes"
	"fmt"
	"mime"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/config"
	"switchyard/openai"
	"switchyard/policy"
	"switchyard/upstream"
)

// maxStreamDuration bounds a whole client stream (the write deadline), far
// above any real generation; idle and first-token timeouts end silent
// streams much earlier.
const maxStreamDuration = 30 * time.Minute

// call is one API request on its way through the handler.
type call struct {
	route *apiRoute
	rid   string
	start time.Time
	body  []byte // the client's body (valid until the handler returns)
	req   openai.Request
	// header is the client's request headers (valid until the handler
	// returns), for the upstreams' forward_headers.
	header    *fasthttp.RequestHeader
	complete  bool   // stream commit mode "complete"
	key       string // cache key; "" = not cached
	scope     string // the client's inbound key id ("" without auth.keys): its cache scope
	ttl       time.Duration
	maxAge    time.Duration // >0: cached entries older than this are misses
	xcache    string
	flight    *flight // non-nil when this request leads a coalesced miss
	st        *state
	tried     []attempt          // every candidate tried, in order
	ranked    []policy.Candidate // the ranking, for the decision log
	upstream  string
	sticky    string // the upstream holding a Responses request's state ("" = none; see sticky.go)
	stored    string // the response id an operation on a stored response names (stored.go)
	usage     openai.Usage
	finished  bool // finish ran: the request is logged
	handedOff bool // a stream relay finishes the request when it ends
	// upload is an audio upload's spool and form (audio.go); its body is
	// then the upload's cache document, and each attempt replays the spool.
	upload *uploadCall
}

// handleAPI serves a JSON API request (chat, legacy completions,
// embeddings, responses): admission, the cache, then the upstreams that
// serve the endpoint and the model.
func (s *Server) handleAPI(ctx *fasthttp.RequestCtx, start time.Time, r *apiRoute) {
	c := s.admit(ctx, start, r)
	defer s.leave(ctx, c)
	st := c.st

	scope, ok := s.authorized(ctx, st)
	if !ok {
		return
	}
	c.scope = scope
	if ct := ctx.Request.Header.ContentType(); len(ct) > 0 && !isJSONType(ct) {
		writeError(ctx, fasthttp.StatusUnsupportedMediaType, "Content-Type must be application/json", typeInvalidRequest, "", codeContentType)
		return
	}
	body := ctx.PostBody()
	req, err := openai.ParseRequest(r.ep, body)
	if err != nil {
		e := err.(*openai.RequestError)
		writeError(ctx, fasthttp.StatusBadRequest, e.Message, typeInvalidRequest, e.Param, e.Code)
		return
	}
	c.req, c.body = req, body
	c.header = &ctx.Request.Header
	if req.Stream {
		c.complete = commitComplete(st, &ctx.Request.Header)
	}

	var buf [8]policy.Target // most requests have few targets: no allocation
	targets, excluded := s.targets(st, c, buf[:0])
	if targets, ok = s.stickyTargets(ctx, c, targets); !ok {
		return
	}
	if len(targets) == 0 {
		s.answerNoTarget(ctx, c, excluded)
		return
	}
	if s.serveFromCache(ctx, c) {
		return
	}
	c.handedOff = s.forward(ctx, c, targets)
}

// commitComplete reports whether a stream request commits only once the
// whole upstream stream is read: streaming.commit, or the request's
// X-Stream-Commit.
func commitComplete(st *state, h *fasthttp.RequestHeader) bool {
	switch strings.ToLower(string(h.Peek("X-Stream-Commit"))) {
	case config.CommitComplete:
		return true
	case config.CommitFirstEvent:
		return false
	}
	return st.cfg.Streaming.Commit == config.CommitComplete
}

// admit starts an API request on route r: it counts it in flight, gives
// it its request id (X-Request-Id) and the config to serve it with. The
// caller defers leave.
func (s *Server) admit(ctx *fasthttp.RequestCtx, start time.Time, r *apiRoute) *call {
	s.requests.Add(1)
	inflight.Inc()
	c := &call{route: r, rid: s.requestID(ctx), start: start, st: s.st.Load(), xcache: cacheBypass}
	ctx.Response.Header.Set("X-Request-Id", c.rid)
	return c
}

// leave ends what admit started. A request that neither finished (see
// finish) nor was handed to a stream relay was answered by the proxy
// itself: it gets its X-Cache, its flight ends, and it is logged.
func (s *Server) leave(ctx *fasthttp.RequestCtx, c *call) {
	inflight.Dec()
	if !c.finished && !c.handedOff {
		ctx.Response.Header.Set("X-Cache", c.xcache)
		s.finishFlight(c, nil)
		s.logRequest(c, ctx.Response.StatusCode(), "")
	}
}

// isJSONType reports whether a Content-Type is JSON (application/json,
// with parameters, or a +json type).
func isJSONType(ct []byte) bool {
	if bytes.HasPrefix(ct, []byte("application/json")) && (len(ct) == 16 || ct[16] == ';' || ct[16] == ' ') {
		return true
	}
	mt, _, err := mime.ParseMediaType(string(ct))
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// exclusions are the upstreams that serve a request's model but were left
// out of its ranking, and why.
type exclusions struct {
	byEndpoint   []string // serve the model, not the endpoint
	unconfigured []string // no API key
	param        string   // a param every other one of them cannot serve
	byParam      []string // left out for param
}

// targets appends to dst, in config order, the upstreams that can serve
// the request: they serve its model (with the name each would be sent),
// have a key, and accept its params (or drop the ones they do not).
func (s *Server) targets(st *state, c *call, dst []policy.Target) (targets []policy.Target, ex exclusions) {
	targets = dst
	for _, u := range st.upstreams {
		m, ok := u.Model(c.req.Model)
		if !ok {
			continue
		}
		if !u.Serves(c.req.Endpoint) {
			ex.byEndpoint = append(ex.byEndpoint, u.Name)
			continue
		}
		if !u.Configured() {
			ex.unconfigured = append(ex.unconfigured, u.Name)
			continue
		}
		if p := openai.UsedParam(c.body, u.UnsupportedParams()); p != "" && !u.DropParams() {
			if ex.param == "" {
				ex.param = p
			}
			ex.byParam = append(ex.byParam, u.Name)
			continue
		}
		targets = append(targets, policy.Target{Name: u.Name, Model: m})
	}
	return targets, ex
}

// answerNoTarget answers a request that no upstream can take.
func (s *Server) answerNoTarget(ctx *fasthttp.RequestCtx, c *call, ex exclusions) {
	model := truncate(c.req.Model, 200)
	switch {
	case ex.param != "":
		writeError(ctx, fasthttp.StatusBadRequest,
			fmt.Sprintf("the parameter %q is not supported by any upstream serving %q (%s); remove it, or set drop_params on an upstream", ex.param, model, strings.Join(ex.byParam, ", ")),
			typeInvalidRequest, ex.param, openai.CodeUnsupported)
	case len(ex.unconfigured) > 0:
		ctx.Response.Header.Set("x-should-retry", "false")
		writeError(ctx, fasthttp.StatusServiceUnavailable,
			fmt.Sprintf("no upstream serving %q has an API key configured (unconfigured: %s)", model, strings.Join(ex.unconfigured, ", ")),
			typeServer, "", codeNoUpstream)
	case len(ex.byEndpoint) > 0:
		writeError(ctx, fasthttp.StatusNotFound,
			fmt.Sprintf("the model %q is not served on /v1/%s by any configured upstream (the upstreams serving it, %s, do not list %s in their endpoints)",
				model, c.req.Endpoint, strings.Join(ex.byEndpoint, ", "), c.req.Endpoint),
			typeInvalidRequest, "model", codeModelNotFound)
	default:
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("the model %q is not served by any configured upstream", model), typeInvalidRequest, "model", codeModelNotFound)
	}
}

// upstreamBody is the body one upstream is sent: the model renamed, the
// usage chunk asked for on streams, unsupported params dropped.
func upstreamBody(c *call, u *upstream.Client, model string) ([]byte, error) {
	if c.upload != nil {
		return nil, nil // built per attempt from the spool (tryUpload)
	}
	body := c.body
	if model != c.req.Model || !c.req.ModelPlain {
		var err error
		if body, err = openai.RewriteModel(body, model); err != nil {
			return nil, err
		}
	}
	if c.req.Stream && (c.req.Endpoint == openai.Chat || c.req.Endpoint == openai.Completions) {
		body = openai.WithIncludeUsage(body, &c.req)
	}
	if u.DropParams() {
		body = openai.DropParams(body, u.UnsupportedParams())
	}
	return body, nil
}
