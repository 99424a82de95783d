package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"

	"switchyard/jsonscan"
)

// Error codes of the proxy's own answers to bad requests (OpenAI's own
// codes where OpenAI has one).
const (
	CodeInvalidJSON  = "invalid_json"
	CodeMissingParam = "missing_required_parameter"
	CodeUnsupported  = "unsupported_parameter"
)

// RequestError is a request the proxy rejects: the message, the
// offending param ("" when none) and the code, for a 400.
type RequestError struct{ Message, Param, Code string }

func (e *RequestError) Error() string { return e.Message }

// Request is what the proxy reads of a JSON request body (chat, legacy
// completions, responses, embeddings); the body itself is forwarded as it
// is.
type Request struct {
	// Endpoint is the endpoint the body was sent to.
	Endpoint Endpoint
	// Model is the requested model (the client's alias).
	Model string
	// ModelPlain reports that the body spells Model without escapes, so a
	// body sent under Model itself needs no rewrite.
	ModelPlain bool
	// Stream is "stream": true.
	Stream bool
	// StreamOptions is the span of the stream_options value (zero when
	// absent).
	StreamOptions jsonscan.Span
	// IncludeUsage is stream_options.include_usage: true.
	IncludeUsage bool

	// The Responses API's state members (zero for other endpoints; see
	// Stateless): NoStore is "store": false; PreviousResponseID is
	// previous_response_id; Conversation is the id of the conversation
	// the request continues ("conversation": "conv_…" or {"id": …}).
	NoStore            bool
	PreviousResponseID string
	Conversation       string
}

// requestKeys are the top-level members ParseRequest reads, in the order
// of its spans; the second is the endpoint's required member, set per
// endpoint (see Endpoint.required). Responses requests also have their
// state members read (responsesKeys).
var requestKeys = map[Endpoint][]string{}

func init() {
	for _, e := range Endpoints {
		name, _ := e.required()
		requestKeys[e] = []string{"model", name, "stream", "stream_options"}
	}
	requestKeys[Responses] = append(requestKeys[Responses], responsesKeys[:]...)
}

var includeUsageKey = []string{"include_usage"}

// ParseChatRequest is ParseRequest for a chat completion.
func ParseChatRequest(body []byte) (Request, error) { return ParseRequest(Chat, body) }

// ParseRequest validates a JSON request body sent to e and reads the
// members the proxy needs in one pass, without decoding the rest: the
// model, the stream flag (on endpoints that stream) and stream_options.
// The error is a *RequestError naming the missing or malformed param.
func ParseRequest(e Endpoint, body []byte) (Request, error) {
	req := Request{Endpoint: e}
	keys := requestKeys[e]
	if keys == nil {
		return req, &RequestError{"unknown endpoint " + string(e), "", CodeInvalidJSON}
	}
	var spans [4 + len(responsesKeys)]jsonscan.Span
	object, ok := jsonscan.Members(body, keys, spans[:])
	if !ok {
		return req, invalidJSON(body)
	}
	if !object {
		return req, &RequestError{"request body must be a JSON object", "", CodeInvalidJSON}
	}
	model, required, stream, options := spans[0], spans[1], spans[2], spans[3]
	if !model.Found() || body[model.Start] != '"' || model.End-model.Start <= 2 {
		return req, &RequestError{`you must provide a model parameter (a string under the key "model")`, "model", CodeMissingParam}
	}
	if raw := body[model.Start+1 : model.End-1]; bytes.IndexByte(raw, '\\') < 0 {
		req.Model, req.ModelPlain = string(raw), true
	} else {
		var name string // escaped: decode it (rare; its own variable keeps req off the heap)
		if json.Unmarshal(body[model.Start:model.End], &name) != nil || name == "" {
			return req, &RequestError{"invalid model string", "model", CodeInvalidJSON}
		}
		req.Model = name
	}
	if name, start := e.required(); name != "" {
		if !required.Found() || body[required.Start] == 'n' || (start != 0 && body[required.Start] != start) {
			msg := "you must provide a " + name + " parameter"
			if start == '[' {
				msg += " (an array)"
			}
			return req, &RequestError{msg, name, CodeMissingParam}
		}
	}
	if stream.Found() && e.Streams() {
		switch string(body[stream.Start:stream.End]) {
		case "true":
			req.Stream = true
		case "false", "null":
		default:
			return req, &RequestError{"stream must be a boolean", "stream", CodeInvalidJSON}
		}
	}
	if options.Found() {
		req.StreamOptions = options
		if opts := body[options.Start:options.End]; opts[0] == '{' {
			var usage [1]jsonscan.Span
			jsonscan.Members(opts, includeUsageKey, usage[:])
			req.IncludeUsage = string(opts[usage[0].Start:usage[0].End]) == "true"
		}
	}
	if e == Responses {
		return req, req.readState(body, spans[4:])
	}
	return req, nil
}

// invalidJSON is the error for a body that is not valid JSON, with
// encoding/json's account of where when there is one.
func invalidJSON(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return &RequestError{"request body is empty; send a JSON request", "", CodeInvalidJSON}
	}
	msg := "request body is not valid JSON"
	var v json.RawMessage
	if err := json.Unmarshal(body, &v); err != nil {
		msg += ": " + err.Error()
	}
	return &RequestError{msg, "", CodeInvalidJSON}
}

// ErrNoModel is returned by RewriteModel for a body without a top-level
// string "model".
var ErrNoModel = errors.New("request body has no top-level model string")

var modelKey = []string{"model"}

// RewriteModel returns body with the value of its top-level "model"
// replaced by model, every other byte unchanged. When the value already
// spells model, body itself is returned. body must be valid JSON.
func RewriteModel(body []byte, model string) ([]byte, error) {
	var sp [1]jsonscan.Span
	if object, _ := jsonscan.Members(body, modelKey, sp[:]); !object || !sp[0].Found() || body[sp[0].Start] != '"' {
		return nil, ErrNoModel
	}
	quoted := AppendString(make([]byte, 0, len(model)+2), model)
	return splice(body, sp[0].Start, sp[0].End, quoted), nil
}

// WithIncludeUsage asks a stream for its usage chunk (so token quotas can
// be counted) by adding "stream_options":{"include_usage":true} to a body
// that has no stream_options (req.StreamOptions is zero). The proxy strips
// the usage from the client's stream again.
func WithIncludeUsage(body []byte, req *Request) []byte {
	if req.StreamOptions.Found() {
		return body
	}
	end := bytes.LastIndexByte(body, '}')
	if end < 0 {
		return body
	}
	add := []byte(`,"stream_options":{"include_usage":true}`)
	if start := bytes.IndexByte(body, '{'); len(bytes.TrimSpace(body[start+1:end])) == 0 {
		add = add[1:] // an empty object has no member to follow
	}
	return splice(body, end, end, add)
}

// UsedParam returns the first of names that body uses, "" when none. A
// param is used when it is present with a value that asks for the
// feature: not null, false, 0, "" or an empty object or array; for "n",
// a number above 1 (n: 1 is every provider's default).
func UsedParam(body []byte, names []string) string {
	if len(names) == 0 {
		return ""
	}
	var stack [8]jsonscan.Span
	spans := stack[:0]
	if len(names) > len(stack) {
		spans = make([]jsonscan.Span, len(names))
	} else {
		spans = stack[:len(names)]
	}
	if object, _ := jsonscan.Members(body, names, spans); !object {
		return ""
	}
	for i, sp := range spans {
		if sp.Found() && asks(names[i], body[sp.Start:sp.End]) {
			return names[i]
		}
	}
	return ""
}

// asks reports whether a param's value asks for its feature (see UsedParam).
func asks(name string, v []byte) bool {
	switch string(v) {
	case "null", "false", "0", `""`, "{}", "[]":
		return false
	}
	if name == "n" {
		var n float64
		return json.Unmarshal(v, &n) == nil && n > 1
	}
	if v[0] == '{' || v[0] == '[' {
		return len(bytes.TrimSpace(v[1:len(v)-1])) > 0
	}
	return true
}

// DropParams returns body without the top-level members named in names
// (body itself when it has none of them). body must be valid JSON.
func DropParams(body []byte, names []string) []byte {
	for _, name := range slices.Compact(slices.Sorted(slices.Values(names))) {
		for { // a name may repeat
			var sp [1]jsonscan.Span
			if object, _ := jsonscan.Members(body, []string{name}, sp[:]); !object || !sp[0].Found() {
				break
			}
			body = jsonscan.DeleteMember(body, sp[0])
		}
	}
	return body
}

// splice returns b with b[from:to] replaced by with (b itself when that
// changes nothing).
func splice(b []byte, from, to int, with []byte) []byte {
	if bytes.Equal(b[from:to], with) {
		return b
	}
	out := make([]byte, 0, len(b)-(to-from)+len(with))
	out = append(out, b[:from]...)
	out = append(out, with...)
	return append(out, b[to:]...)
}
