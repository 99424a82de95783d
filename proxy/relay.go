package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"switchyard/jsonscan"
	"switchyard/policy"
	"switchyard/sse"
	"switchyard/upstream"
)

// maxTeeBytes bounds how much of a stream is kept for the cache; a longer
// stream is relayed but not cached.
const maxTeeBytes = 8 << 20

var doneEvent = []byte("data: [DONE]\n\n")

// relay is the client's response body for a committed stream. fasthttp
// calls WriteTo after the handler has returned and writes and flushes each
// Write as one chunk, so every event reaches the client as soon as the
// upstream sent it. An error from WriteTo aborts the response (no
// terminating chunk): after an upstream failure the client first gets an
// in-band error event, then a broken stream, never a clean end.
//
// The relay owns the upstream stream: fasthttp calls CloseWithError exactly
// once, with the client write error if the client went away, and that
// closes the upstream connection.
type relay struct {
	s     *Server
	c     *call
	u     *upstream.Client
	model string
	resp  *upstream.Response // headers and rate limits; its Stream is st
	st    *upstream.Stream   // nil once read to the end
	ttft  time.Duration
	start time.Time // the attempt's start, for the upstream duration
	// deferred: the breakers record this stream when it ends (see
	// policy.Attempt.Pending); CloseWithError must report it either way.
	deferred bool
	prompt   int64 // prompt characters, counted before the handler returned

	pending   [][]byte
	cur       []byte
	sawDone   bool
	sawFinish bool
	sawChunk  bool // a JSON chunk (not just [DONE]) was relayed
	done      bool
	abort     error
	streamErr error

	tee        []byte
	teeOverrun bool
	usage      policy.Usage
	chars      int64
}

func (s *Server) startRelay(ctx *fasthttp.RequestCtx, c *call, u *upstream.Client, model string, r *attemptResult) bool {
	ctx.SetStatusCode(r.resp.Status)
	setUpstreamHeaders(ctx, u, r.resp)
	ctx.Response.Header.Set("X-Cache", c.xcache)
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	_ = ctx.SetWriteDeadline(time.Now().Add(maxStreamDuration))
	// No ImmediateHeaderFlush: the first event is already here, and the
	// headers leave with it in one write. Unless that event is the usage
	// chunk the client did not ask for, which is dropped: then the headers
	// must not wait for the next event.
	if !c.wantUsage && len(r.events) > 0 {
		if d, ok := sse.Data(r.events[len(r.events)-1]); ok && isUsageOnly(d) {
			ctx.Response.ImmediateHeaderFlush = true
		}
	}
	rel := &relay{
		s: s, c: c, u: u, model: model, resp: r.resp, st: r.resp.Stream,
		ttft: r.ttft, start: r.start, pending: r.events, deferred: r.deferred,
	}
	if c.st.policyNeedsChars(u.Name) {
		rel.prompt = promptChars(c.body)
	}
	c.body = nil // not valid once the handler returns
	ctx.SetBodyStream(rel, -1)
	return true
}

// maxBatch bounds the events packed into one chunk.
const maxBatch = 32 << 10

// batchPool holds the buffers that pack events which arrived together; a
// stream holds one only while it writes, not while it waits.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// SupportsBodyWriteTo makes fasthttp call WriteTo instead of Read (see
// fasthttp.BodyWriterTo).
func (r *relay) SupportsBodyWriteTo() bool { return true }

// WriteTo relays the events to w, fasthttp's chunked writer: every Write
// is one chunk, flushed. An event goes out as soon as it is read, unless
// more events already wait in the upstream's buffer: those arrived
// together and leave together, in one write (one syscall, not one per
// event). An event is written from the upstream's buffer without a copy
// when it is alone. A non-nil error aborts the response (see relay).
func (r *relay) WriteTo(w io.Writer) (int64, error) {
	var written int64
	var batch *[]byte // from batchPool while events are being packed
	release := func() {
		if batch != nil {
			if cap(*batch) <= 2*maxBatch { // not a buffer grown by a huge event
				*batch = (*batch)[:0]
				batchPool.Put(batch)
			}
			batch = nil
		}
	}
	defer release()
	write := func(b []byte) error {
		n, err := w.Write(b)
		written += int64(n)
		return err
	}
	for {
		if r.abort != nil {
			return written, r.abort
		}
		if r.done {
			return written, nil
		}
		out := r.next()
		more := r.ready() // false after an abort or the end, too
		switch {
		case len(out) == 0:
		case batch == nil && !more:
			if err := write(out); err != nil {
				return written, err
			}
		default:
			if batch == nil {
				batch = batchPool.Get().(*[]byte)
			}
			*batch = append(*batch, out...)
		}
		if batch != nil && (!more || len(*batch) >= maxBatch) {
			if err := write(*batch); err != nil {
				return written, err
			}
			release() // before next may wait on the upstream
		}
	}
}

// ready reports whether next returns without waiting on the upstream.
func (r *relay) ready() bool {
	return r.abort == nil && !r.done && (len(r.pending) > 0 || r.st == nil || r.st.Ready())
}

// Read implements io.Reader (SetBodyStream wants one); fasthttp uses
// WriteTo.
func (r *relay) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.abort != nil {
			return 0, r.abort
		}
		if r.done {
			return 0, io.EOF
		}
		r.cur = r.next()
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// next returns the next bytes for the client (nil to skip an event).
func (r *relay) next() []byte {
	var ev []byte
	switch {
	case len(r.pending) > 0:
		ev, r.pending = r.pending[0], r.pending[1:]
	case r.st == nil:
		return r.end(io.EOF)
	default:
		var err error
		ev, err = r.st.Next()
		if err != nil {
			return r.end(err)
		}
	}
	data, isData := sse.Data(ev)
	errFrame := isErrorFrame(ev)
	if !isData && !errFrame {
		return ev // a comment or keep-alive: relayed, not stored
	}
	var ci chunkInfo
	if isData && !sse.IsDone(data) {
		ci = readChunk(data)
	}
	switch {
	case isData && sse.IsDone(data):
		r.sawDone, r.done = true, true
	case errFrame || (ci.errorKey && upstream.IsErrorEvent(data)):
		// Relayed (the client's SDK raises it), with any echoed key
		// scrubbed; the abort error fasthttp logs carries no upstream text.
		r.streamErr = inBandError(r.u.Name, data)
		r.abort = errInBandError
		ev = r.c.st.redactBytes(ev) // a copy whenever it changes, so it outlives the stream
		if r.st != nil {
			r.st.Close(errInBandError)
			r.st = nil
		}
		return ev
	case !ci.valid:
		invalidSSETotal.Inc()
		return nil
	}
	r.keep(ev)
	if !r.sawDone {
		r.sawChunk = true
		if hasFinishReason(data) {
			r.sawFinish = true
		}
		if ci.hasUsage {
			r.usage = ci.usage
		}
		if r.c.st.policyNeedsChars(r.u.Name) {
			r.chars += contentChars(data)
		}
		if !r.c.wantUsage && ci.usageOnly {
			return nil // we asked for usage; the client did not
		}
	}
	return ev
}

// end handles the end of the upstream stream: a clean [DONE], a missing
// [DONE] after a finish_reason (appended), or a failure (an in-band error
// event, then abort).
func (r *relay) end(err error) []byte {
	if r.st != nil {
		if errors.Is(err, io.EOF) {
			r.st.Close(nil) // read to its end: the connection is reusable
		} else {
			r.st.Close(err)
		}
		r.st = nil
	}
	if errors.Is(err, io.EOF) {
		if r.sawDone {
			r.done = true
			return nil
		}
		if r.sawFinish {
			r.sawDone, r.done = true, true
			r.keep(doneEvent)
			return doneEvent
		}
		err = fmt.Errorf("upstream %s: %w", r.u.Name, errCutStream)
	}
	r.streamErr = err
	r.abort = err
	return errorEvent(r.c.st.redact(fmt.Sprintf("upstream %s failed mid-stream: %v", r.u.Name, err)), codeStreamInterrupted)
}

func (r *relay) keep(ev []byte) {
	if r.teeOverrun || r.c.key == "" {
		return
	}
	if len(r.tee)+len(ev) > maxTeeBytes {
		r.teeOverrun, r.tee = true, nil
		return
	}
	r.tee = append(r.tee, ev...)
}

// CloseWithError is called once by fasthttp when the response is done; err
// is the client write error (the client went away) or nil.
func (r *relay) CloseWithError(err error) error {
	if st := r.st; st != nil {
		r.st = nil
		if err == nil {
			// After [DONE]: draining the terminator lets the connection be
			// reused, but fasthttp flushes the client's last chunk only
			// after this returns, so drain off the client's path.
			go st.Close(nil)
		} else {
			st.Close(err)
		}
	}
	c := r.c
	pol := c.st.policy
	m := metricsFor(r.u.Name)
	status := r.resp.Status
	ob := policy.Observation{Outcome: policy.OK, Status: r.resp.Status, Latency: r.ttft,
		Usage: r.usage, Chars: r.prompt + r.chars, RateLimit: r.resp.RateLimit}
	var streamErr string
	if r.streamErr != nil {
		streamErr = c.st.redact(r.streamErr.Error())
		ob.Err = streamErr
		pol.StreamFailed(r.u.Name, r.model, r.deferred, ob)
		m.outcomes[outcomeLabel(&attemptResult{outcome: policy.Failure, err: r.streamErr})].Inc()
	} else {
		// The upstream did its part (and has charged the request), whether
		// or not the client stayed to the end.
		pol.StreamDone(r.u.Name, r.model, r.deferred)
		pol.Observe(r.u.Name, r.model, ob)
		m.outcomes["ok"].Inc()
		switch {
		case err != nil:
			streamErr, status = "client went away: "+err.Error(), 499 // nginx's "client closed request", for the log only
		case !r.sawDone:
			streamErr, status = "stream not finished", 499
		default:
			s := r.s
			s.successes.Add(1)
			c.usage = r.usage
			m.promptTokens.Add(int(r.usage.PromptTokens))
			m.completionTokens.Add(int(r.usage.CompletionTokens))
			m.ttfb.Update(r.ttft.Seconds())
			m.duration.Update(time.Since(r.start).Seconds())
			if !r.teeOverrun && r.sawChunk { // a stream of only [DONE] is not an answer worth keeping
				s.store(c, true, r.tee, "text/event-stream", r.u.Name)
			}
		}
	}
	r.s.finishFlight(c, nil)
	r.s.logRequest(c, status, streamErr)
	return nil
}

// streamFinished reports whether the events read include a finish_reason.
func streamFinished(events [][]byte) bool {
	for _, ev := range events {
		if d, ok := sse.Data(ev); ok && hasFinishReason(d) {
			return true
		}
	}
	return false
}

// hasFinishReason reports whether a chunk carries a non-null
// "finish_reason".
func hasFinishReason(data []byte) bool {
	const key = `"finish_reason"`
	for rest := data; ; {
		i := bytes.Index(rest, []byte(key))
		if i < 0 {
			return false
		}
		rest = rest[i+len(key):]
		j := 0
		for j < len(rest) && (rest[j] == ' ' || rest[j] == ':' || rest[j] == '\t') {
			j++
		}
		if j < len(rest) && rest[j] == '"' {
			return true
		}
	}
}

// isErrorFrame reports whether an event is an "event: error" frame, which
// openai-python raises on whatever its data holds (an error in a data
// object, the other in-band form, is upstream.IsErrorEvent).
func isErrorFrame(ev []byte) bool {
	return bytes.Contains(ev, []byte("event:")) && string(sse.EventType(ev)) == "error"
}

// inBandError is the error of a stream that sent an in-band error event
// with data, for logs and the client's error: the upstream's
// error.message, or else the data itself, cut short.
func inBandError(upstreamName string, data []byte) error {
	msg := upstream.ErrorMessage(data)
	switch {
	case msg != "":
	case len(data) == 0:
		msg = "event: error"
	default:
		msg = string(data)
	}
	return fmt.Errorf("upstream %s: %w: %s", upstreamName, errInBandError, truncate(msg, 300))
}

// chunkInfo is what the relay reads of a stream chunk, in one pass over it.
type chunkInfo struct {
	valid     bool         // valid JSON
	errorKey  bool         // a top-level "error" that is not null (see upstream.IsErrorEvent)
	usage     policy.Usage // OpenAI's usage, or Groq's x_groq.usage
	hasUsage  bool
	usageOnly bool // the include_usage chunk: usage set, choices empty
}

var (
	chunkKeys = []string{"choices", "usage", "x_groq", "error"}
	usageKey  = []string{"usage"}
)

func readChunk(data []byte) chunkInfo {
	var sp [4]jsonscan.Span
	object, ok := jsonscan.Members(data, chunkKeys, sp[:])
	ci := chunkInfo{valid: ok}
	if !object {
		return ci
	}
	choices, usage, xgroq := value(data, sp[0]), value(data, sp[1]), value(data, sp[2])
	ci.errorKey = value(data, sp[3]) != nil
	switch {
	case usage != nil && usage[0] == '{':
		ci.usage, ci.hasUsage = usageOf(usage), true
	case xgroq != nil && xgroq[0] == '{':
		var u [1]jsonscan.Span
		jsonscan.Members(xgroq, usageKey, u[:])
		if v := value(xgroq, u[0]); v != nil && v[0] == '{' {
			ci.usage, ci.hasUsage = usageOf(v), true
		}
	}
	ci.usageOnly = ci.hasUsage && usage != nil && (choices == nil || choices[0] == '[' && len(bytes.TrimSpace(choices[1:len(choices)-1])) == 0)
	return ci
}

// value returns a member's value, nil when absent or null.
func value(b []byte, sp jsonscan.Span) []byte {
	if !sp.Found() || string(b[sp.Start:sp.End]) == "null" {
		return nil
	}
	return b[sp.Start:sp.End]
}

// chunkUsage returns the usage a chunk carries (OpenAI's usage chunk, or
// Groq's x_groq.usage on the last chunk).
func chunkUsage(data []byte) (policy.Usage, bool) {
	ci := readChunk(data)
	return ci.usage, ci.hasUsage
}

// isUsageOnly reports whether a chunk is the include_usage chunk: usage set
// and choices empty.
func isUsageOnly(data []byte) bool { return readChunk(data).usageOnly }

// usageOf reads a usage object's token counts (0 for a count that is
// absent or not a non-negative integer).
func usageOf(usage []byte) policy.Usage {
	var spans [2]jsonscan.Span
	if object, _ := jsonscan.Members(usage, usageKeys, spans[:]); !object {
		return policy.Usage{}
	}
	return policy.Usage{PromptTokens: intValue(usage, spans[0]), CompletionTokens: intValue(usage, spans[1])}
}

var usageKeys = []string{"prompt_tokens", "completion_tokens"}

// intValue reads a non-negative integer value (0 when it is not one).
func intValue(b []byte, sp jsonscan.Span) int64 {
	if !sp.Found() || sp.End-sp.Start > 18 {
		return 0
	}
	var n int64
	for _, c := range b[sp.Start:sp.End] {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// completionChars counts the characters of a chat.completion's message
// contents.
func completionChars(body []byte) int64 {
	var v struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if json.Unmarshal(body, &v) != nil {
		return 0
	}
	var chars int64
	for _, ch := range v.Choices {
		chars += int64(utf8.RuneCountInString(ch.Message.Content))
	}
	return chars
}

// contentChars counts the characters of a chunk's delta contents.
func contentChars(data []byte) int64 {
	var v struct {
		Choices []struct {
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
	}
	if json.Unmarshal(data, &v) != nil {
		return 0
	}
	var n int64
	for _, ch := range v.Choices {
		n += int64(utf8.RuneCountInString(ch.Delta.Content))
	}
	return n
}

// promptChars counts the characters of the request's message contents
// (strings, and the text parts of content arrays).
func promptChars(body []byte) int64 {
	var v struct {
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if json.Unmarshal(body, &v) != nil {
		return 0
	}
	var n int64
	for _, m := range v.Messages {
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			n += int64(utf8.RuneCountInString(s))
			continue
		}
		var parts []struct {
			Text string `json:"text"`
		}
		if json.Unmarshal(m.Content, &parts) == nil {
			for _, p := range parts {
				n += int64(utf8.RuneCountInString(p.Text))
			}
		}
	}
	return n
}

// withIncludeUsage asks a stream for its usage chunk (so token quotas can be
// counted) by adding "stream_options":{"include_usage":true} when the body
// has no stream_options of its own. The chunk is stripped from the client's
// stream again.
func withIncludeUsage(body []byte) []byte {
	if _, _, ok := upstream.TopLevelValue(body, "stream_options"); ok {
		return body
	}
	end := bytes.LastIndexByte(body, '}')
	if end < 0 {
		return body
	}
	const add = `,"stream_options":{"include_usage":true}`
	out := make([]byte, 0, len(body)+len(add))
	out = append(out, body[:end]...)
	out = append(out, add...)
	return append(out, body[end:]...)
}
