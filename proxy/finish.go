package proxy

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"switchyard/openai"
	"switchyard/policy"
	"switchyard/verdict"
)

// outcomeResult is how a served request ended, for finish.
type outcomeResult struct {
	status int // the status the client got
	// entry is the answer to cache when cacheable: a plain body, or the
	// stream as the upstream sent it.
	entry       []byte
	stream      bool // entry is a stream
	contentType string
	cacheable   bool
	// A stream's end: the upstream failed after the commit (streamErr),
	// or the client left or the stream stopped short (clientErr); usage
	// and chars are what the stream reported.
	streamErr, clientErr error
	usage                openai.Usage
	chars                int64
	// logTo, when set, gets the log line's status and error instead of
	// the line being written (a live stream's leader: see liveStream).
	logTo interface {
		requestDone(status int, logErr string)
	}
}

// finish is the one end of every request an upstream served, plain or
// stream: the stream's observation and breaker record, the metrics, the
// cache store (which also hands the answer to coalesced followers), the
// flight, and the log line.
func (s *Server) finish(c *call, r *attemptResult, o outcomeResult) {
	c.finished = true
	status := o.status
	var logErr string
	if o.stream {
		logErr, status = s.endStream(c, r, &o)
	} else if status/100 == 2 {
		s.successes.Add(1)
	}
	if !o.stream && status/100 == 2 {
		s.remember(c, r) // a Responses answer's id (a stream's is recorded as it passes)
	}
	if o.cacheable {
		s.store(c, o.stream, o.entry, o.contentType, r.u.Name)
	}
	s.finishFlight(c, nil)
	if o.logTo != nil {
		o.logTo.requestDone(status, logErr)
		return
	}
	s.logRequest(c, status, logErr)
}

// endStream reports a relayed stream's end to the policy and the metrics,
// and returns what the log says of it: the error, and the status (499 for
// a client that left).
func (s *Server) endStream(c *call, r *attemptResult, o *outcomeResult) (string, int) {
	pol := c.st.policy
	m := metricsFor(r.u.Name)
	ob := policy.Observation{Outcome: verdict.OK, Status: r.resp.Status, Latency: r.ttft,
		Usage: policy.Usage(o.usage), Chars: o.chars, RateLimit: r.resp.RateLimit, Cooldown: r.v.Cooldown, Reservation: r.res}
	if o.streamErr != nil {
		msg := c.st.describeErr(r.u.Name, o.streamErr)
		s.logAttemptDetail(c, r, msg, o.streamErr)
		ob.Err = msg
		pol.StreamFailed(r.u.Name, r.model, r.deferred, ob)
		label := "error"
		if errors.Is(o.streamErr, verdict.ErrTimeout) {
			label = "timeout"
		}
		m.outcomes[label].Inc()
		return msg, o.status
	}
	// The upstream did its part (and has charged the request), whether or
	// not the client stayed to the end.
	pol.StreamDone(r.u.Name, r.model, r.deferred)
	pol.Observe(r.u.Name, r.model, ob)
	m.outcomes["ok"].Inc()
	switch {
	case errors.Is(o.clientErr, errShutdown):
		return "cut: " + errShutdown.Error(), 503
	case o.clientErr != nil:
		return "client went away: " + o.clientErr.Error(), 499 // nginx's "client closed request", for the log only
	}
	s.successes.Add(1)
	c.usage = o.usage
	m.promptTokens.Add(int(o.usage.PromptTokens))
	m.completionTokens.Add(int(o.usage.CompletionTokens))
	m.ttfb.Update(r.ttft.Seconds())
	m.duration.Update(time.Since(r.start).Seconds())
	return "", o.status
}

// observe reports a finished attempt (not a relayed stream: endStream
// does) to the policy and the metrics.
func (s *Server) observe(c *call, r *attemptResult) {
	u := r.u
	ob := policy.Observation{Outcome: r.v.Outcome, Latency: r.ttft, Cooldown: r.v.Cooldown, Reservation: r.res}
	m := metricsFor(u.Name)
	if r.resp != nil {
		ob.Status = r.resp.Status
		ob.RateLimit = r.resp.RateLimit
		if r.v.Outcome == verdict.OK && !r.streaming() {
			ob.Usage = policy.Usage(r.usage)
			if c.st.policyNeedsChars(u.Name) {
				ob.Chars = openai.PromptCharsOf(c.req.Endpoint, c.body) + openai.CompletionCharsOf(c.req.Endpoint, r.resp.Body)
			}
			m.duration.Update(r.resp.Latency.Seconds())
		}
		if ob.Latency == 0 {
			ob.Latency = r.resp.Latency
		}
	}
	if r.v.Outcome != verdict.OK {
		ob.Err = c.st.describe(r)
		s.logAttemptDetail(c, r, ob.Err, r.err)
	}
	m.outcomes[outcomeLabel(r)].Inc()
	m.promptTokens.Add(int(ob.Usage.PromptTokens))
	m.completionTokens.Add(int(ob.Usage.CompletionTokens))
	c.usage = openai.Usage(ob.Usage)
	c.st.policy.Observe(u.Name, r.model, ob)
}

// logAttemptDetail writes, at debug level only, what the upstream itself
// said of a failed attempt (keys redacted): its message can quote the
// request, so /status and the info log carry only summary (describe).
func (s *Server) logAttemptDetail(c *call, r *attemptResult, summary string, err error) {
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	s.log.LogAttrs(context.Background(), slog.LevelDebug, "attempt failed",
		slog.String("request_id", c.rid), slog.String("upstream", r.u.Name),
		slog.String("error", summary), slog.String("upstream_detail", c.st.redact(upstreamDetail(r, err))))
}

// outcomeLabel is the attempt's switchyard_upstream_requests_total outcome.
func outcomeLabel(r *attemptResult) string {
	switch r.v.Outcome {
	case verdict.OK:
		return "ok"
	case verdict.RateLimited, verdict.QuotaExhausted:
		return "rate_limited"
	case verdict.ClientError, verdict.NotServed:
		return "client_error"
	}
	if errors.Is(r.err, verdict.ErrTimeout) {
		return "timeout"
	}
	return "error"
}

// logRequest writes the request's one log line: id, route, status, upstream,
// duration, cache result and the routing decision. With Options.LogOutput
// set the line is encoded here (appendRequestLine), else through the slog
// logger; the fields are the same.
func (s *Server) logRequest(c *call, status int, streamErr string) {
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	if s.logOut != nil {
		bp := lineBufs.Get().(*[]byte)
		line := appendRequestLine((*bp)[:0], time.Now(), level, c, status, streamErr)
		_, _ = s.logOut.Write(line)
		if cap(line) <= 16<<10 {
			*bp = line[:0]
			lineBufs.Put(bp)
		}
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", c.rid),
		slog.String("route", c.route.label),
		slog.Int("status", status),
		slog.String("model", truncate(c.req.Model, 100)),
		slog.Bool("stream", c.req.Stream),
		slog.String("cache", c.xcache),
		slog.String("upstream", c.upstream),
		slog.Int64("duration_us", time.Since(c.start).Microseconds()), // an integer: slog writes a float through encoding/json
	}
	if len(c.ranked) > 0 || len(c.tried) > 0 { // a stored-response operation tries without a ranking
		attrs = append(attrs, slog.String("ranked", string(appendRanked(nil, c))), slog.String("tried", string(appendTried(nil, c))))
	}
	if c.usage.PromptTokens+c.usage.CompletionTokens > 0 {
		attrs = append(attrs, slog.Int64("prompt_tokens", c.usage.PromptTokens), slog.Int64("completion_tokens", c.usage.CompletionTokens))
	}
	if streamErr != "" {
		attrs = append(attrs, slog.String("stream_error", streamErr))
	}
	s.log.LogAttrs(context.Background(), level, "request", attrs...)
}

// lineBufs holds the buffers request lines are encoded in.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// appendRequestLine appends the request's log line as slog's JSON handler
// writes it (time, level, msg, then the fields in order), ending in a
// newline: one pass of appends, no reflection, no allocation. Strings are
// escaped by openai.AppendString, so a field cannot end the line or the
// object.
func appendRequestLine(b []byte, now time.Time, level slog.Level, c *call, status int, streamErr string) []byte {
	b = append(b, `{"time":"`...)
	b = now.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"`...)
	b = append(b, level.String()...)
	b = append(b, `","msg":"request","request_id":`...)
	b = openai.AppendString(b, c.rid)
	b = append(b, `,"route":"`...)
	b = append(b, c.route.label...)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"model":`...)
	b = openai.AppendString(b, truncate(c.req.Model, 100))
	b = append(b, `,"stream":`...)
	b = strconv.AppendBool(b, c.req.Stream)
	b = append(b, `,"cache":`...)
	b = openai.AppendString(b, c.xcache)
	b = append(b, `,"upstream":`...)
	b = openai.AppendString(b, c.upstream)
	b = append(b, `,"duration_us":`...)
	b = strconv.AppendInt(b, time.Since(c.start).Microseconds(), 10)
	if len(c.ranked) > 0 || len(c.tried) > 0 {
		// Upstream names are config names ([A-Za-z0-9_.-]): no escaping.
		b = append(b, `,"ranked":"`...)
		b = appendRanked(b, c)
		b = append(b, `","tried":"`...)
		b = appendTried(b, c)
		b = append(b, '"')
	}
	if c.usage.PromptTokens+c.usage.CompletionTokens > 0 {
		b = append(b, `,"prompt_tokens":`...)
		b = strconv.AppendInt(b, c.usage.PromptTokens, 10)
		b = append(b, `,"completion_tokens":`...)
		b = strconv.AppendInt(b, c.usage.CompletionTokens, 10)
	}
	if streamErr != "" {
		b = append(b, `,"stream_error":`...)
		b = openai.AppendString(b, streamErr)
	}
	return append(b, "}\n"...)
}

// appendRanked appends the ranking: name=score,...
func appendRanked(b []byte, c *call) []byte {
	for i, cand := range c.ranked {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, cand.Name...)
		b = append(b, '=')
		b = strconv.AppendFloat(b, cand.Score, 'f', 3, 64)
	}
	return b
}

// appendTried appends the attempts: name:outcome,...
func appendTried(b []byte, c *call) []byte {
	for i := range c.tried {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, c.tried[i].upstream...)
		b = append(b, ':')
		if c.tried[i].breakerOpen {
			b = append(b, "breaker_open"...)
		} else {
			b = append(b, c.tried[i].outcome.String()...)
		}
	}
	return b
}
