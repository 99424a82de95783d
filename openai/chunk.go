package openai

import (
	"encoding/json"
	"unicode/utf8"

	"switchyard/jsonscan"
)

// Usage is the token usage an answer reports.
type Usage struct{ PromptTokens, CompletionTokens int64 }

// Chunk is what the proxy reads of one chat.completion.chunk (a stream
// event's data), in one pass over it.
type Chunk struct {
	// Valid reports valid JSON.
	Valid bool
	// Error reports an in-band error: a top-level "error" that is not
	// null (vLLM, sglang and others fail inside a 200 stream this way).
	Error bool
	// Usage is OpenAI's usage, or else Groq's x_groq.usage; HasUsage says
	// whether either is there.
	Usage    Usage
	HasUsage bool
	// UsageSpan is the top-level usage member, null included: what the
	// proxy strips for a client that did not ask for usage (with
	// include_usage, OpenAI sends "usage": null on every other chunk).
	UsageSpan jsonscan.Span
	// UsageOnly is the include_usage chunk: a usage object, no choices.
	UsageOnly bool
	// Choices is the span of the choices array (zero when absent).
	Choices jsonscan.Span
}

var (
	chunkKeys  = []string{"choices", "usage", "x_groq", "error"}
	usageKey   = []string{"usage"}
	usageKeys  = []string{"prompt_tokens", "completion_tokens"}
	choiceKeys = []string{"index", "finish_reason"}
)

// ReadChunk reads a chunk's data.
func ReadChunk(data []byte) Chunk {
	var sp [4]jsonscan.Span
	object, ok := jsonscan.Members(data, chunkKeys, sp[:])
	c := Chunk{Valid: ok}
	if !object {
		return c
	}
	choices, usage, xgroq := value(data, sp[0]), value(data, sp[1]), value(data, sp[2])
	c.Error = value(data, sp[3]) != nil
	if choices != nil {
		c.Choices = sp[0]
	}
	usageObject := usage != nil && usage[0] == '{'
	if usageObject || (usage == nil && sp[1].Found()) {
		c.UsageSpan = sp[1]
	}
	switch {
	case usageObject:
		c.Usage, c.HasUsage = usageOf(usage), true
	case xgroq != nil && xgroq[0] == '{':
		var u [1]jsonscan.Span
		jsonscan.Members(xgroq, usageKey, u[:])
		if v := value(xgroq, u[0]); v != nil && v[0] == '{' {
			c.Usage, c.HasUsage = usageOf(v), true
		}
	}
	c.UsageOnly = usageObject && (choices == nil || isEmptyArray(choices))
	return c
}

// WithoutUsage returns data without its top-level usage member (data
// itself when it has none): the usage the proxy asked for with
// include_usage, on whatever chunk the upstream put it.
func (c *Chunk) WithoutUsage(data []byte) []byte {
	return jsonscan.DeleteMember(data, c.UsageSpan)
}

// Answer is what the proxy reads of a plain chat.completion.
type Answer struct {
	Valid bool
	// Error reports a top-level "error" that is not null: an error inside
	// a 2xx answer.
	Error    bool
	Usage    Usage
	HasUsage bool
}

var answerKeys = []string{"error", "usage"}

// ReadAnswer reads a plain answer in one pass.
func ReadAnswer(body []byte) Answer {
	var sp [2]jsonscan.Span
	_, ok := jsonscan.Members(body, answerKeys, sp[:])
	a := Answer{Valid: ok, Error: value(body, sp[0]) != nil}
	if u := value(body, sp[1]); u != nil && u[0] == '{' {
		a.Usage, a.HasUsage = usageOf(u), true
	}
	return a
}

// Finishes tracks, over a stream, which choices have finished: every
// choice index seen in a chunk must get a non-empty finish_reason before
// the stream is a complete answer. The zero value is ready.
type Finishes struct {
	seen, done uint64       // indexes 0-63
	more       map[int]bool // larger indexes: finished or not
}

// Add records the choices of one chunk (c from ReadChunk(data)).
func (f *Finishes) Add(data []byte, c *Chunk) {
	if !c.Choices.Found() {
		return
	}
	arr := data[c.Choices.Start:c.Choices.End]
	jsonscan.Elements(arr, func(s, e int) bool {
		var sp [2]jsonscan.Span
		if object, _ := jsonscan.Members(arr[s:e], choiceKeys, sp[:]); !object {
			return true
		}
		choice := arr[s:e]
		index := 0
		if v := value(choice, sp[0]); v != nil {
			n := intValue(v)
			if n < 0 {
				return true
			}
			index = int(n)
		}
		fr := value(choice, sp[1])
		finished := fr != nil && string(fr) != `""`
		f.mark(index, finished)
		return true
	})
}

func (f *Finishes) mark(index int, finished bool) {
	if index < 64 {
		f.seen |= 1 << index
		if finished {
			f.done |= 1 << index
		}
		return
	}
	if f.more == nil {
		f.more = map[int]bool{}
	}
	f.more[index] = f.more[index] || finished
}

// Any reports whether any choice was seen.
func (f *Finishes) Any() bool { return f.seen != 0 || len(f.more) > 0 }

// Complete reports whether at least one choice was seen and every choice
// seen has finished.
func (f *Finishes) Complete() bool {
	if !f.Any() || f.seen != f.done {
		return false
	}
	for _, done := range f.more {
		if !done {
			return false
		}
	}
	return true
}

// value returns a member's value, nil when absent or null.
func value(b []byte, sp jsonscan.Span) []byte {
	if !sp.Found() || string(b[sp.Start:sp.End]) == "null" {
		return nil
	}
	return b[sp.Start:sp.End]
}

func isEmptyArray(v []byte) bool {
	if v[0] != '[' {
		return false
	}
	for _, c := range v[1 : len(v)-1] {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// usageOf reads a usage object's token counts (0 for a count that is
// absent or not a non-negative integer).
func usageOf(usage []byte) Usage {
	var sp [2]jsonscan.Span
	if object, _ := jsonscan.Members(usage, usageKeys, sp[:]); !object {
		return Usage{}
	}
	return Usage{PromptTokens: max(intValue(value(usage, sp[0])), 0), CompletionTokens: max(intValue(value(usage, sp[1])), 0)}
}

// intValue reads a non-negative integer (-1 when v is not one).
func intValue(v []byte) int64 {
	if len(v) == 0 || len(v) > 18 {
		return -1
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// CompletionChars counts the characters of a chat.completion's message
// contents, or of a chunk's delta contents (for quotas counted in
// characters).
func CompletionChars(body []byte) int64 {
	var v struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
	}
	if json.Unmarshal(body, &v) != nil {
		return 0
	}
	var n int64
	for _, ch := range v.Choices {
		n += int64(utf8.RuneCountInString(ch.Message.Content) + utf8.RuneCountInString(ch.Delta.Content))
	}
	return n
}

// PromptChars counts the characters of a request's message contents
// (strings, and the text parts of content arrays).
func PromptChars(body []byte) int64 {
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
