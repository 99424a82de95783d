package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"

	"switchyard/sse"
)

// Conversion between a stored stream of chat.completion.chunk events and the
// equivalent chat.completion object, without losing members.
//
// Both directions work on ordered JSON members and keep every value they do
// not need to merge as its raw text, so numbers, unknown members and their
// order survive. Merging the deltas of a stream is driven by small schemas
// (convSchema) that say, per member, how successive values combine: the first
// informative value wins (ids, names, unknown metadata), the last non-null
// value wins (finish_reason), values are concatenated (content, arguments,
// annotations, logprobs lists), or the object is merged member by member
// (function, audio, logprobs, x_groq).

var (
	// ErrConvertNoChunks is returned by StreamToCompletion for a stream that
	// holds no chat.completion.chunk event.
	ErrConvertNoChunks = errors.New("stream has no chunks")
	// ErrConvertInBandError is returned for a stream or body that carries an
	// error instead of an answer: a non-null "error" member, or (in a
	// stream) an event of type "error".
	ErrConvertInBandError = errors.New("in-band error")
	// ErrConvertShape is returned when a member has a JSON type that the
	// chat completions format does not allow in its place (a choice that is
	// not an object, a tool call index that is not an integer, a string
	// delta appended to an array, ...).
	ErrConvertShape = errors.New("unexpected JSON shape")
)

// StreamToCompletion assembles the chat.completion object equivalent to a
// stored SSE stream of chat.completion.chunk events, so a streamed answer
// can serve a plain request.
//
// The stream is split into events with package sse; comments, events
// without data and fields other than data are skipped, "[DONE]" ends the
// stream (a stream that just ends is accepted too), and an event cut in the
// middle fails it.
//
// Choices are merged by index, in order of first appearance; each choice's
// deltas become its message:
//   - content, refusal, reasoning, reasoning_content and annotations are
//     concatenated (strings to a string, arrays to an array); null stays
//     null, and a member no delta has stays absent (Groq writes tool call
//     messages without content);
//   - role: the first non-empty one, "assistant" if no delta has a role;
//   - tool_calls are merged by their index (a delta without an index
//     continues the last call unless it brings a new id) and sorted by it;
//     id, type, function.name and unknown members: the first non-empty value
//     wins; function.arguments are concatenated; type defaults to
//     "function"; the index itself is not part of a completion's call;
//   - function_call (legacy): name first non-empty, arguments concatenated;
//   - audio: data and transcript concatenated, other members first
//     non-empty;
//   - unknown members: strings and arrays are concatenated, other values:
//     the first non-null wins.
//
// Per choice, logprobs.content and logprobs.refusal are concatenated (a
// null logprobs stays null), finish_reason is the last non-null one, and
// unknown choice members (content_filter_results, stop_reason, ...) take
// the first non-empty value. A chunk choice's "message" member is ignored.
//
// Top-level members (id, created, model, service_tier, system_fingerprint
// and unknown ones such as prompt_filter_results) take the first non-empty
// value (not null, "", 0, {} or []), else the first value; "empty" covers
// Azure's leading chunk with "id":"" and "created":0. usage is the last
// non-null top-level usage; if there is none, Groq's x_groq.usage. x_groq
// is merged member by member and kept without its usage, which is how Groq
// shapes a plain completion ({"id":...}). A member that no chunk carries is
// not invented, except message.role and tool call type above, and
// "object", which is "chat.completion".
//
// Known members come out in OpenAI's order (id, object, created, model,
// choices, usage, service_tier, system_fingerprint; index, message,
// logprobs, finish_reason; role, content, ...), unknown ones after them in
// order of first appearance. Raw values keep their text (numbers exactly),
// except concatenated strings, which are re-encoded.
//
// It fails on malformed JSON, on a member of the wrong type
// ([ErrConvertShape]), on an in-band error ([ErrConvertInBandError]), on a
// truncated event ([sse.ErrTruncated]) and on a stream without chunks
// ([ErrConvertNoChunks]).
func StreamToCompletion(stream []byte) ([]byte, error) {
	out, err := convStreamToCompletion(stream)
	if err != nil {
		return nil, fmt.Errorf("stream to completion: %w", err)
	}
	return out, nil
}

// CompletionToStream synthesizes the SSE stream equivalent to a
// chat.completion object, so a plain answer can serve a streaming request.
//
// For each choice, in order, it writes one chunk whose delta carries the
// whole message (its members as they are, role "assistant" added if
// missing, each tool call given its position as "index"), the choice's
// logprobs and its unknown members with "finish_reason":null, then one
// chunk with an empty delta, "logprobs":null and the finish_reason (the
// last two only if the choice has them). A completion without choices
// gives one chunk with "choices":[]. Every chunk repeats id, created,
// model, service_tier and system_fingerprint as the completion has them;
// unknown top-level members (prompt_filter_results, x_groq, ...) go on the
// first chunk. If the completion has an x_groq object and a usage, the last
// choice chunk also carries x_groq with that usage, as Groq's streams do.
// With includeUsage (the request's stream_options.include_usage) and a
// usage member, every chunk carries "usage":null and, if the usage is not
// null, a final chunk with "choices":[] carries it. The stream ends with
// "data: [DONE]". Each event is "data: <compact json>\n\n".
//
// StreamToCompletion(CompletionToStream(x, true)) equals x as JSON, with
// these normalisations only:
//   - "object" is "chat.completion" (it may be missing, null or "" in x);
//   - a message without role gets "assistant";
//   - a tool call without type gets "function", and loses an "index"
//     member;
//   - a choice without index (or with a null one) gets 0, and loses a
//     "delta" member;
//   - x_groq loses its "usage" member (in a completion it is "usage");
//   - of duplicate member names the last one counts, as for
//     encoding/json.
//
// It fails on malformed JSON, on a body that is not a chat.completion (not
// an object, another "object", no choices array, a choice without a
// message object, duplicate choice indexes, or a member of a type the
// stream form cannot carry: [ErrConvertShape]) and on an error body
// ([ErrConvertInBandError]).
func CompletionToStream(body []byte, includeUsage bool) ([]byte, error) {
	out, err := convCompletionToStream(body, includeUsage)
	if err != nil {
		return nil, fmt.Errorf("completion to stream: %w", err)
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// Ordered JSON objects.

// convMember is one member of a JSON object, its value as raw JSON.
type convMember struct {
	key string
	val json.RawMessage
}

// convObj is a JSON object with its members in document order. Of
// duplicate names the last value counts, at the first one's position.
type convObj []convMember

func (o convObj) get(key string) (json.RawMessage, bool) {
	for _, m := range o {
		if m.key == key {
			return m.val, true
		}
	}
	return nil, false
}

func (o *convObj) set(key string, val json.RawMessage) {
	for i := range *o {
		if (*o)[i].key == key {
			(*o)[i].val = val
			return
		}
	}
	*o = append(*o, convMember{key, val})
}

// convBigObject is the member count from which convParse indexes names to
// find duplicates.
const convBigObject = 16

// convParse decodes raw, which must be valid JSON, as an object.
func convParse(raw json.RawMessage) (convObj, error) {
	if k := convKindOf(raw); k != '{' {
		return nil, fmt.Errorf("%w: %s, want an object", ErrConvertShape, convKindName(k))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // '{'
		return nil, err
	}
	var (
		o     convObj
		index map[string]int // for big objects
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string) // object keys are strings
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		switch {
		case len(o) < convBigObject:
			o.set(key, v)
		case index == nil:
			index = make(map[string]int, 2*len(o))
			for i, m := range o {
				index[m.key] = i
			}
			fallthrough
		default:
			if i, ok := index[key]; ok {
				o[i].val = v
			} else {
				index[key] = len(o)
				o = append(o, convMember{key, v})
			}
		}
	}
	return o, nil
}

// convParseTop parses a whole document, which must be one JSON object.
func convParseTop(b []byte) (convObj, error) {
	var raw json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil { // full syntax check
		return nil, err
	}
	return convParse(raw)
}

// convParseArray decodes raw, which must be valid JSON, as an array.
func convParseArray(raw json.RawMessage) ([]json.RawMessage, error) {
	if k := convKindOf(raw); k != '[' {
		return nil, fmt.Errorf("%w: %s, want an array", ErrConvertShape, convKindName(k))
	}
	var a []json.RawMessage
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, err
	}
	return a, nil
}

// convKindOf classifies a valid JSON value by its first byte: 'n' null,
// 't' true or false, '"' string, '[' array, '{' object, '0' number, 0
// nothing.
func convKindOf(raw json.RawMessage) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	switch c := raw[0]; c {
	case 'n', '"', '[', '{':
		return c
	case 't', 'f':
		return 't'
	default:
		return '0'
	}
}

func convKindName(k byte) string {
	switch k {
	case 'n':
		return "null"
	case 't':
		return "a boolean"
	case '"':
		return "a string"
	case '[':
		return "an array"
	case '{':
		return "an object"
	case '0':
		return "a number"
	}
	return "nothing"
}

func convIsNull(raw json.RawMessage) bool {
	k := convKindOf(raw)
	return k == 0 || k == 'n'
}

// convEmpty reports whether raw says nothing: null, "", 0, {} or [].
func convEmpty(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	switch string(t) {
	case "", "null", `""`, "0":
		return true
	}
	if len(t) >= 2 && (t[0] == '{' && t[len(t)-1] == '}' || t[0] == '[' && t[len(t)-1] == ']') {
		return len(bytes.TrimSpace(t[1:len(t)-1])) == 0
	}
	return false
}

// convIndex reads an index member: a JSON integer.
func convIndex(raw json.RawMessage) (int, error) {
	t := bytes.TrimSpace(raw)
	if convKindOf(t) == '0' {
		if n, err := strconv.Atoi(string(t)); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%w: index %s is not an integer", ErrConvertShape, t)
}

// convWriter writes compact JSON objects member by member.
type convWriter struct {
	b     bytes.Buffer
	first bool
}

func (w *convWriter) open() { w.b.WriteByte('{'); w.first = true }

func (w *convWriter) close() { w.b.WriteByte('}'); w.first = false }

// key writes a member name and its colon.
func (w *convWriter) key(k string) {
	if !w.first {
		w.b.WriteByte(',')
	}
	w.first = false
	w.str(k)
	w.b.WriteByte(':')
}

// member writes one member with a raw value, compacted.
func (w *convWriter) member(k string, raw json.RawMessage) {
	w.key(k)
	w.raw(raw)
}

// raw writes a valid JSON value compactly (without HTML escaping).
func (w *convWriter) raw(raw json.RawMessage) {
	if err := json.Compact(&w.b, raw); err != nil {
		panic("BUG: openai: compacting a value that was valid JSON: " + err.Error())
	}
}

// str writes s as a JSON string without HTML escaping.
func (w *convWriter) str(s string) {
	enc := json.NewEncoder(&w.b)
	enc.SetEscapeHTML(false)
	// A string always encodes; Encode appends a newline.
	_ = enc.Encode(s)
	w.b.Truncate(w.b.Len() - 1)
}

// ---------------------------------------------------------------------------
// Merging deltas.

// convRule says how successive values of one member combine.
type convRule int

const (
	convFirst     convRule = iota // the first non-empty value wins, else the first value
	convLast                      // the last non-null value wins, else null
	convCat                       // strings or arrays concatenated; other mixes fail
	convCatLoose                  // like convCat, but a mix keeps the first value
	convNested                    // an object merged member-wise by a sub-schema; null kept
	convToolCalls                 // an array of tool calls merged by index
	convSkip                      // not merged here
)

// convSchema describes how to merge one kind of object.
type convSchema struct {
	order    []string            // known members, in output order
	rules    map[string]convRule // rule per known member; others get other
	sub      map[string]*convSchema
	defaults map[string]string // raw value of a known member no delta has
	other    convRule
}

func (s *convSchema) rule(key string) convRule {
	if r, ok := s.rules[key]; ok {
		return r
	}
	return s.other
}

var (
	convFunctionSchema = &convSchema{
		order: []string{"name", "arguments"},
		rules: map[string]convRule{"name": convFirst, "arguments": convCat},
		other: convFirst,
	}
	convToolCallSchema = &convSchema{
		order:    []string{"id", "type", "function"},
		rules:    map[string]convRule{"id": convFirst, "type": convFirst, "function": convNested, "index": convSkip},
		sub:      map[string]*convSchema{"function": convFunctionSchema},
		defaults: map[string]string{"type": `"function"`},
		other:    convFirst,
	}
	convAudioSchema = &convSchema{
		rules: map[string]convRule{"data": convCat, "transcript": convCat},
		other: convFirst,
	}
	convMessageSchema = &convSchema{
		order: []string{"role", "content", "reasoning", "reasoning_content", "tool_calls", "function_call", "refusal", "annotations", "audio"},
		rules: map[string]convRule{
			"role":              convFirst,
			"content":           convCat,
			"reasoning":         convCat, // Groq
			"reasoning_content": convCat, // DeepSeek, vLLM
			"tool_calls":        convToolCalls,
			"function_call":     convNested,
			"refusal":           convCat,
			"annotations":       convCat,
			"audio":             convNested,
		},
		sub:      map[string]*convSchema{"function_call": convFunctionSchema, "audio": convAudioSchema},
		defaults: map[string]string{"role": `"assistant"`},
		other:    convCatLoose,
	}
	convLogprobsSchema = &convSchema{
		order: []string{"content", "refusal"},
		rules: map[string]convRule{"content": convCat, "refusal": convCat},
		other: convFirst,
	}
	convChoiceSchema = &convSchema{
		order: []string{"logprobs", "finish_reason"},
		rules: map[string]convRule{
			"index":         convSkip,
			"delta":         convSkip,
			"message":       convSkip,
			"logprobs":      convNested,
			"finish_reason": convLast,
		},
		sub:   map[string]*convSchema{"logprobs": convLogprobsSchema},
		other: convFirst,
	}
	convXGroqSchema = &convSchema{
		rules: map[string]convRule{"usage": convSkip}, // becomes the completion's usage
		other: convFirst,
	}
	// convTopSchema covers the chunk members merged generically; object,
	// choices, usage and error are handled by convStream.
	convTopSchema = &convSchema{
		order: []string{"id", "created", "model", "service_tier", "system_fingerprint"},
		rules: map[string]convRule{
			"object":  convSkip,
			"choices": convSkip,
			"usage":   convSkip,
			"x_groq":  convNested,
		},
		sub:   map[string]*convSchema{"x_groq": convXGroqSchema},
		other: convFirst,
	}
)

// convNode is the merge of a sequence of objects under one schema.
type convNode struct {
	schema *convSchema
	keys   []string // in order of first appearance
	vals   map[string]*convVal
}

func convNewNode(s *convSchema) *convNode {
	return &convNode{schema: s, vals: map[string]*convVal{}}
}

func (n *convNode) add(o convObj) error {
	for _, m := range o {
		r := n.schema.rule(m.key)
		if r == convSkip {
			continue
		}
		v := n.vals[m.key]
		if v == nil {
			v = &convVal{rule: r, sub: n.schema.sub[m.key]}
			n.vals[m.key] = v
			n.keys = append(n.keys, m.key)
		}
		if err := v.add(m.val); err != nil {
			return fmt.Errorf("%s: %w", m.key, err)
		}
	}
	return nil
}

// writeKeys writes the listed members that are present or have a default.
func (n *convNode) writeKeys(w *convWriter, keys ...string) {
	for _, k := range keys {
		if v := n.vals[k]; v != nil {
			w.key(k)
			v.write(w)
		} else if d, ok := n.schema.defaults[k]; ok {
			w.member(k, json.RawMessage(d))
		}
	}
}

// writeRest writes the members not in the schema's order.
func (n *convNode) writeRest(w *convWriter) {
	for _, k := range n.keys {
		if !slices.Contains(n.schema.order, k) {
			w.key(k)
			n.vals[k].write(w)
		}
	}
}

func (n *convNode) write(w *convWriter) {
	w.open()
	n.writeKeys(w, n.schema.order...)
	n.writeRest(w)
	w.close()
}

// convVal is the merge of one member's successive values.
type convVal struct {
	rule convRule
	sub  *convSchema

	raw      json.RawMessage // convFirst, convLast; convCat's single other value
	nonEmpty bool            // convFirst: raw is not convEmpty

	cat byte // convCat: 0 (only nulls), '"', '[' or '0' (one other value)
	str []byte
	arr []json.RawMessage

	node  *convNode  // convNested; nil while only null was seen
	calls *convCalls // convToolCalls; nil while only null was seen
}

func (v *convVal) add(raw json.RawMessage) error {
	switch v.rule {
	case convFirst:
		if v.raw == nil || !v.nonEmpty && !convEmpty(raw) {
			v.raw, v.nonEmpty = raw, !convEmpty(raw)
		}
	case convLast:
		if v.raw == nil || !convIsNull(raw) {
			v.raw = raw
		}
	case convCat, convCatLoose:
		err := v.append(raw)
		if v.rule == convCat {
			return err
		}
	case convNested:
		if convIsNull(raw) {
			return nil
		}
		o, err := convParse(raw)
		if err != nil {
			return err
		}
		if v.node == nil {
			v.node = convNewNode(v.sub)
		}
		return v.node.add(o)
	case convToolCalls:
		if convIsNull(raw) {
			return nil
		}
		a, err := convParseArray(raw)
		if err != nil {
			return err
		}
		if v.calls == nil {
			v.calls = &convCalls{}
		}
		return v.calls.add(a)
	}
	return nil
}

// append concatenates raw to a convCat value.
func (v *convVal) append(raw json.RawMessage) error {
	k := convKindOf(raw)
	switch {
	case k == 'n':
		return nil
	case v.cat != 0 && (k != v.cat || k != '"' && k != '['):
		return fmt.Errorf("%w: cannot append %s to %s", ErrConvertShape, convKindName(k), convKindName(v.cat))
	}
	v.cat = k
	switch k {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		v.str = append(v.str, s...)
	case '[':
		var a []json.RawMessage
		if err := json.Unmarshal(raw, &a); err != nil {
			return err
		}
		v.arr = append(v.arr, a...)
	default:
		v.cat, v.raw = '0', raw
	}
	return nil
}

func (v *convVal) write(w *convWriter) {
	switch v.rule {
	case convFirst, convLast:
		w.raw(v.raw)
	case convCat, convCatLoose:
		switch v.cat {
		case 0:
			w.b.WriteString("null")
		case '"':
			w.str(string(v.str))
		case '[':
			w.b.WriteByte('[')
			for i, e := range v.arr {
				if i > 0 {
					w.b.WriteByte(',')
				}
				w.raw(e)
			}
			w.b.WriteByte(']')
		default:
			w.raw(v.raw)
		}
	case convNested:
		if v.node == nil {
			w.b.WriteString("null")
		} else {
			v.node.write(w)
		}
	case convToolCalls:
		if v.calls == nil {
			w.b.WriteString("null")
		} else {
			v.calls.write(w)
		}
	}
}

// convCalls merges the tool call deltas of one choice.
type convCalls struct {
	list    []*convCall // in order of first appearance
	byIndex map[int]*convCall
	next    int // one more than the highest index
}

type convCall struct {
	index int
	node  *convNode
}

// add merges one delta's tool_calls. Providers that omit the index get
// one: a delta with a new id starts a new call, any other delta continues
// the last call.
func (c *convCalls) add(deltas []json.RawMessage) error {
	for i, raw := range deltas {
		o, err := convParse(raw)
		if err != nil {
			return fmt.Errorf("[%d]: %w", i, err)
		}
		var t *convCall
		if idx, ok := o.get("index"); ok && !convIsNull(idx) {
			n, err := convIndex(idx)
			if err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
			t = c.find(n)
		} else if len(c.list) > 0 {
			last := c.list[len(c.list)-1]
			id, _ := o.get("id")
			if lastID := last.node.vals["id"]; convEmpty(id) || lastID != nil && bytes.Equal(bytes.TrimSpace(id), bytes.TrimSpace(lastID.raw)) {
				t = last
			}
		}
		if t == nil {
			t = c.find(c.next)
		}
		if err := t.node.add(o); err != nil {
			return fmt.Errorf("[%d].%w", i, err)
		}
	}
	return nil
}

// find returns the call with index n, adding it if there is none.
func (c *convCalls) find(n int) *convCall {
	if t := c.byIndex[n]; t != nil {
		return t
	}
	if c.byIndex == nil {
		c.byIndex = map[int]*convCall{}
	}
	t := &convCall{index: n, node: convNewNode(convToolCallSchema)}
	c.list = append(c.list, t)
	c.byIndex[n] = t
	if n >= c.next && n < math.MaxInt {
		c.next = n + 1
	}
	return t
}

func (c *convCalls) write(w *convWriter) {
	list := slices.Clone(c.list)
	slices.SortStableFunc(list, func(x, y *convCall) int { return x.index - y.index })
	w.b.WriteByte('[')
	for i, t := range list {
		if i > 0 {
			w.b.WriteByte(',')
		}
		t.node.write(w)
	}
	w.b.WriteByte(']')
}

// convChoice merges the chunks of one choice.
type convChoice struct {
	index json.RawMessage // as the first chunk wrote it
	msg   *convNode       // the deltas
	rest  *convNode       // logprobs, finish_reason and unknown members
}

func convNewChoice(index json.RawMessage) *convChoice {
	return &convChoice{index: index, msg: convNewNode(convMessageSchema), rest: convNewNode(convChoiceSchema)}
}

func (c *convChoice) add(o convObj) error {
	if d, ok := o.get("delta"); ok && !convIsNull(d) {
		delta, err := convParse(d)
		if err != nil {
			return fmt.Errorf("delta: %w", err)
		}
		if err := c.msg.add(delta); err != nil {
			return fmt.Errorf("delta.%w", err)
		}
	}
	return c.rest.add(o)
}

func (c *convChoice) write(w *convWriter) {
	w.open()
	w.member("index", c.index)
	w.key("message")
	c.msg.write(w)
	c.rest.writeKeys(w, convChoiceSchema.order...)
	c.rest.writeRest(w)
	w.close()
}

// convChoiceIndex reads a choice's index member: missing or null is 0.
func convChoiceIndex(o convObj) (int, json.RawMessage, error) {
	raw, ok := o.get("index")
	if !ok || convIsNull(raw) {
		return 0, json.RawMessage("0"), nil
	}
	n, err := convIndex(raw)
	return n, raw, err
}

// convStream merges the chunks of a stream.
type convStream struct {
	chunks  int
	top     *convNode
	choices []*convChoice // in order of first appearance
	byIndex map[int]*convChoice
	usage   json.RawMessage // last non-null usage
	hasUse  bool            // some chunk has a usage member
	xUsage  json.RawMessage // last non-null x_groq.usage
}

func (s *convStream) add(o convObj) error {
	if e, ok := o.get("error"); ok && !convIsNull(e) {
		return fmt.Errorf("%w: %s", ErrConvertInBandError, convClip(e))
	}
	if u, ok := o.get("usage"); ok {
		s.hasUse = true
		if !convIsNull(u) {
			s.usage = u
		}
	}
	if x, ok := o.get("x_groq"); ok && convKindOf(x) == '{' {
		xo, err := convParse(x)
		if err != nil {
			return fmt.Errorf("x_groq: %w", err)
		}
		if u, ok := xo.get("usage"); ok && !convIsNull(u) {
			s.xUsage = u
		}
	}
	if err := s.top.add(o); err != nil {
		return err
	}
	raw, ok := o.get("choices")
	if !ok || convIsNull(raw) {
		return nil
	}
	choices, err := convParseArray(raw)
	if err != nil {
		return fmt.Errorf("choices: %w", err)
	}
	for i, raw := range choices {
		co, err := convParse(raw)
		if err != nil {
			return fmt.Errorf("choices[%d]: %w", i, err)
		}
		n, idx, err := convChoiceIndex(co)
		if err != nil {
			return fmt.Errorf("choices[%d]: %w", i, err)
		}
		c := s.byIndex[n]
		if c == nil {
			c = convNewChoice(idx)
			s.byIndex[n] = c
			s.choices = append(s.choices, c)
		}
		if err := c.add(co); err != nil {
			return fmt.Errorf("choices[%d].%w", i, err)
		}
	}
	return nil
}

func (s *convStream) write() []byte {
	var w convWriter
	w.open()
	s.top.writeKeys(&w, "id")
	w.member("object", json.RawMessage(`"chat.completion"`))
	s.top.writeKeys(&w, "created", "model")
	w.key("choices")
	w.b.WriteByte('[')
	for i, c := range s.choices {
		if i > 0 {
			w.b.WriteByte(',')
		}
		c.write(&w)
	}
	w.b.WriteByte(']')
	switch {
	case s.usage != nil:
		w.member("usage", s.usage)
	case s.xUsage != nil:
		w.member("usage", s.xUsage)
	case s.hasUse:
		w.member("usage", json.RawMessage("null"))
	}
	s.top.writeKeys(&w, "service_tier", "system_fingerprint")
	s.top.writeRest(&w)
	w.close()
	return w.b.Bytes()
}

func convStreamToCompletion(stream []byte) ([]byte, error) {
	s := &convStream{top: convNewNode(convTopSchema), byIndex: map[int]*convChoice{}}
	r := sse.NewReader(bytes.NewReader(stream), 0)
	for {
		ev, rerr := r.Next()
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil && !errors.Is(rerr, sse.ErrTruncated) {
			return nil, fmt.Errorf("after chunk %d: %w", s.chunks, rerr)
		}
		if string(sse.EventType(ev)) == "error" {
			return nil, fmt.Errorf("after chunk %d: %w: event: error", s.chunks, ErrConvertInBandError)
		}
		data, ok := sse.Data(ev)
		if ok && sse.IsDone(bytes.TrimSpace(data)) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("after chunk %d: %w", s.chunks, rerr)
		}
		if !ok || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		o, err := convParseTop(data)
		if err != nil {
			return nil, fmt.Errorf("chunk %d: %w", s.chunks, err)
		}
		if err := s.add(o); err != nil {
			return nil, fmt.Errorf("chunk %d: %w", s.chunks, err)
		}
		s.chunks++
	}
	if s.chunks == 0 {
		return nil, ErrConvertNoChunks
	}
	return s.write(), nil
}

// convClip shortens raw JSON for an error message.
func convClip(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil || b.Len() > 200 {
		return string(raw[:min(len(raw), 200)]) + "…"
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Completion to stream.

// convChunkBase lists the top-level members every chunk repeats, in the
// order OpenAI writes them in chunks.
var convChunkBase = []string{"id", "object", "created", "model", "service_tier", "system_fingerprint"}

func convCompletionToStream(body []byte, includeUsage bool) ([]byte, error) {
	top, err := convParseTop(body)
	if err != nil {
		return nil, err
	}
	var (
		base    = convObj{{"object", json.RawMessage(`"chat.completion.chunk"`)}}
		extras  convObj // unknown top-level members, for the first chunk
		choices json.RawMessage
		usage   json.RawMessage
		hasUse  bool
		xgroq   convObj // x_groq without usage, if it is an object
		isXGroq bool
	)
	for _, m := range top {
		switch m.key {
		case "object":
			var s *string
			if json.Unmarshal(m.val, &s) != nil || s != nil && *s != "" && *s != "chat.completion" {
				return nil, fmt.Errorf("%w: object is %s, want \"chat.completion\"", ErrConvertShape, convClip(m.val))
			}
		case "choices":
			choices = m.val
		case "usage":
			usage, hasUse = m.val, true
		case "id", "created", "model", "service_tier", "system_fingerprint":
			base = append(base, m)
		case "error":
			if !convIsNull(m.val) {
				return nil, fmt.Errorf("%w: %s", ErrConvertInBandError, convClip(m.val))
			}
			extras = append(extras, m)
		case "x_groq":
			if !convIsNull(m.val) {
				x, err := convParse(m.val)
				if err != nil {
					return nil, fmt.Errorf("x_groq: %w", err)
				}
				for _, xm := range x {
					if xm.key != "usage" {
						xgroq = append(xgroq, xm)
					}
				}
				isXGroq = true
				m.val = convObjJSON(xgroq)
			}
			extras = append(extras, m)
		default:
			extras = append(extras, m)
		}
	}
	slices.SortStableFunc(base, func(x, y convMember) int {
		return slices.Index(convChunkBase, x.key) - slices.Index(convChunkBase, y.key)
	})
	if choices == nil {
		return nil, fmt.Errorf("%w: no choices", ErrConvertShape)
	}
	list, err := convParseArray(choices)
	if err != nil {
		return nil, fmt.Errorf("choices: %w", err)
	}
	var usageNull json.RawMessage
	if includeUsage && hasUse {
		usageNull = json.RawMessage("null")
	}

	// The choices' chunks, then the chunk(s) around them.
	type chunk struct {
		choices json.RawMessage
		extras  convObj
	}
	var chunks []chunk
	seen := map[int]bool{}
	for i, raw := range list {
		a, b, n, err := convChoiceChunks(raw)
		if err != nil {
			return nil, fmt.Errorf("choices[%d]: %w", i, err)
		}
		if seen[n] {
			return nil, fmt.Errorf("choices[%d]: %w: duplicate index %d", i, ErrConvertShape, n)
		}
		seen[n] = true
		chunks = append(chunks, chunk{choices: a}, chunk{choices: b})
	}
	if len(chunks) == 0 {
		chunks = append(chunks, chunk{choices: json.RawMessage("[]")})
	}
	chunks[0].extras = extras
	if isXGroq && !convIsNull(usage) {
		// Groq reports the usage in x_groq on the last chunk of the answer.
		last := &chunks[len(chunks)-1]
		xu := convObjJSON(append(slices.Clip(xgroq), convMember{"usage", usage}))
		if len(chunks) == 1 {
			last.extras = slices.Clone(extras)
			last.extras.set("x_groq", xu)
		} else {
			last.extras = convObj{{"x_groq", xu}}
		}
	}
	if includeUsage && !convIsNull(usage) {
		chunks = append(chunks, chunk{choices: json.RawMessage("[]")})
	}

	var out bytes.Buffer
	for i, c := range chunks {
		var w convWriter
		w.open()
		for _, m := range base {
			w.member(m.key, m.val)
		}
		w.member("choices", c.choices)
		if includeUsage && !convIsNull(usage) && i == len(chunks)-1 {
			w.member("usage", usage)
		} else if usageNull != nil {
			w.member("usage", usageNull)
		}
		for _, m := range c.extras {
			w.member(m.key, m.val)
		}
		w.close()
		out.WriteString("data: ")
		out.Write(w.b.Bytes())
		out.WriteString("\n\n")
	}
	out.WriteString("data: [DONE]\n\n")
	return out.Bytes(), nil
}

// convChoiceChunks returns the "choices" arrays of the two chunks that
// stream one completion choice (the message, then the finish_reason), and
// the choice's index. It checks that StreamToCompletion accepts them.
func convChoiceChunks(raw json.RawMessage) (first, finish json.RawMessage, index int, err error) {
	c, err := convParse(raw)
	if err != nil {
		return nil, nil, 0, err
	}
	index, idx, err := convChoiceIndex(c)
	if err != nil {
		return nil, nil, 0, err
	}
	msgRaw, ok := c.get("message")
	if !ok {
		return nil, nil, 0, fmt.Errorf("%w: no message", ErrConvertShape)
	}
	msg, err := convParse(msgRaw)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("message: %w", err)
	}
	var delta convObj
	if _, ok := msg.get("role"); !ok {
		delta = append(delta, convMember{"role", json.RawMessage(`"assistant"`)})
	}
	for _, m := range msg {
		if m.key == "tool_calls" && convKindOf(m.val) == '[' {
			calls, err := convParseArray(m.val)
			if err != nil {
				return nil, nil, 0, fmt.Errorf("message.tool_calls: %w", err)
			}
			var w convWriter
			w.b.WriteByte('[')
			for j, call := range calls {
				co, err := convParse(call)
				if err != nil {
					return nil, nil, 0, fmt.Errorf("message.tool_calls[%d]: %w", j, err)
				}
				if j > 0 {
					w.b.WriteByte(',')
				}
				w.open()
				w.member("index", json.RawMessage(strconv.Itoa(j)))
				for _, cm := range co {
					if cm.key != "index" {
						w.member(cm.key, cm.val)
					}
				}
				w.close()
			}
			w.b.WriteByte(']')
			m.val = w.b.Bytes()
		}
		delta = append(delta, m)
	}

	a := convObj{{"index", idx}, {"delta", convObjJSON(delta)}}
	b := convObj{{"index", idx}, {"delta", json.RawMessage("{}")}}
	if lp, ok := c.get("logprobs"); ok {
		a = append(a, convMember{"logprobs", lp})
		b = append(b, convMember{"logprobs", json.RawMessage("null")})
	}
	if fr, ok := c.get("finish_reason"); ok {
		a = append(a, convMember{"finish_reason", json.RawMessage("null")})
		b = append(b, convMember{"finish_reason", fr})
	}
	for _, m := range c {
		switch m.key {
		case "index", "message", "logprobs", "finish_reason", "delta":
		default:
			a = append(a, m)
		}
	}
	// What StreamToCompletion would reject, CompletionToStream rejects.
	if err := convNewNode(convMessageSchema).add(delta); err != nil {
		return nil, nil, 0, fmt.Errorf("message.%w", err)
	}
	if err := convNewNode(convChoiceSchema).add(a); err != nil {
		return nil, nil, 0, err
	}
	return convArrayJSON(convObjJSON(a)), convArrayJSON(convObjJSON(b)), index, nil
}

func convObjJSON(o convObj) json.RawMessage {
	var w convWriter
	w.open()
	for _, m := range o {
		w.member(m.key, m.val)
	}
	w.close()
	return w.b.Bytes()
}

// convArrayJSON returns the array of one element.
func convArrayJSON(elem json.RawMessage) json.RawMessage {
	return slices.Concat(json.RawMessage("["), elem, json.RawMessage("]"))
}
