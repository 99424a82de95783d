package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"switchyard/openai"
	"switchyard/verdict"
)

// The Responses API (POST /v1/responses) on the one JSON request path
// (handleAPI): what differs from chat completions. The transcript streams
// of the audio endpoints (stream=true) are typed events too
// (openai.Endpoint.TypedEvents) and go through the same reading and
// relaying: no preamble, transcript.text.done their terminal event.
//
//   - A stream is typed events (see package openai). Its commit point is
//     the first event that is not preamble (response.created,
//     response.in_progress, response.queued): an upstream that fails
//     before it, or sends only preamble and fails, fails over invisibly,
//     and its preamble is never sent. The stream ends at response.completed
//     or response.incomplete; a failure after the commit is relayed
//     (error, response.failed), or, when the upstream breaks off or goes
//     silent, the proxy ends the stream with an "error" event of its own
//     (openai.ResponseErrorEvent) numbered after the last event relayed.
//   - Usage for token quotas comes from the terminal event's
//     response.usage, or from a plain answer's usage (input_tokens,
//     output_tokens). Nothing is added to the request (there is no
//     include_usage here).
//   - Stickiness (sticky.go): a request that continues a response
//     (previous_response_id) or a conversation goes to the upstream that
//     created it, or fails with a 503 naming it.
//   - Only stateless requests ("store": false, no previous_response_id
//     nor conversation) are cached. A stored stream also answers a plain
//     request (its terminal event holds the whole response); a stored
//     plain answer does not answer a stream request (a miss), since the
//     stream's events cannot be rebuilt byte for byte.

// responsesState is what a Responses stream's events have told the proxy
// so far.
type responsesState struct {
	next     int64  // one past the highest sequence_number seen: the proxy's own error event's number
	id       string // the response's id, once an event (or the plain answer) carried it
	terminal bool   // response.completed or response.incomplete was seen
	usage    openai.Usage
	recorded bool // id and conversation are recorded for stickiness (see remember)
}

// observe records what one event tells.
func (s *responsesState) observe(ev *openai.ResponseEvent) {
	if ev.Seq >= s.next {
		s.next = ev.Seq + 1
	}
	if s.id == "" && ev.Response.Found() {
		s.id = ev.ResponseID()
	}
	if ev.Terminal() {
		s.terminal = true
		if u, ok := ev.Usage(); ok {
			s.usage = u
		}
	}
}

// errCutResponse is errCutStream for a Responses stream, which ends at its
// terminal event: one that stopped before it was cut.
var errCutResponse error = cutResponse{}

type cutResponse struct{}

func (cutResponse) Error() string {
	return "stream ended before its terminal event (response.completed, response.incomplete or transcript.text.done)"
}

// Is makes errors.Is(err, errCutStream) hold: every cut stream is one.
func (cutResponse) Is(target error) bool { return target == errCutStream }

// readAnswer reads a plain 2xx answer: its validity, in-band error and
// usage; for Responses also its id (r.rs).
func readAnswer(c *call, r *attemptResult, body []byte) openai.Answer {
	if c.req.Endpoint != openai.Responses {
		return openai.ReadAnswer(body)
	}
	a := openai.ReadResponseAnswer(body)
	r.rs.id = a.ID
	return a.Answer
}

// readResponsesToCommit is readToCommit for a Responses stream: it reads
// to the first event that is not preamble, or in complete mode to the
// terminal event, under the same bounds. A failure before that point is
// the attempt's verdict (the failed event's error, in OpenAI's shape, is
// what the failure table reads), and the stream is released.
func (s *Server) readResponsesToCommit(c *call, r *attemptResult) {
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
				err = fmt.Errorf("upstream %s: %w", u.Name, errCutResponse)
			}
			r.failBeforeCommit(err, nil)
			return
		}
		ev := openai.ReadResponseEvent(raw)
		switch {
		case ev.Failed():
			body := ev.ErrorBody()
			r.failBeforeCommit(inBandError(u.Name, body), body)
			return
		case ev.Done: // [DONE] before a terminal event: a cut answer
			r.failBeforeCommit(fmt.Errorf("upstream %s: %w", u.Name, errCutResponse), nil)
			return
		case ev.IsData && !ev.Valid:
			invalidSSETotal.Inc()
			continue
		}
		r.rs.observe(&ev)
		r.events = append(r.events, bytes.Clone(raw))
		size += len(raw)
		if ev.IsData && !ev.Preamble() && r.ttft == 0 {
			r.ttft = time.Since(r.start) // the policy's latency: time to the first output
		}
		if ev.Terminal() {
			r.ended = true
			resp.Stream.Close(nil) // drains whatever follows (a [DONE], the body's end)
			resp.Stream = nil
			break
		}
		if !c.complete && ev.IsData && !ev.Preamble() {
			break // the commit point: the first output
		}
	}
	r.v = verdict.Classify(verdict.Answer{Provider: u.Provider, Status: resp.Status, RateLimit: resp.RateLimit})
}

// nextResponse is relay.next for a Responses event: what the client gets
// of raw (nil to skip it), and the stream's end at its terminal event.
func (r *relay) nextResponse(raw []byte) []byte {
	ev := openai.ReadResponseEvent(raw)
	rs := &r.r.rs
	switch {
	case ev.Failed():
		// Relayed (the client's SDK raises an error event; response.failed
		// is the API's own end of a failed run), then the stream aborts.
		rs.observe(&ev)
		r.streamErr = inBandError(r.r.u.Name, ev.ErrorBody())
		r.abort = errInBandError
		r.closeUpstream(errInBandError)
		return raw
	case !ev.IsData:
		return raw // a comment or keep-alive: relayed, not stored
	case ev.Done:
		return r.end(io.EOF) // [DONE] before the terminal event: a cut stream
	case !ev.Valid:
		invalidSSETotal.Inc()
		return nil
	}
	r.keep(raw)
	rs.observe(&ev)
	// The id is recorded before the client can read it, so a follow-up
	// that names it finds its upstream on any replica.
	r.s.remember(r.c, r.r)
	if r.c.st.policyNeedsChars(r.r.u.Name) {
		r.chars += ev.DeltaChars()
	}
	if ev.Terminal() {
		// The end. The upstream stream stays open: CloseWithError drains
		// what follows (nothing, or a [DONE]) off the client's path.
		r.usage = rs.usage
		r.sawDone, r.done = true, true
	}
	return raw
}

// failEvent is the in-band error event that ends a client's stream the
// proxy cannot finish, in the endpoint's shape.
func (r *relay) failEvent(message, code string) []byte {
	switch {
	case r.c.req.Endpoint == openai.Responses:
		return openai.ResponseErrorEvent(message, typeServer, code, r.r.rs.next)
	case r.c.req.Endpoint.TypedEvents(): // a transcript stream: its events are not numbered
		return openai.ResponseErrorEvent(message, typeServer, code, -1)
	}
	return errorEvent(message, code)
}

// complete reports whether the relayed stream is a whole answer, worth
// storing: every chat choice finished, or a Responses terminal event.
func (r *relay) complete() bool {
	if r.c.req.Endpoint.TypedEvents() {
		return r.r.rs.terminal
	}
	return r.r.finishes.Complete()
}

// echoesSplitKey reports whether the stored stream's text, assembled,
// spells a configured key that no single event held (see
// state.echoesSplitKey).
func (r *relay) echoesSplitKey() bool {
	if !r.c.req.Endpoint.TypedEvents() {
		return r.c.st.echoesSplitKey(r.tee)
	}
	text := openai.ResponseStreamText(r.tee)
	for _, k := range r.c.st.secretsB {
		if bytes.Contains(text, k) {
			return true
		}
	}
	return false
}

// plainFromStream converts a stored stream to the plain answer it stands
// for (see serveEntry).
func plainFromStream(e openai.Endpoint, stream []byte) ([]byte, error) {
	if e == openai.Responses {
		return openai.ResponseStreamToResponse(stream)
	}
	return openai.StreamToCompletion(stream)
}

// entryConverts reports whether a stored answer (a stream or not) can
// answer a request to e that wants a stream or not: the same kind always;
// chat both ways; Responses only a stream for a plain request.
func entryConverts(e openai.Endpoint, storedStream, wantStream bool) bool {
	return storedStream == wantStream || e == openai.Chat || (e == openai.Responses && storedStream)
}
