package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"switchyard/openai"
	"switchyard/policy"
	"switchyard/upstream"
	"switchyard/verdict"
)

// attempt is the record of one candidate tried: for the decision log,
// X-Attempts and the all-failed answer.
type attempt struct {
	upstream, model string
	outcome         verdict.Outcome
	reason          string // the failure table's rule
	breakerOpen     bool   // the breaker refused the call: no attempt was made
	status          int
	err             error
}

// attemptResult is what one upstream attempt left for the handler.
type attemptResult struct {
	u        *upstream.Client
	model    string
	resp     *upstream.Response
	v        verdict.Verdict
	err      error
	events   [][]byte // stream events read before the commit point (copies)
	ended    bool     // the stream was read to its end inside the attempt
	finishes openai.Finishes
	ttft     time.Duration
	start    time.Time    // when this attempt started
	deferred bool         // the breakers await StreamDone/StreamFailed (a committed stream)
	usage    openai.Usage // a plain answer's usage
	chars    int64        // completion characters read so far (chars quotas)
	rs       responsesState
	res      *policy.Reservation // the quota Do reserved; settled by the attempt's Observe
}

func (r *attemptResult) release() {
	if r.resp != nil && r.resp.Stream != nil {
		r.resp.Stream.Close(errAbandoned)
		r.resp.Stream = nil
	}
}

// streaming reports whether the attempt is a stream to relay: an open
// upstream stream, or one read to its end before the commit point.
func (r *attemptResult) streaming() bool {
	return r.resp != nil && (r.resp.Stream != nil || r.ended)
}

var (
	errAbandoned     = errors.New("attempt abandoned")
	errInBandError   = errors.New("in-band error event")
	errInvalidJSON   = errors.New("2xx answer is not valid JSON")
	errCutStream     = errors.New("stream ended before every choice finished")
	errCompleteBound = errors.New("stream not complete within the timeout or the size limit (commit mode complete)")
)

// attempt sends the request to one upstream through the policy's breakers
// (and retry, when configured). For a stream it also reads up to the commit
// point — the first data event, or the whole stream in "complete" mode — so
// that a failure before it fails over invisibly.
func (s *Server) attempt(c *call, u *upstream.Client, model string) *attemptResult {
	body, err := upstreamBody(c, u, model)
	if err != nil {
		return &attemptResult{u: u, model: model, err: err, v: verdict.Verdict{Outcome: verdict.Failure, Reason: "invalid_request"}}
	}
	var r *attemptResult
	att, doErr := c.st.policy.Do(u.Name, model, c.estimate, func(res *policy.Reservation) (policy.Attempt, error) {
		if r != nil {
			r.release() // a retry: the previous try's stream is of no use
		}
		r = s.tryOnce(c, u, model, body)
		r.res = res
		if !(r.v.Outcome == verdict.OK && r.streaming()) {
			// A relayed stream is observed when it ends (usage, tokens, TTFT).
			s.observe(c, r)
		}
		a := policy.Attempt{Outcome: r.v.Outcome, RetryAfter: r.v.RetryAfter,
			NoRetry: errors.Is(r.err, verdict.ErrTimeout)}
		if r.resp != nil {
			a.RetryAfter = max(a.RetryAfter, r.resp.RateLimit.RetryAfter)
		}
		// A committed stream can still fail: its breaker record waits for
		// the relay to end it (StreamDone / StreamFailed).
		a.Pending = r.v.Outcome == verdict.OK && r.resp != nil && r.resp.Stream != nil
		return a, r.err
	})
	if r == nil { // the policy refused the call (an open breaker, no quota left): no attempt
		return &attemptResult{u: u, model: model, err: doErr, v: verdict.Verdict{Outcome: verdict.Failure, Reason: "not_called"}}
	}
	r.deferred = att.Deferred
	return r
}

// estimate is what the request is expected to cost, for a token or
// character quota's reservation (the policy asks only for those).
func (c *call) estimate() policy.Estimate {
	return policy.Estimate{PromptChars: openai.PromptChars(c.body), MaxTokens: openai.MaxTokens(c.body)}
}

// tryOnce is one HTTP exchange with an upstream, classified.
func (s *Server) tryOnce(c *call, u *upstream.Client, model string, body []byte) *attemptResult {
	if c.upload != nil {
		return s.tryUpload(c, u, model)
	}
	start := time.Now()
	r := &attemptResult{u: u, model: model, start: start}
	req := upstream.Request{Endpoint: c.req.Endpoint, Body: body, Stream: c.req.Stream}
	answer, ok := c.exchange(r, &req)
	if !ok {
		return r
	}
	resp := r.resp
	if resp.Status/100 != 2 {
		r.v = verdict.Classify(answer)
		return r
	}
	if resp.Stream == nil {
		// A plain answer (or a plain answer to a stream request: the
		// relay converts it). One pass: valid JSON, an error, the usage.
		r.takePlain(&answer, readAnswer(c, r, resp.Body))
		r.ttft = resp.Latency
		r.v = verdict.Classify(answer)
		return r
	}
	s.readToCommit(c, r)
	return r
}

// takePlain applies to the attempt what one pass over its plain 2xx answer
// found: invalid JSON or an in-band error is the attempt's error (and the
// failure table's to read), and the usage is its usage.
func (r *attemptResult) takePlain(answer *verdict.Answer, a openai.Answer) {
	switch {
	case !a.Valid:
		r.err = fmt.Errorf("upstream %s: %w", r.u.Name, errInvalidJSON)
		answer.Err = r.err
	case a.Error:
		answer.InBand = true
		r.err = inBandError(r.u.Name, r.resp.Body)
	}
	r.usage = a.Usage
}

// exchange sends req to r's upstream, with the request's id, the
// client's forward headers and the answer size cap, and returns the answer
// for the failure table. On a transport failure it sets r's error and
// verdict and returns false; else r.resp is the response.
func (c *call) exchange(r *attemptResult, req *upstream.Request) (verdict.Answer, bool) {
	req.RequestID, req.MaxBody = c.rid, c.st.cfg.MaxResponseBytes
	if c.header != nil {
		req.ClientHeaders = c.header // a nil pointer in the interface would not be nil
	}
	resp, err := r.u.Do(req)
	if err != nil {
		r.err = err
		r.v = verdict.Classify(verdict.Answer{Provider: r.u.Provider, Err: err})
		return verdict.Answer{}, false
	}
	r.resp = resp
	return verdict.Answer{Provider: r.u.Provider, Status: resp.Status, RateLimit: resp.RateLimit, Body: resp.Body}, true
}

// failBeforeCommit ends an attempt whose stream failed before its commit
// point: the stream is released, and err (with the in-band error body,
// when the upstream sent one) is the attempt's verdict.
func (r *attemptResult) failBeforeCommit(err error, inBand []byte) {
	r.release()
	r.err = err
	r.v = verdict.Classify(verdict.Answer{Provider: r.u.Provider, Status: r.resp.Status, RateLimit: r.resp.RateLimit,
		Body: inBand, InBand: inBand != nil, Err: err})
}

// readToCommit reads a stream to its commit point: the first data event,
// or in complete mode the whole stream, bounded like a plain answer by the
// upstream's timeout and max_response_bytes. A failure before it is the
// attempt's verdict, and the stream is released.
func (s *Server) readToCommit(c *call, r *attemptResult) {
	if c.req.Endpoint.TypedEvents() {
		s.readResponsesToCommit(c, r)
		return
	}
	u, resp := r.u, r.resp
	deadline := r.start.Add(u.Timeout())
	size := 0
	for {
		if c.complete && (size > c.st.cfg.MaxResponseBytes || time.Now().After(deadline)) {
			r.failBeforeCommit(fmt.Errorf("upstream %s: %w", u.Name, errCompleteBound), nil)
			return
		}
		raw, err := resp.Stream.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if c.complete && r.finishes.Complete() {
					r.events = append(r.events, doneEvent)
					r.ended = true
					break
				}
				err = fmt.Errorf("upstream %s: %w", u.Name, errCutStream)
			}
			r.failBeforeCommit(err, nil)
			return
		}
		ev := openai.ReadEvent(raw)
		if ev.Failed() {
			r.failBeforeCommit(inBandError(u.Name, ev.Data), nonNil(ev.Data))
			return
		}
		if ev.IsData && !ev.Done && !ev.Chunk.Valid {
			invalidSSETotal.Inc()
			continue
		}
		if ev.IsData && !ev.Done {
			r.finishes.Add(ev.Data, &ev.Chunk)
		}
		r.events = append(r.events, bytes.Clone(raw))
		size += len(raw)
		if ev.IsData && r.ttft == 0 {
			r.ttft = time.Since(r.start) // the policy's latency for streams: time to first token
		}
		if !c.complete && ev.IsData && !ev.Done {
			break // the commit point: the first data event
		}
		if ev.Done {
			if c.complete && r.finishes.Any() && !r.finishes.Complete() {
				// [DONE] with a choice unfinished: a cut answer, and in
				// complete mode nothing has reached the client yet.
				r.failBeforeCommit(fmt.Errorf("upstream %s: %w", u.Name, errCutStream), nil)
				return
			}
			r.ended = true
			resp.Stream.Close(nil)
			resp.Stream = nil
			break
		}
	}
	if r.ended && resp.Stream != nil {
		resp.Stream.Close(nil)
		resp.Stream = nil
	}
	r.v = verdict.Classify(verdict.Answer{Provider: u.Provider, Status: resp.Status, RateLimit: resp.RateLimit})
}

// nonNil returns b, or an empty non-nil slice: an in-band error without
// data (a bare "event: error") is still in-band.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
