package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"strconv"
	"strings"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/valyala/fasthttp"

	"switchyard/config"
	"switchyard/jsonscan"
	"switchyard/policy"
	"switchyard/sse"
	"switchyard/upstream"
)

// maxStreamDuration bounds a whole client stream (the write deadline), far
// above any real generation; idle and first-token timeouts end silent
// streams much earlier.
const maxStreamDuration = 30 * time.Minute

// chatRequest is what the handler reads of a request body; the body itself
// is forwarded as is.
type chatRequest struct {
	model      string
	modelPlain bool // the model string has no escapes: its bytes are the name
	stream     bool
	wantUsage  bool // stream_options.include_usage is true
	hasOptions bool // stream_options is present
}

// errBadRequest is a client error with its message, param and code.
type errBadRequest struct{ msg, param, code string }

func (e *errBadRequest) Error() string { return e.msg }

// requestKeys are the top-level members parseChatRequest reads, in the
// order of its spans.
var requestKeys = []string{"model", "messages", "stream", "stream_options"}

// parseChatRequest validates body and reads the fields the proxy needs from
// the top-level object in one pass, without decoding the rest (messages
// can be large).
func parseChatRequest(body []byte) (chatRequest, error) {
	var req chatRequest
	var spans [4]jsonscan.Span
	object, ok := jsonscan.Members(body, requestKeys, spans[:])
	if !ok {
		if len(bytes.TrimSpace(body)) == 0 {
			return req, &errBadRequest{"request body is empty; send a JSON chat completion request", "", codeInvalidJSON}
		}
		msg := "request body is not valid JSON"
		var v json.RawMessage
		if err := json.Unmarshal(body, &v); err != nil {
			msg += ": " + err.Error()
		}
		return req, &errBadRequest{msg, "", codeInvalidJSON}
	}
	if !object {
		return req, &errBadRequest{"request body must be a JSON object", "", codeInvalidJSON}
	}
	model, messages, stream, options := spans[0], spans[1], spans[2], spans[3]
	if !model.Found() || body[model.Start] != '"' || model.End-model.Start <= 2 {
		return req, &errBadRequest{`you must provide a model parameter (a string under the key "model")`, "model", codeMissingParam}
	}
	if raw := body[model.Start+1 : model.End-1]; bytes.IndexByte(raw, '\\') < 0 {
		req.model, req.modelPlain = string(raw), true
	} else {
		var name string // escaped: decode it (rare; its own variable keeps req off the heap)
		if json.Unmarshal(body[model.Start:model.End], &name) != nil || name == "" {
			return req, &errBadRequest{"invalid model string", "model", codeInvalidJSON}
		}
		req.model = name
	}
	if !messages.Found() || body[messages.Start] != '[' {
		return req, &errBadRequest{"you must provide a messages parameter (an array)", "messages", codeMissingParam}
	}
	if stream.Found() {
		switch string(body[stream.Start:stream.End]) {
		case "true":
			req.stream = true
		case "false", "null":
		default:
			return req, &errBadRequest{"stream must be a boolean", "stream", codeInvalidJSON}
		}
	}
	if options.Found() {
		req.hasOptions = true
		if opts := body[options.Start:options.End]; opts[0] == '{' {
			var usage [1]jsonscan.Span
			jsonscan.Members(opts, includeUsageKey, usage[:])
			req.wantUsage = string(opts[usage[0].Start:usage[0].End]) == "true"
		}
	}
	return req, nil
}

var includeUsageKey = []string{"include_usage"}

// call is one chat request on its way through the handler.
type call struct {
	rid   string
	start time.Time
	body  []byte // the client's body (valid until the handler returns)
	alias string
	// aliasRaw: the body spells alias without escapes, so a body sent
	// under the alias itself needs no rewrite.
	aliasRaw   bool
	hasOptions bool // the body has stream_options
	stream     bool
	wantUsage  bool   // the client asked for stream_options.include_usage
	complete   bool   // stream commit mode "complete"
	key        string // cache key; "" = not cached
	ttl        time.Duration
	maxAge     time.Duration // >0: cached entries older than this are misses
	xcache     string
	flight     *flight // non-nil when this request leads a coalesced miss
	st         *state
	tried      []string           // "name:outcome" per attempt, for the decision log
	ranked     []policy.Candidate // the ranking, for the decision log
	upstream   string
	usage      policy.Usage
}

func (s *Server) handleChat(ctx *fasthttp.RequestCtx, start time.Time) {
	s.requests.Add(1)
	inflight.Inc()
	defer inflight.Dec()
	st := s.st.Load()
	c := &call{rid: s.requestID(ctx), start: start, st: st, xcache: cacheBypass}
	ctx.Response.Header.Set("X-Request-Id", c.rid)
	handedOff := false // a stream relay took over logging and the flight
	defer func() {
		if !handedOff {
			ctx.Response.Header.Set("X-Cache", c.xcache)
			s.finishFlight(c, nil)
			s.logRequest(c, ctx.Response.StatusCode(), "")
		}
	}()

	if !s.authorized(ctx) {
		return
	}
	if ct := ctx.Request.Header.ContentType(); len(ct) > 0 && !isJSONType(ct) {
		writeError(ctx, fasthttp.StatusUnsupportedMediaType, "Content-Type must be application/json", typeInvalidRequest, "", codeContentType)
		return
	}
	body := ctx.PostBody()
	req, err := parseChatRequest(body)
	if err != nil {
		e := err.(*errBadRequest)
		writeError(ctx, fasthttp.StatusBadRequest, e.msg, typeInvalidRequest, e.param, e.code)
		return
	}
	c.alias, c.aliasRaw, c.stream, c.body = req.model, req.modelPlain, req.stream, body
	if c.stream {
		c.wantUsage, c.hasOptions = req.wantUsage, req.hasOptions
		c.complete = st.cfg.Streaming.Commit == config.CommitComplete
		switch strings.ToLower(string(ctx.Request.Header.Peek("X-Stream-Commit"))) {
		case config.CommitComplete:
			c.complete = true
		case config.CommitFirstEvent:
			c.complete = false
		}
	}

	targets, unconfigured := s.targets(st, c.alias)
	if len(targets) == 0 {
		if len(unconfigured) == 0 {
			writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("the model %q is not served by any configured upstream", truncate(c.alias, 200)), typeInvalidRequest, "model", codeModelNotFound)
			return
		}
		ctx.Response.Header.Set("x-should-retry", "false")
		writeError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("no upstream serving %q has an API key configured (unconfigured: %s)", truncate(c.alias, 200), strings.Join(unconfigured, ", ")), typeServer, "", codeNoUpstream)
		return
	}

	if s.serveFromCache(ctx, c) {
		return
	}
	handedOff = s.forward(ctx, c, targets)
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

// targets lists, in config order, the upstreams with a key that serve alias
// (with the model name each would be sent), and the names of those that
// serve it but have no key.
func (s *Server) targets(st *state, alias string) (targets []policy.Target, unconfigured []string) {
	for _, u := range st.upstreams {
		m, ok := u.Model(alias)
		if !ok {
			continue
		}
		if !u.Configured() {
			unconfigured = append(unconfigured, u.Name)
			continue
		}
		targets = append(targets, policy.Target{Name: u.Name, Model: m})
	}
	return targets, unconfigured
}

// attemptResult is what one upstream attempt left for the handler.
type attemptResult struct {
	resp     *upstream.Response
	outcome  policy.Outcome
	err      error
	events   [][]byte // stream events read before the commit point (copies)
	ended    bool     // the stream was read to its end inside the attempt
	ttft     time.Duration
	start    time.Time        // when this attempt started
	deferred bool             // the breakers await StreamDone/StreamFailed (a committed stream)
	upstream *upstream.Client // set on failed attempts kept for the final answer
	usage    policy.Usage     // a plain answer's usage
}

// answerKeys are the top-level members tryOnce reads of a plain answer.
var answerKeys = []string{"error", "usage"}

func (r *attemptResult) release() {
	if r.resp != nil && r.resp.Stream != nil {
		r.resp.Stream.Close(errAbandoned)
	}
}

var (
	errAbandoned     = errors.New("attempt abandoned")
	errInBandError   = errors.New("in-band error event")
	errInvalidJSON   = errors.New("2xx answer is not valid JSON")
	errCutStream     = errors.New("stream ended before [DONE] and without a finish_reason")
	errCompleteBound = errors.New("stream not complete within the timeout or the size limit (commit mode complete)")
)

// forward runs the attempt loop and answers. It returns true when a stream
// relay took over the rest of the request (logging, flight, cache store).
func (s *Server) forward(ctx *fasthttp.RequestCtx, c *call, targets []policy.Target) bool {
	pol := c.st.policy
	ranked, skipped := pol.Rank(targets)
	c.ranked = ranked
	var last *attemptResult
	var reasons []string
	for _, cand := range ranked {
		if last != nil {
			fallbacksTotal.Inc() // a failed attempt hands over to the next candidate
		}
		u, model := c.st.byName[cand.Name], cand.Model
		r := s.attempt(c, u, model)
		if errors.Is(r.err, circuitbreaker.ErrOpen) {
			c.tried = append(c.tried, cand.Name+":breaker_open")
			reasons = append(reasons, cand.Name+": circuit breaker open")
			continue
		}
		c.tried = append(c.tried, cand.Name+":"+r.outcome.String())
		if last != nil {
			last.release() // only the latest failure is kept, for the all-failed answer
		}
		if r.outcome == policy.OK || r.outcome == policy.ClientError {
			c.upstream = u.Name
			setAttempts(ctx, c.tried)
			switch {
			case r.outcome == policy.ClientError:
				s.answerUpstreamError(ctx, c.st, u, r.resp)
			case r.resp.Stream != nil || r.ended:
				return s.startRelay(ctx, c, u, model, r)
			default:
				s.answerPlain(ctx, c, u, r)
			}
			return false
		}
		reasons = append(reasons, u.Name+": "+c.st.describe(r))
		last, r.upstream = r, u
	}
	setAttempts(ctx, c.tried)
	s.answerAllFailed(ctx, c, last, reasons, skipped, targets)
	return false
}

// describe says why an attempt failed, for the client's error message, the
// log and /status, with any upstream key an upstream echoed scrubbed.
func (st *state) describe(r *attemptResult) string {
	if r.err != nil {
		return st.redact(r.err.Error())
	}
	msg := upstream.ErrorMessage(r.resp.Body)
	if msg == "" {
		return fmt.Sprintf("HTTP %d", r.resp.Status)
	}
	return fmt.Sprintf("HTTP %d: %s", r.resp.Status, st.redact(truncate(msg, 300)))
}

// attempt sends the request to one upstream through the policy's breakers
// (and retry, when configured). For a stream it also reads up to the commit
// point — the first data event, or the whole stream in "complete" mode — so
// that a failure before it fails over invisibly.
func (s *Server) attempt(c *call, u *upstream.Client, model string) *attemptResult {
	pol := c.st.policy
	body := c.body
	if model != c.alias || !c.aliasRaw {
		var err error
		if body, err = upstream.RewriteModel(c.body, model); err != nil {
			return &attemptResult{outcome: policy.Failure, err: err}
		}
	}
	if c.stream && !c.hasOptions {
		body = withIncludeUsage(body)
	}
	var r *attemptResult
	att, doErr := pol.Do(u.Name, model, func() (policy.Attempt, error) {
		if r != nil {
			r.release() // a retry: the previous try's stream is of no use
		}
		r = s.tryOnce(c, u, body)
		if !(c.stream && r.outcome == policy.OK && (r.resp.Stream != nil || r.ended)) {
			// A relayed stream is observed when it ends (usage, tokens, TTFT).
			s.observe(c, u, model, r)
		}
		var ra time.Duration
		if r.resp != nil {
			ra = r.resp.RateLimit.RetryAfter
		}
		// A committed stream can still fail: its breaker record waits for
		// the relay to end it (StreamDone / StreamFailed).
		pending := r.outcome == policy.OK && r.resp != nil && r.resp.Stream != nil
		return policy.Attempt{Outcome: r.outcome, RetryAfter: ra, Pending: pending}, r.err
	})
	if r == nil { // the breaker refused the call
		return &attemptResult{outcome: policy.Failure, err: fmt.Errorf("upstream %s: %w", u.Name, doErr)}
	}
	r.deferred = att.Deferred
	return r
}

// tryOnce is one HTTP exchange with an upstream, classified.
func (s *Server) tryOnce(c *call, u *upstream.Client, body []byte) *attemptResult {
	start := time.Now()
	resp, err := u.Do(&upstream.Request{Body: body, Stream: c.stream, RequestID: c.rid})
	if errors.Is(err, upstream.ErrBusy) {
		// Our own connection pool is full: fail over, but the upstream did
		// nothing wrong, so no breaker or health penalty.
		return &attemptResult{outcome: policy.NotServed, err: err}
	}
	if err != nil {
		return &attemptResult{outcome: policy.Failure, err: err}
	}
	r := &attemptResult{resp: resp, outcome: upstream.Classify(resp.Status, resp.Body), start: start}
	if r.outcome != policy.OK {
		return r
	}
	if resp.Stream == nil {
		// One pass: valid JSON, an "error" member, and where the usage is.
		var spans [2]jsonscan.Span
		if _, ok := jsonscan.Members(resp.Body, answerKeys, spans[:]); !ok {
			r.outcome, r.err = policy.Failure, fmt.Errorf("upstream %s: %w", u.Name, errInvalidJSON)
		} else if spans[0].Found() && upstream.IsErrorEvent(resp.Body) {
			// A 200 carrying an error object: a failure, as in a stream.
			r.outcome = policy.Failure
			r.err = fmt.Errorf("upstream %s: %w: %s", u.Name, errInBandError, truncate(upstream.ErrorMessage(resp.Body), 300))
		} else if sp := spans[1]; sp.Found() {
			r.usage = usageOf(resp.Body[sp.Start:sp.End])
		}
		r.ttft = resp.Latency
		return r
	}
	// Read to the commit point. In complete mode that is the whole stream,
	// bounded like a plain answer: the upstream's timeout and MaxPlainBody.
	deadline := start.Add(u.Config().Timeout)
	size := 0
	for {
		if c.complete && (size > upstream.MaxPlainBody || time.Now().After(deadline)) {
			r.release()
			r.outcome = policy.Failure
			r.err = fmt.Errorf("upstream %s: %w", u.Name, errCompleteBound)
			return r
		}
		ev, err := resp.Stream.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("upstream %s: %w", u.Name, errCutStream)
				if c.complete && streamFinished(r.events) {
					r.events = append(r.events, []byte("data: [DONE]\n\n"))
					r.ended = true
					break
				}
			}
			r.release()
			r.outcome, r.err = policy.Failure, err
			return r
		}
		data, isData := sse.Data(ev)
		if isErrorFrame(ev) || (isData && upstream.IsErrorEvent(data)) {
			r.release()
			r.outcome = policy.Failure
			r.err = inBandError(u.Name, data)
			return r
		}
		if isData && !sse.IsDone(data) && !jsonscan.Valid(data) {
			invalidSSETotal.Inc()
			continue
		}
		r.events = append(r.events, bytes.Clone(ev))
		size += len(ev)
		if isData && r.ttft == 0 {
			r.ttft = time.Since(start) // the policy's latency for streams: time to first token
		}
		if !c.complete && isData {
			return r // the commit point: first data event
		}
		if isData && sse.IsDone(data) {
			r.ended = true
			resp.Stream.Close(nil)
			resp.Stream = nil
			return r
		}
	}
	resp.Stream.Close(nil)
	resp.Stream = nil
	return r
}

// observe reports a finished attempt to the policy and the metrics.
func (s *Server) observe(c *call, u *upstream.Client, model string, r *attemptResult) {
	ob := policy.Observation{Outcome: r.outcome, Latency: r.ttft}
	m := metricsFor(u.Name)
	if r.resp != nil {
		ob.Status = r.resp.Status
		ob.RateLimit = r.resp.RateLimit
		if r.outcome == policy.OK && r.resp.Stream == nil && !r.ended {
			ob.Usage = r.usage
			if c.st.policyNeedsChars(u.Name) {
				ob.Chars = promptChars(c.body) + completionChars(r.resp.Body)
			}
			m.duration.Update(r.resp.Latency.Seconds())
		}
	}
	if r.err != nil {
		ob.Err = c.st.describe(r)
	} else if r.outcome != policy.OK && r.resp != nil {
		ob.Err = c.st.describe(r)
	}
	if ob.Latency == 0 && r.resp != nil {
		ob.Latency = r.resp.Latency
	}
	m.outcomes[outcomeLabel(r)].Inc()
	m.promptTokens.Add(int(ob.Usage.PromptTokens))
	m.completionTokens.Add(int(ob.Usage.CompletionTokens))
	c.usage = ob.Usage
	c.st.policy.Observe(u.Name, model, ob)
}

func outcomeLabel(r *attemptResult) string {
	switch r.outcome {
	case policy.OK:
		return "ok"
	case policy.RateLimited, policy.QuotaExhausted:
		return "rate_limited"
	case policy.ClientError, policy.NotServed:
		return "client_error"
	}
	if errors.Is(r.err, upstream.ErrTimeout) || errors.Is(r.err, upstream.ErrFirstTokenTimeout) || errors.Is(r.err, upstream.ErrIdleTimeout) {
		return "timeout"
	}
	return "error"
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

// answerPlain relays a successful plain answer and stores it.
func (s *Server) answerPlain(ctx *fasthttp.RequestCtx, c *call, u *upstream.Client, r *attemptResult) {
	ctx.SetStatusCode(r.resp.Status)
	setUpstreamHeaders(ctx, u, r.resp)
	ctx.Response.Header.Set("X-Cache", c.xcache)
	ctx.SetBody(r.resp.Body)
	s.successes.Add(1)
	if r.resp.Status == fasthttp.StatusOK {
		s.store(c, false, r.resp.Body, r.resp.Header("Content-Type"), u.Name)
	}
}

// answerUpstreamError relays an upstream's client error (the request is
// wrong; another upstream would say the same), normalized to OpenAI's shape
// when it is not.
func (s *Server) answerUpstreamError(ctx *fasthttp.RequestCtx, st *state, u *upstream.Client, resp *upstream.Response) {
	ctx.SetStatusCode(resp.Status)
	setUpstreamHeaders(ctx, u, resp)
	body := st.redactBytes(resp.Body)
	if upstream.IsOpenAIError(body) {
		ctx.SetBody(body)
		return
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetBody(normalizeError(resp.Status, body, upstream.ErrorMessage(body)))
}

// retryAfterCap is the longest Retry-After Switchyard sends: the OpenAI
// SDKs do not retry past 120 s.
const retryAfterCap = 120 * time.Second

// answerAllFailed answers when no upstream could serve the request: 429 with
// Retry-After when every upstream was rate limited or out of quota, the last
// upstream's own answer when every one said the request cannot be served
// there (404, 413, context length), else 502 (attempts failed) or 503
// (nothing could be tried).
func (s *Server) answerAllFailed(ctx *fasthttp.RequestCtx, c *call, last *attemptResult, reasons []string, skipped []policy.Skipped, targets []policy.Target) {
	defer func() {
		if last != nil {
			last.release()
		}
	}()
	now := time.Now()
	limited, others := 0, 0
	var earliest time.Time
	note := func(until time.Time) {
		if !until.IsZero() && (earliest.IsZero() || until.Before(earliest)) {
			earliest = until
		}
	}
	for _, sk := range skipped {
		reasons = append(reasons, sk.Name+": "+sk.Reason)
		if sk.Reason == policy.ReasonRateLimited || sk.Reason == policy.ReasonQuotaExhausted {
			limited++
		} else {
			others++
		}
		note(sk.Until)
	}
	notServed := 0
	for _, t := range c.tried {
		switch {
		case strings.HasSuffix(t, ":"+policy.RateLimited.String()), strings.HasSuffix(t, ":"+policy.QuotaExhausted.String()):
			limited++
		case strings.HasSuffix(t, ":"+policy.NotServed.String()):
			notServed++
		default:
			others++
		}
	}
	if limited > 0 {
		// The attempts just put rate-limited upstreams in cooldown: ask the
		// policy when each comes back.
		for _, sk := range c.st.policy.Skipped(targets) {
			note(sk.Until)
		}
	}
	msg := "all upstreams failed: " + strings.Join(reasons, "; ")
	switch {
	case notServed > 0 && others == 0 && limited == 0 && last != nil && last.resp != nil:
		s.answerUpstreamError(ctx, c.st, last.upstream, last.resp)
	case limited > 0 && others == 0:
		wait := retryAfterCap
		if !earliest.IsZero() {
			wait = min(max(earliest.Sub(now), time.Second), retryAfterCap)
		}
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		writeError(ctx, fasthttp.StatusTooManyRequests, msg, typeRateLimit, "", codeRateLimited)
	case len(c.tried) == 0 || allBreakerOpen(c.tried):
		if !earliest.IsZero() && earliest.Sub(now) <= retryAfterCap {
			ctx.Response.Header.Set("Retry-After", strconv.Itoa(int((max(earliest.Sub(now), time.Second)+time.Second-1)/time.Second)))
		} else {
			ctx.Response.Header.Set("x-should-retry", "false")
		}
		writeError(ctx, fasthttp.StatusServiceUnavailable, msg, typeServer, "", codeNoUpstream)
	default:
		if allKeyRejected(c.tried) {
			ctx.Response.Header.Set("x-should-retry", "false")
		}
		writeError(ctx, fasthttp.StatusBadGateway, msg, typeServer, "", codeUpstreamFailed)
	}
}

// setAttempts sets X-Attempts when more than one upstream was actually
// called (candidates skipped by an open breaker are not attempts).
func setAttempts(ctx *fasthttp.RequestCtx, tried []string) {
	n := 0
	for _, t := range tried {
		if !strings.HasSuffix(t, ":breaker_open") {
			n++
		}
	}
	if n > 1 {
		ctx.Response.Header.Set("X-Attempts", strconv.Itoa(n))
	}
}

func allBreakerOpen(tried []string) bool {
	for _, t := range tried {
		if !strings.HasSuffix(t, ":breaker_open") {
			return false
		}
	}
	return true
}

func allKeyRejected(tried []string) bool {
	for _, t := range tried {
		if !strings.HasSuffix(t, ":"+policy.KeyRejected.String()) && !strings.HasSuffix(t, ":breaker_open") {
			return false
		}
	}
	return true
}

// logRequest writes the request's one log line: id, route, status, upstream,
// duration, cache result and the routing decision.
func (s *Server) logRequest(c *call, status int, streamErr string) {
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", c.rid),
		slog.String("route", routeChat),
		slog.Int("status", status),
		slog.String("model", truncate(c.alias, 100)),
		slog.Bool("stream", c.stream),
		slog.String("cache", c.xcache),
		slog.String("upstream", c.upstream),
		slog.Int64("duration_us", time.Since(c.start).Microseconds()), // an integer: slog writes a float through encoding/json
	}
	if len(c.ranked) > 0 {
		var b []byte
		for i, cand := range c.ranked {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, cand.Name...)
			b = append(b, '=')
			b = strconv.AppendFloat(b, cand.Score, 'f', 3, 64)
		}
		attrs = append(attrs, slog.String("ranked", string(b)), slog.String("tried", strings.Join(c.tried, ",")))
	}
	if c.usage.PromptTokens+c.usage.CompletionTokens > 0 {
		attrs = append(attrs, slog.Int64("prompt_tokens", c.usage.PromptTokens), slog.Int64("completion_tokens", c.usage.CompletionTokens))
	}
	if streamErr != "" {
		attrs = append(attrs, slog.String("stream_error", streamErr))
	}
	s.log.LogAttrs(context.Background(), level, "request", attrs...)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("BUG: " + err.Error())
	}
	return b
}
