package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Wire shapes of OpenAI chat completions. Struct field order is the JSON
// field order OpenAI uses, so encoding/json writes them the same way.
// Numbers and usage objects pass through as json.Number / json.RawMessage
// and keep their exact text.

// completion is a chat.completion object.
type completion struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           json.Number        `json:"created"`
	Model             string             `json:"model"`
	Choices           []completionChoice `json:"choices"`
	Usage             json.RawMessage    `json:"usage"`
	ServiceTier       *string            `json:"service_tier,omitempty"`
	SystemFingerprint *string            `json:"system_fingerprint,omitempty"`
	Error             json.RawMessage    `json:"error,omitempty"`
}

type completionChoice struct {
	Index        int             `json:"index"`
	Message      message         `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type message struct {
	Role             string     `json:"role"`
	Content          *string    `json:"content"`
	ToolCalls        []toolCall `json:"tool_calls,omitempty"`
	Refusal          *string    `json:"refusal,omitempty"`
	Reasoning        *string    `json:"reasoning,omitempty"`         // Groq
	ReasoningContent *string    `json:"reasoning_content,omitempty"` // DeepSeek, vLLM
}

type toolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function toolFunction `json:"function"`
}

type toolFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// chunk is a chat.completion.chunk object, as read and as written.
type chunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           json.Number     `json:"created"`
	Model             string          `json:"model"`
	ServiceTier       *string         `json:"service_tier,omitempty"`
	SystemFingerprint *string         `json:"system_fingerprint,omitempty"`
	Choices           []chunkChoice   `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
	XGroq             *xGroq          `json:"x_groq,omitempty"` // read only
	Error             json.RawMessage `json:"error,omitempty"`  // read only
}

type xGroq struct {
	Usage json.RawMessage `json:"usage"`
}

type chunkChoice struct {
	Index        int             `json:"index"`
	Delta        delta           `json:"delta"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type delta struct {
	Role             string          `json:"role,omitempty"`
	Content          *string         `json:"content,omitempty"`
	ToolCalls        []toolCallDelta `json:"tool_calls,omitempty"`
	Refusal          *string         `json:"refusal,omitempty"`
	Reasoning        *string         `json:"reasoning,omitempty"`
	ReasoningContent *string         `json:"reasoning_content,omitempty"`
}

type toolCallDelta struct {
	Index    *int         `json:"index"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function toolFunction `json:"function"`
}

// logprobs is a choice's logprobs object; chunks carry consecutive pieces
// of the content and refusal token lists.
type logprobs struct {
	Content []json.RawMessage `json:"content"`
	Refusal []json.RawMessage `json:"refusal"`
}

var (
	errNoChunks    = errors.New("stream has no chunks")
	errStreamError = errors.New("stream carries an error event")
)

// StreamToCompletion assembles the chat.completion object equivalent to a
// stored SSE stream of chat.completion.chunk events, so a streamed answer
// can serve a plain request.
//
// Events are separated by blank lines (LF or CRLF line ends); their data
// lines are joined, comments and event/id/retry fields are ignored, and
// "[DONE]" ends the stream. Per choice index the deltas are merged:
// content, refusal and reasoning are concatenated, the role defaults to
// "assistant", tool calls are merged by their index (first id, type and
// name win; arguments are concatenated), logprobs lists are concatenated
// and the last finish_reason wins. id, created, model, service_tier and
// system_fingerprint come from the first chunk that has them; usage from
// the last chunk that has one (Groq's x_groq.usage if no chunk has a
// top-level usage, else null). message.content is null when there is no
// content but there are tool calls or a refusal.
//
// It fails on malformed JSON, on an in-band error event, and on a stream
// without chunks.
func StreamToCompletion(sse []byte) ([]byte, error) {
	var (
		out     completion
		chunks  int
		choices = map[int]*choiceAcc{}
		usage   json.RawMessage
		xUsage  json.RawMessage
	)
	err := forEachEvent(sse, func(data []byte) error {
		var c chunk
		if err := json.Unmarshal(data, &c); err != nil {
			return fmt.Errorf("chunk %d: %w", chunks, err)
		}
		if !isNull(c.Error) {
			return errStreamError
		}
		chunks++
		if out.ID == "" {
			out.ID = c.ID
		}
		if out.Created == "" {
			out.Created = c.Created
		}
		if out.Model == "" {
			out.Model = c.Model
		}
		if out.ServiceTier == nil {
			out.ServiceTier = c.ServiceTier
		}
		if out.SystemFingerprint == nil {
			out.SystemFingerprint = c.SystemFingerprint
		}
		if !isNull(c.Usage) {
			usage = c.Usage
		}
		if c.XGroq != nil && !isNull(c.XGroq.Usage) {
			xUsage = c.XGroq.Usage
		}
		for i := range c.Choices {
			cc := &c.Choices[i]
			acc := choices[cc.Index]
			if acc == nil {
				acc = &choiceAcc{index: cc.Index}
				choices[cc.Index] = acc
			}
			if err := acc.add(cc); err != nil {
				return fmt.Errorf("chunk %d: %w", chunks-1, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("stream to completion: %w", err)
	}
	if chunks == 0 {
		return nil, fmt.Errorf("stream to completion: %w", errNoChunks)
	}
	out.Object = "chat.completion"
	if isNull(usage) {
		usage = xUsage
	}
	out.Usage = usage
	indexes := make([]int, 0, len(choices))
	for i := range choices {
		indexes = append(indexes, i)
	}
	slices.Sort(indexes)
	out.Choices = make([]completionChoice, 0, len(indexes))
	for _, i := range indexes {
		out.Choices = append(out.Choices, choices[i].choice())
	}
	return marshal(out)
}

// choiceAcc accumulates the deltas of one choice.
type choiceAcc struct {
	index            int
	role             string
	content          []byte
	refusal          *[]byte
	reasoning        *[]byte
	reasoningContent *[]byte
	calls            []*toolCallAcc // in order of first appearance
	logprobs         *logprobs
	finish           *string
}

type toolCallAcc struct {
	index int
	call  toolCall
}

func (a *choiceAcc) add(c *chunkChoice) error {
	d := &c.Delta
	if a.role == "" {
		a.role = d.Role
	}
	if d.Content != nil {
		a.content = append(a.content, *d.Content...)
	}
	appendOpt(&a.refusal, d.Refusal)
	appendOpt(&a.reasoning, d.Reasoning)
	appendOpt(&a.reasoningContent, d.ReasoningContent)
	for i := range d.ToolCalls {
		a.addToolCall(&d.ToolCalls[i])
	}
	if !isNull(c.Logprobs) {
		var lp logprobs
		if err := json.Unmarshal(c.Logprobs, &lp); err != nil {
			return fmt.Errorf("logprobs: %w", err)
		}
		if a.logprobs == nil {
			a.logprobs = &logprobs{}
		}
		a.logprobs.Content = append(a.logprobs.Content, lp.Content...)
		a.logprobs.Refusal = append(a.logprobs.Refusal, lp.Refusal...)
	}
	if c.FinishReason != nil {
		a.finish = c.FinishReason
	}
	return nil
}

func appendOpt(dst **[]byte, s *string) {
	if s == nil {
		return
	}
	if *dst == nil {
		*dst = new([]byte)
	}
	**dst = append(**dst, *s...)
}

// addToolCall merges d into the call with the same index. Providers that
// omit the index get one: a delta with a new id starts a new call, any
// other delta continues the last call.
func (a *choiceAcc) addToolCall(d *toolCallDelta) {
	var t *toolCallAcc
	switch {
	case d.Index != nil:
		for _, c := range a.calls {
			if c.index == *d.Index {
				t = c
				break
			}
		}
		if t == nil {
			t = &toolCallAcc{index: *d.Index}
			a.calls = append(a.calls, t)
		}
	case len(a.calls) > 0 && (d.ID == "" || d.ID == a.calls[len(a.calls)-1].call.ID):
		t = a.calls[len(a.calls)-1]
	default:
		next := 0
		for _, c := range a.calls {
			next = max(next, c.index+1)
		}
		t = &toolCallAcc{index: next}
		a.calls = append(a.calls, t)
	}
	if t.call.ID == "" {
		t.call.ID = d.ID
	}
	if t.call.Type == "" {
		t.call.Type = d.Type
	}
	if t.call.Function.Name == "" {
		t.call.Function.Name = d.Function.Name
	}
	t.call.Function.Arguments += d.Function.Arguments
}

func (a *choiceAcc) choice() completionChoice {
	c := completionChoice{Index: a.index, FinishReason: a.finish}
	m := &c.Message
	m.Role = a.role
	if m.Role == "" {
		m.Role = "assistant"
	}
	m.Refusal = optString(a.refusal)
	m.Reasoning = optString(a.reasoning)
	m.ReasoningContent = optString(a.reasoningContent)
	if len(a.calls) > 0 {
		slices.SortStableFunc(a.calls, func(x, y *toolCallAcc) int { return x.index - y.index })
		m.ToolCalls = make([]toolCall, len(a.calls))
		for i, t := range a.calls {
			m.ToolCalls[i] = t.call
			if m.ToolCalls[i].Type == "" {
				m.ToolCalls[i].Type = "function"
			}
		}
	}
	if len(a.content) > 0 || (len(m.ToolCalls) == 0 && m.Refusal == nil) {
		s := string(a.content)
		m.Content = &s
	}
	if a.logprobs != nil {
		c.Logprobs, _ = json.Marshal(a.logprobs) // RawMessage elements are valid JSON
	}
	return c
}

func optString(b *[]byte) *string {
	if b == nil {
		return nil
	}
	s := string(*b)
	return &s
}

// CompletionToStream synthesizes the SSE stream equivalent to a
// chat.completion object, so a plain answer can serve a streaming request.
//
// For each choice it writes one chunk whose delta carries the whole
// message (role, content, tool calls each with its index, refusal,
// reasoning) and logprobs, then one chunk with an empty delta and the
// finish_reason; a completion without choices gives one chunk with
// "choices":[]. With includeUsage (the request's
// stream_options.include_usage) and a usage in body, every chunk carries
// "usage":null and a final chunk with "choices":[] carries the usage. The
// stream ends with "data: [DONE]". Every chunk repeats id, created, model,
// service_tier and system_fingerprint. Each event is "data: <json>\n\n".
func CompletionToStream(body []byte, includeUsage bool) ([]byte, error) {
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("completion to stream: %w", err)
	}
	if !isNull(c.Error) {
		return nil, errors.New("completion to stream: body is an error")
	}
	if c.Object != "" && c.Object != "chat.completion" {
		return nil, fmt.Errorf("completion to stream: object is %q, want chat.completion", c.Object)
	}
	withUsage := includeUsage && !isNull(c.Usage)
	var usageNull json.RawMessage
	if withUsage {
		usageNull = json.RawMessage("null")
	}
	base := chunk{
		ID:                c.ID,
		Object:            "chat.completion.chunk",
		Created:           c.Created,
		Model:             c.Model,
		ServiceTier:       c.ServiceTier,
		SystemFingerprint: c.SystemFingerprint,
		Usage:             usageNull,
	}
	var out bytes.Buffer
	write := func(ch chunk) error {
		out.WriteString("data: ")
		enc := json.NewEncoder(&out)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(ch); err != nil { // appends "\n"
			return fmt.Errorf("completion to stream: %w", err)
		}
		out.WriteByte('\n')
		return nil
	}
	for _, ch := range c.Choices {
		m := ch.Message
		d := delta{
			Role:             m.Role,
			Content:          m.Content,
			Refusal:          m.Refusal,
			Reasoning:        m.Reasoning,
			ReasoningContent: m.ReasoningContent,
		}
		if d.Role == "" {
			d.Role = "assistant"
		}
		for i, t := range m.ToolCalls {
			d.ToolCalls = append(d.ToolCalls, toolCallDelta{Index: &i, ID: t.ID, Type: t.Type, Function: t.Function})
		}
		first := base
		first.Choices = []chunkChoice{{Index: ch.Index, Delta: d, Logprobs: ch.Logprobs}}
		if err := write(first); err != nil {
			return nil, err
		}
		finish := base
		finish.Choices = []chunkChoice{{Index: ch.Index, FinishReason: ch.FinishReason}}
		if err := write(finish); err != nil {
			return nil, err
		}
	}
	if len(c.Choices) == 0 && !withUsage {
		// Still send one chunk, so the stream carries id and model.
		empty := base
		empty.Choices = []chunkChoice{}
		if err := write(empty); err != nil {
			return nil, err
		}
	}
	if withUsage {
		last := base
		last.Choices = []chunkChoice{}
		last.Usage = c.Usage
		if err := write(last); err != nil {
			return nil, err
		}
	}
	out.WriteString("data: [DONE]\n\n")
	return out.Bytes(), nil
}

// forEachEvent calls fn with the data of each server-sent event in sse,
// stopping at "[DONE]" or at fn's first error. Lines end with LF or CRLF;
// an event's data lines are joined with LF; events without data, comments
// and other fields are skipped. An event of type "error" fails the stream.
func forEachEvent(sse []byte, fn func(data []byte) error) error {
	var (
		data    []byte
		hasData bool
		isError bool
		joined  []byte // scratch for multi-line data
	)
	dispatch := func() (done bool, err error) {
		defer func() { data, hasData, isError = nil, false, false }()
		if isError {
			return false, errStreamError
		}
		if !hasData || len(bytes.TrimSpace(data)) == 0 {
			return false, nil
		}
		if string(bytes.TrimSpace(data)) == "[DONE]" {
			return true, nil
		}
		return false, fn(data)
	}
	for len(sse) > 0 {
		var line []byte
		if i := bytes.IndexByte(sse, '\n'); i >= 0 {
			line, sse = sse[:i], sse[i+1:]
		} else {
			line, sse = sse, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			if done, err := dispatch(); done || err != nil {
				return err
			}
			continue
		}
		if line[0] == ':' {
			continue // comment
		}
		field, value, _ := bytes.Cut(line, []byte{':'})
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(field) {
		case "data":
			if !hasData {
				data, hasData = value, true
			} else {
				joined = append(append(append(joined[:0], data...), '\n'), value...)
				data = joined
			}
		case "event":
			isError = isError || string(value) == "error"
		}
	}
	_, err := dispatch()
	return err
}

func isNull(m json.RawMessage) bool {
	return len(m) == 0 || string(m) == "null"
}

// marshal encodes v as compact JSON without HTML escaping, as upstreams
// write it.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}
