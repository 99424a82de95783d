package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"

	"switchyard/jsonscan"
	"switchyard/sse"
)

// The Responses API (POST /v1/responses), as the proxy reads it.
//
// A request may refer to state an upstream keeps: previous_response_id
// names a response it stored, conversation a conversation it holds. Only a
// request that neither refers to state nor asks for its answer to be
// stored ("store": false; OpenAI's default is true) is stateless, and
// only a stateless request may be answered from the cache.
//
// A plain answer is a response object: {"id":"resp_…","object":"response",
// "status":"completed","error":null,"output":[…],"usage":{"input_tokens",
// "output_tokens",…}}. A response that failed carries a non-null "error"
// (HuggingFace's router answers a failed run with a 200 and
// "status":"failed").
//
// A stream is typed events, each data a JSON object whose "type" names
// it (OpenAI and Groq also send an "event:" line; HuggingFace's router does
// not), numbered by "sequence_number":
//
//	response.created, response.in_progress     the preamble: no output yet
//	response.output_item.added, …              output
//	  response.output_text.delta {"delta":…}
//	response.completed, response.incomplete     the end: "response" is the
//	                                            whole response object, usage
//	                                            included
//	response.failed                             the end of a failed run
//	error                                       an error, ending the stream
//
// There is no "data: [DONE]": a stream that stops before its terminal
// event was cut.
// Sources: https://platform.openai.com/docs/api-reference/responses-streaming,
// https://console.groq.com/docs/responses-api,
// https://huggingface.co/docs/inference-providers/guides/responses-api
// (served by github.com/huggingface/responses.js, src/routes/responses.ts).

// responsesKeys are the state members ParseRequest reads of a Responses
// request, after requestKeys' four.
var responsesKeys = [...]string{"store", "previous_response_id", "conversation"}

var idKey = []string{"id"}

// readState reads a Responses request's state members from their spans
// (in responsesKeys' order). A member of the wrong type is a
// *RequestError naming it: the proxy routes by them.
func (r *Request) readState(body []byte, spans []jsonscan.Span) error {
	store, prev, conv := value(body, spans[0]), value(body, spans[1]), value(body, spans[2])
	switch string(store) {
	case "", "true":
	case "false":
		r.NoStore = true
	default:
		return &RequestError{"store must be a boolean", "store", CodeInvalidJSON}
	}
	if prev != nil {
		id, ok := stringValue(prev)
		if !ok {
			return &RequestError{"previous_response_id must be a string", "previous_response_id", CodeInvalidJSON}
		}
		r.PreviousResponseID = id
	}
	if conv != nil {
		if conv[0] == '{' {
			var sp [1]jsonscan.Span
			jsonscan.Members(conv, idKey, sp[:])
			conv = value(conv, sp[0])
			if conv == nil {
				return &RequestError{"conversation.id must be a string", "conversation", CodeInvalidJSON}
			}
		}
		id, ok := stringValue(conv)
		if !ok {
			return &RequestError{`conversation must be a conversation id or an object {"id": …}`, "conversation", CodeInvalidJSON}
		}
		r.Conversation = id
	}
	return nil
}

// Stateless reports whether a Responses request neither refers to state an
// upstream keeps (previous_response_id, conversation) nor asks for its
// answer to be kept ("store": false): only such requests are cached.
func (r *Request) Stateless() bool {
	return r.NoStore && r.PreviousResponseID == "" && r.Conversation == ""
}

// stringValue decodes a JSON string value (false for another type or an
// empty string).
func stringValue(v []byte) (string, bool) {
	if len(v) < 3 || v[0] != '"' {
		return "", false
	}
	if raw := v[1 : len(v)-1]; bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	var s string
	if json.Unmarshal(v, &s) != nil || s == "" {
		return "", false
	}
	return s, true
}

// ResponseEventKind is what a Responses stream event means to the proxy.
type ResponseEventKind uint8

const (
	// EventOutput is any event that is not one of the others: output
	// (response.output_item.added, response.output_text.delta, …), or an
	// event type the proxy does not know. The first one commits a stream.
	// The transcript streams of the audio endpoints are read as the same
	// kinds: transcript.text.delta is EventTextDelta, transcript.text.done
	// EventCompleted (it carries the whole text and the usage).
	EventOutput ResponseEventKind = iota
	// EventPreamble is response.created, response.in_progress or
	// response.queued: the run has started, nothing is output yet.
	EventPreamble
	// EventTextDelta is response.output_text.delta: output text.
	EventTextDelta
	// EventCompleted is response.completed: the end of a complete answer.
	EventCompleted
	// EventIncomplete is response.incomplete: the end of an answer cut
	// short by the request's own limits (max_output_tokens, a content
	// filter); as final as a chat completion's finish_reason "length".
	EventIncomplete
	// EventFailed is response.failed: the run failed.
	EventFailed
	// EventError is an "error" event.
	EventError
)

// ResponseEvent is what the proxy reads of one raw server-sent event of a
// Responses stream, in one pass over its data.
type ResponseEvent struct {
	// Data is the event's data, nil for an event without any (a comment,
	// a keep-alive).
	Data []byte
	// IsData reports a data event.
	IsData bool
	// Done is a "[DONE]" data line, which the Responses API does not send
	// (some compatible servers do).
	Done bool
	// Valid reports data that is a valid JSON object.
	Valid bool
	// Kind is the event's meaning, from its data's "type" (else its
	// "event:" line).
	Kind ResponseEventKind
	// ErrorFrame is an "event: error" line, whatever the data holds.
	ErrorFrame bool
	// HasError reports a top-level "error" that is not null.
	HasError bool
	// Seq is the sequence_number, -1 when absent.
	Seq int64
	// Response is the span of the "response" object in Data (zero when
	// absent): the response of the lifecycle events.
	Response jsonscan.Span
	// Delta is the span of the "delta" string in Data (zero when absent).
	Delta jsonscan.Span
	// TopUsage is the span of a top-level "usage" object in Data (zero
	// when absent): transcript.text.done's.
	TopUsage jsonscan.Span
}

var eventKeys = []string{"type", "sequence_number", "response", "error", "delta", "usage"}

// ReadResponseEvent reads a raw event, as sse.Reader returns it.
func ReadResponseEvent(raw []byte) ResponseEvent {
	e := ResponseEvent{Seq: -1}
	e.Data, e.IsData = sse.Data(raw)
	typ := sse.EventType(raw)
	e.ErrorFrame = string(typ) == "error"
	if !e.IsData {
		return e
	}
	if sse.IsDone(e.Data) {
		e.Done = true
		return e
	}
	var sp [6]jsonscan.Span
	object, ok := jsonscan.Members(e.Data, eventKeys, sp[:])
	e.Valid = object && ok
	if !e.Valid {
		return e
	}
	if t := value(e.Data, sp[0]); t != nil && t[0] == '"' {
		typ = t[1 : len(t)-1]
	}
	e.Kind = eventKind(typ)
	if v := value(e.Data, sp[1]); v != nil {
		e.Seq = intValue(v)
	}
	if v := value(e.Data, sp[2]); v != nil && v[0] == '{' {
		e.Response = sp[2]
	}
	e.HasError = value(e.Data, sp[3]) != nil
	if v := value(e.Data, sp[4]); v != nil && v[0] == '"' {
		e.Delta = sp[4]
	}
	if v := value(e.Data, sp[5]); v != nil && v[0] == '{' {
		e.TopUsage = sp[5]
	}
	return e
}

// eventKind classifies an event type.
func eventKind(typ []byte) ResponseEventKind {
	switch string(typ) {
	case "response.created", "response.in_progress", "response.queued":
		return EventPreamble
	case "response.output_text.delta", "transcript.text.delta":
		return EventTextDelta
	case "response.completed", "transcript.text.done":
		return EventCompleted
	case "response.incomplete":
		return EventIncomplete
	case "response.failed":
		return EventFailed
	case "error":
		return EventError
	}
	return EventOutput
}

// Failed reports whether the event fails the stream: an error event (by
// its type or its "event:" line), response.failed, or any event carrying
// a top-level error.
func (e *ResponseEvent) Failed() bool {
	return e.ErrorFrame || (e.Valid && (e.Kind == EventError || e.Kind == EventFailed || e.HasError))
}

// Preamble reports an event that carries no output (response.created,
// response.in_progress, response.queued): the commit point is the first
// data event that is not one.
func (e *ResponseEvent) Preamble() bool { return e.Valid && e.Kind == EventPreamble }

// Terminal reports the event that ends a successful stream:
// response.completed or response.incomplete.
func (e *ResponseEvent) Terminal() bool {
	return e.Valid && (e.Kind == EventCompleted || e.Kind == EventIncomplete)
}

// ResponseID returns the id of the event's response ("" when it has none).
func (e *ResponseEvent) ResponseID() string {
	if !e.Response.Found() {
		return ""
	}
	return responseID(e.Data[e.Response.Start:e.Response.End])
}

// Usage returns the usage of the event's response (response.completed and
// response.incomplete carry the run's total), or the event's own
// (transcript.text.done's input_tokens and output_tokens).
func (e *ResponseEvent) Usage() (Usage, bool) {
	if !e.Response.Found() {
		if e.TopUsage.Found() {
			return responseUsage(e.Data[e.TopUsage.Start:e.TopUsage.End]), true
		}
		return Usage{}, false
	}
	var sp [1]jsonscan.Span
	resp := e.Data[e.Response.Start:e.Response.End]
	jsonscan.Members(resp, usageKey, sp[:])
	if u := value(resp, sp[0]); u != nil && u[0] == '{' {
		return responseUsage(u), true
	}
	return Usage{}, false
}

// DeltaChars counts the characters of an output_text.delta event's text
// (for quotas counted in characters).
func (e *ResponseEvent) DeltaChars() int64 {
	if e.Kind != EventTextDelta || !e.Delta.Found() {
		return 0
	}
	s, _ := stringValue(e.Data[e.Delta.Start:e.Delta.End])
	return int64(utf8.RuneCountInString(s))
}

var (
	failedKeys    = []string{"message", "code", "param"}
	errorOnlyKeys = []string{"error"}
)

// ErrorBody returns a failed event's error as an error body in OpenAI's
// shape ({"error":{"message","type","param","code"}}), which ParseError
// and the failure table read: the event's own "error" member when it has
// one, an error event's top-level code, message and param, or
// response.failed's response.error. An event that says nothing gets a
// body that says so.
func (e *ResponseEvent) ErrorBody() []byte {
	switch {
	case !e.Valid:
	case e.HasError:
		return e.Data // {"error":{…}} or {"error":"…"}: already an error body
	case e.Kind == EventFailed && e.Response.Found():
		resp := e.Data[e.Response.Start:e.Response.End]
		var sp [1]jsonscan.Span
		jsonscan.Members(resp, errorOnlyKeys, sp[:])
		if v := value(resp, sp[0]); v != nil && v[0] == '{' {
			return append(append([]byte(`{"error":`), v...), '}')
		}
	case e.Kind == EventError:
		var sp [3]jsonscan.Span
		jsonscan.Members(e.Data, failedKeys, sp[:])
		msg := text(value(e.Data, sp[0]))
		if msg != "" {
			return ErrorBody(msg, "", text(value(e.Data, sp[2])), text(value(e.Data, sp[1])))
		}
	}
	return ErrorBody("the upstream's stream failed without saying why", TypeServer, "", "")
}

// ResponseAnswer is what the proxy reads of a plain Responses answer.
type ResponseAnswer struct {
	// Answer is the view every plain answer has: validity, an error
	// (a failed response), the usage (input_tokens and output_tokens as
	// PromptTokens and CompletionTokens).
	Answer
	// ID is the response's id ("" when absent).
	ID string
}

var responseAnswerKeys = []string{"error", "usage", "id"}

// ReadResponseAnswer reads a plain Responses answer in one pass.
func ReadResponseAnswer(body []byte) ResponseAnswer {
	var sp [3]jsonscan.Span
	object, ok := jsonscan.Members(body, responseAnswerKeys, sp[:])
	a := ResponseAnswer{Answer: Answer{Valid: ok, Error: value(body, sp[0]) != nil}}
	if !object {
		return a
	}
	if u := value(body, sp[1]); u != nil && u[0] == '{' {
		a.Usage, a.HasUsage = responseUsage(u), true
	}
	a.ID, _ = stringValue(value(body, sp[2]))
	return a
}

// responseID reads a response object's id.
func responseID(resp []byte) string {
	var sp [1]jsonscan.Span
	jsonscan.Members(resp, idKey, sp[:])
	id, _ := stringValue(value(resp, sp[0]))
	return id
}

var responseUsageKeys = []string{"input_tokens", "output_tokens"}

// responseUsage reads a Responses usage object's token counts.
func responseUsage(usage []byte) Usage {
	var sp [2]jsonscan.Span
	if object, _ := jsonscan.Members(usage, responseUsageKeys, sp[:]); !object {
		return Usage{}
	}
	return Usage{PromptTokens: max(intValue(value(usage, sp[0])), 0), CompletionTokens: max(intValue(value(usage, sp[1])), 0)}
}

// ErrNoTerminalEvent is returned by ResponseStreamToResponse for a stream
// without a response.completed or response.incomplete event.
var ErrNoTerminalEvent = errors.New("responses stream has no response.completed or response.incomplete event")

// ResponseStreamToResponse returns the plain answer a complete Responses
// stream stands for: the response object of its terminal event
// (response.completed or response.incomplete), which is the whole
// response, output and usage included, as a plain request gets it.
func ResponseStreamToResponse(stream []byte) ([]byte, error) {
	r := sse.NewReader(bytes.NewReader(stream), 0)
	for {
		raw, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, ErrNoTerminalEvent
			}
			return nil, err
		}
		ev := ReadResponseEvent(raw)
		if ev.Terminal() && ev.Response.Found() {
			return bytes.Clone(ev.Data[ev.Response.Start:ev.Response.End]), nil
		}
	}
}

// ResponseStreamText returns the text of a Responses stream's deltas (every
// event's "delta" string, decoded, in order): what the client assembles,
// to look for what no single event holds.
func ResponseStreamText(stream []byte) []byte {
	var out []byte
	r := sse.NewReader(bytes.NewReader(stream), 0)
	for {
		raw, err := r.Next()
		if err != nil {
			return out
		}
		ev := ReadResponseEvent(raw)
		if ev.Delta.Found() {
			s, _ := stringValue(ev.Data[ev.Delta.Start:ev.Delta.End])
			out = append(out, s...)
		}
	}
}

// ResponseErrorEvent returns the "error" event that ends a Responses stream
// the proxy cannot finish, numbered seq (one past the last event the
// client got). It has OpenAI's documented fields (type "error", code,
// message, param, sequence_number:
// https://platform.openai.com/docs/api-reference/responses-streaming/error)
// and, as OpenAI's own servers also send it, the same error as an "error"
// object: openai-python, openai-node and openai-go raise an APIError for an
// event whose data has a top-level "error", so the app sees the failure
// rather than an event it may not look at. A negative seq leaves
// sequence_number out: transcript streams number no events.
func ResponseErrorEvent(message, typ, code string, seq int64) []byte {
	e := errorObject{Message: message, Type: typ}
	if code != "" {
		e.Code = &code
	}
	var n *int64
	if seq >= 0 {
		n = &seq
	}
	b, err := json.Marshal(struct {
		Type    string      `json:"type"`
		Code    *string     `json:"code"`
		Message string      `json:"message"`
		Param   *string     `json:"param"`
		Seq     *int64      `json:"sequence_number,omitempty"`
		Error   errorObject `json:"error"`
	}{"error", e.Code, message, nil, n, e})
	if err != nil {
		panic("BUG: marshal error event: " + err.Error())
	}
	out := make([]byte, 0, len(b)+27)
	out = append(out, "event: error\ndata: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}

// ResponsesInputChars counts the characters of a Responses request's
// instructions and input: a string, or items whose content is a string or
// parts with text (for quotas counted in characters).
func ResponsesInputChars(body []byte) int64 {
	var v struct {
		Instructions string          `json:"instructions"`
		Input        json.RawMessage `json:"input"`
	}
	if json.Unmarshal(body, &v) != nil {
		return 0
	}
	n := int64(utf8.RuneCountInString(v.Instructions))
	var s string
	if json.Unmarshal(v.Input, &s) == nil {
		return n + int64(utf8.RuneCountInString(s))
	}
	var items []struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(v.Input, &items) != nil {
		return n
	}
	for _, it := range items {
		n += contentChars(it.Content)
	}
	return n
}

// ResponsesOutputChars counts the characters of a plain Responses answer's
// output text.
func ResponsesOutputChars(body []byte) int64 {
	var v struct {
		Output []struct {
			Content json.RawMessage `json:"content"`
		} `json:"output"`
	}
	if json.Unmarshal(body, &v) != nil {
		return 0
	}
	var n int64
	for _, it := range v.Output {
		n += contentChars(it.Content)
	}
	return n
}

// contentChars counts a content value's characters: a string, or the text
// of its parts.
func contentChars(content json.RawMessage) int64 {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return int64(utf8.RuneCountInString(s))
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(content, &parts) != nil {
		return 0
	}
	var n int64
	for _, p := range parts {
		n += int64(utf8.RuneCountInString(p.Text))
	}
	return n
}

// PromptCharsOf is the character count of a request's prompt for
// endpoint e (PromptChars, or ResponsesInputChars).
func PromptCharsOf(e Endpoint, body []byte) int64 {
	if e == Responses {
		return ResponsesInputChars(body)
	}
	return PromptChars(body)
}

// CompletionCharsOf is the character count of a plain answer from
// endpoint e (CompletionChars, or ResponsesOutputChars).
func CompletionCharsOf(e Endpoint, body []byte) int64 {
	if e == Responses {
		return ResponsesOutputChars(body)
	}
	return CompletionChars(body)
}
