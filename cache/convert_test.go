package cache

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const groqCompletion = `{"id":"chatcmpl-4f7c2a1e-9b3d-4c1a-8e2f-5d6a7b8c9d0e","object":"chat.completion","created":1732627200,"model":"llama-3.3-70b-versatile",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Fast language models matter because <latency> & \"cost\"\nadd up. ✓"},"logprobs":null,"finish_reason":"stop"}],` +
	`"usage":{"queue_time":0.017234512,"prompt_tokens":42,"prompt_time":0.002109345,"completion_tokens":14,"completion_time":0.050909091,"total_tokens":56,"total_time":0.053018436},` +
	`"system_fingerprint":"fp_c0cfa69934"}`

const toolCallsCompletion = `{"id":"chatcmpl-AX9q2bV7kLmN3oPq","object":"chat.completion","created":1732627300,"model":"gpt-4o-mini-2024-07-18",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[` +
	`{"id":"call_Ab12Cd34Ef56","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Paris, FR\"}"}},` +
	`{"id":"call_Gh78Ij90Kl12","type":"function","function":{"name":"get_time","arguments":"{\"tz\": \"Europe/Paris\"}"}}]},` +
	`"logprobs":null,"finish_reason":"tool_calls"}],` +
	`"usage":{"prompt_tokens":81,"completion_tokens":48,"total_tokens":129,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},` +
	`"service_tier":"default","system_fingerprint":"fp_0ba0d124f1"}`

func TestStreamToCompletionFixtures(t *testing.T) {
	groq := readFixture(t, "groq_stream.sse")
	// Without the include_usage chunk, Groq's x_groq.usage is the usage.
	groqNoUsageChunk := bytes.Replace(groq, []byte("data: {\"id\":\"chatcmpl-4f7c2a1e-9b3d-4c1a-8e2f-5d6a7b8c9d0e\",\"object\":\"chat.completion.chunk\",\"created\":1732627200,\"model\":\"llama-3.3-70b-versatile\",\"system_fingerprint\":\"fp_c0cfa69934\",\"choices\":[],"), []byte(": usage chunk dropped\nx: "), 1)
	if bytes.Equal(groqNoUsageChunk, groq) {
		t.Fatal("fixture edit did not apply")
	}
	tests := []struct {
		name string
		sse  []byte
		want string
	}{
		{"groq", groq, groqCompletion},
		{"groq crlf", bytes.ReplaceAll(groq, []byte("\n"), []byte("\r\n")), groqCompletion},
		{"groq x_groq usage", groqNoUsageChunk, groqCompletion},
		{"groq without final blank line or DONE", bytes.TrimSuffix(groq, []byte("\ndata: [DONE]\n\n")), groqCompletion},
		{"tool calls", readFixture(t, "tool_calls_stream.sse"), toolCallsCompletion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := StreamToCompletion(tt.sse)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestStreamToCompletionSSEFraming(t *testing.T) {
	const c = `"object":"chat.completion.chunk","created":1,"model":"m"`
	sse := ": keep-alive comment\n" +
		"event: message\n" +
		"id: 1\n" +
		"retry: 1000\n" +
		`data: {"id":"x",` + c + `,` + "\n" + // one JSON object over two data lines
		`data: "choices":[{"index":1,"delta":{"role":"assistant","content":"B"},"finish_reason":null}]}` + "\n\n" +
		"data:{\"id\":\"x\"," + c + `,"choices":[{"index":0,"delta":{"content":"A"},"finish_reason":"length"}]}` + "\n\n" + // no space after colon
		"\n\n" + // stray blank lines
		"data: [DONE]\n\n" +
		"data: {\"this\": \"is ignored\"\n\n"
	got, err := StreamToCompletion([]byte(sse))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[` +
		`{"index":0,"message":{"role":"assistant","content":"A"},"logprobs":null,"finish_reason":"length"},` +
		`{"index":1,"message":{"role":"assistant","content":"B"},"logprobs":null,"finish_reason":null}],"usage":null}`
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestStreamToCompletionMerging(t *testing.T) {
	ev := func(choice string) string {
		return `data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[` + choice + "]}\n\n"
	}
	tests := []struct {
		name string
		sse  string
		want string // the "choices" array
	}{
		{
			"tool calls without index",
			ev(`{"index":0,"delta":{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\""}}]}}`) +
				ev(`{"index":0,"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}`) +
				ev(`{"index":0,"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":"{}"}}]}}`) +
				ev(`{"index":0,"delta":{},"finish_reason":"tool_calls"}`),
			`[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}},{"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls"}]`,
		},
		{
			"tool calls out of order, content and calls together",
			ev(`{"index":0,"delta":{"role":"assistant","content":"Let me check.","tool_calls":[{"index":1,"id":"b","function":{"name":"g","arguments":"{"}}]}}`) +
				ev(`{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"[]"}}]}}`) +
				ev(`{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"}"}}]}}`),
			`[{"index":0,"message":{"role":"assistant","content":"Let me check.","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"[]"}},{"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]},"logprobs":null,"finish_reason":null}]`,
		},
		{
			"refusal",
			ev(`{"index":0,"delta":{"role":"assistant","content":null,"refusal":""}}`) +
				ev(`{"index":0,"delta":{"refusal":"I can't "}}`) +
				ev(`{"index":0,"delta":{"refusal":"help with that."},"finish_reason":"stop"}`),
			`[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"logprobs":null,"finish_reason":"stop"}]`,
		},
		{
			"reasoning and logprobs",
			ev(`{"index":0,"delta":{"role":"assistant","reasoning":"Think","content":""},"logprobs":{"content":[],"refusal":null}}`) +
				ev(`{"index":0,"delta":{"reasoning":"ing."}}`) +
				ev(`{"index":0,"delta":{"content":"Hi"},"logprobs":{"content":[{"token":"Hi","logprob":-0.0001,"bytes":[72,105],"top_logprobs":[]}],"refusal":null}}`) +
				ev(`{"index":0,"delta":{"content":"!"},"logprobs":{"content":[{"token":"!","logprob":-1e-7,"bytes":[33],"top_logprobs":[]}],"refusal":null},"finish_reason":"stop"}`),
			`[{"index":0,"message":{"role":"assistant","content":"Hi!","reasoning":"Thinking."},"logprobs":{"content":[{"token":"Hi","logprob":-0.0001,"bytes":[72,105],"top_logprobs":[]},{"token":"!","logprob":-1e-7,"bytes":[33],"top_logprobs":[]}],"refusal":null},"finish_reason":"stop"}]`,
		},
		{
			"no choices at all",
			`data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"total_tokens":0}}` + "\n\n",
			`[]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := StreamToCompletion([]byte(tt.sse))
			if err != nil {
				t.Fatal(err)
			}
			var c struct{ Choices json.RawMessage }
			if err := json.Unmarshal(got, &c); err != nil {
				t.Fatal(err)
			}
			if string(c.Choices) != tt.want {
				t.Fatalf("choices\n%s\nwant\n%s", c.Choices, tt.want)
			}
		})
	}
}

func TestStreamToCompletionErrors(t *testing.T) {
	tests := map[string]string{
		"empty":           "",
		"only DONE":       "data: [DONE]\n\n",
		"only comments":   ": ping\n\n: ping\n\n",
		"not json":        "data: {\"id\":\n\n",
		"wrong types":     `data: {"choices":[{"index":"zero"}]}` + "\n\n",
		"in-band error":   `data: {"error":{"message":"upstream overloaded","type":"server_error","code":null}}` + "\n\n",
		"error event":     "event: error\ndata: {\"message\":\"boom\"}\n\n",
		"bad logprobs":    `data: {"choices":[{"index":0,"delta":{},"logprobs":[1]}]}` + "\n\n",
		"error after one": `data: {"id":"x","choices":[]}` + "\n\n" + `data: {"error":{"message":"cut"}}` + "\n\n",
	}
	for name, sse := range tests {
		t.Run(name, func(t *testing.T) {
			if got, err := StreamToCompletion([]byte(sse)); err == nil {
				t.Fatalf("want an error, got %s", got)
			}
		})
	}
}

func TestCompletionToStream(t *testing.T) {
	body := `{"id":"chatcmpl-9","object":"chat.completion","created":1732627400,"model":"gpt-4o","choices":[` +
		`{"index":0,"message":{"role":"assistant","content":"a < b && c"},"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8},"system_fingerprint":"fp_1"}`
	const head = `data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1732627400,"model":"gpt-4o","system_fingerprint":"fp_1",`
	tests := []struct {
		includeUsage bool
		want         string
	}{
		{false, head + `"choices":[{"index":0,"delta":{"role":"assistant","content":"a < b && c"},"logprobs":null,"finish_reason":null}]}` + "\n\n" +
			head + `"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}` + "\n\n" +
			"data: [DONE]\n\n"},
		{true, head + `"choices":[{"index":0,"delta":{"role":"assistant","content":"a < b && c"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n" +
			head + `"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}` + "\n\n" +
			head + `"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}` + "\n\n" +
			"data: [DONE]\n\n"},
	}
	for _, tt := range tests {
		t.Run("include_usage="+strconv.FormatBool(tt.includeUsage), func(t *testing.T) {
			got, err := CompletionToStream([]byte(body), tt.includeUsage)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	for name, bad := range map[string]string{
		"not json":     `{"id":`,
		"error body":   `{"error":{"message":"nope","type":"invalid_request_error"}}`,
		"chunk object": `{"object":"chat.completion.chunk","choices":[]}`,
		"array":        `[]`,
	} {
		if got, err := CompletionToStream([]byte(bad), true); err == nil {
			t.Errorf("%s: want an error, got %s", name, got)
		}
	}
}

// TestStreamCompletionRoundTripFixtures: stream -> completion -> stream ->
// completion gives the same completion, for the realistic upstream streams.
func TestStreamCompletionRoundTripFixtures(t *testing.T) {
	for _, f := range []string{"groq_stream.sse", "tool_calls_stream.sse"} {
		first, err := StreamToCompletion(readFixture(t, f))
		if err != nil {
			t.Fatal(err)
		}
		sse, err := CompletionToStream(first, true)
		if err != nil {
			t.Fatal(err)
		}
		second, err := StreamToCompletion(sse)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("%s: round trip changed the completion:\n%s\n%s", f, first, second)
		}
	}
}

// TestCompletionStreamRoundTripProperty: for random completions,
// CompletionToStream then StreamToCompletion returns the same completion
// (content, tool calls, finish reasons, usage, id, model and the rest).
func TestCompletionStreamRoundTripProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	pieces := []string{"", "Hello", " world", "\n", "<tag>", "&amp;", `"quoted"`, "\\", "ünïcødé ✓", "\u2028", "{\"a\":1}", "😀"}
	str := func() string {
		var b strings.Builder
		for range rng.IntN(5) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	opt := func() *string {
		if rng.IntN(3) == 0 {
			return nil
		}
		s := str()
		return &s
	}
	for i := range 500 {
		c := completion{
			ID:      "chatcmpl-" + strconv.Itoa(i),
			Object:  "chat.completion",
			Created: json.Number(strconv.Itoa(1_700_000_000 + i)),
			Model:   []string{"llama-3.3-70b-versatile", "gpt-4o-mini", "meta-llama/Llama-3.3-70B-Instruct:groq"}[i%3],
		}
		if rng.IntN(2) == 0 {
			c.Usage = json.RawMessage(`{"prompt_tokens":` + strconv.Itoa(rng.IntN(5000)) + `,"completion_tokens":7,"total_tokens":1.5e3,"queue_time":0.0123456789012345678}`)
		}
		if rng.IntN(2) == 0 {
			c.SystemFingerprint = new("fp_" + strconv.Itoa(i))
		}
		if rng.IntN(4) == 0 {
			c.ServiceTier = new("default")
		}
		c.Choices = []completionChoice{}
		for j := range rng.IntN(3) + 1 {
			m := message{Role: "assistant", Refusal: opt()}
			for k := range rng.IntN(3) {
				m.ToolCalls = append(m.ToolCalls, toolCall{ID: "call_" + strconv.Itoa(k), Type: "function", Function: toolFunction{Name: "fn" + strconv.Itoa(k), Arguments: str()}})
			}
			if content := str(); content != "" || (len(m.ToolCalls) == 0 && m.Refusal == nil) {
				m.Content = &content
			}
			if rng.IntN(4) == 0 {
				m.Reasoning = opt()
			}
			ch := completionChoice{Index: j, Message: m, FinishReason: new([]string{"stop", "length", "tool_calls", "content_filter"}[rng.IntN(4)])}
			if rng.IntN(5) == 0 {
				ch.Logprobs = json.RawMessage(`{"content":[{"token":"x","logprob":-0.5,"bytes":[120],"top_logprobs":[]}],"refusal":null}`)
			}
			c.Choices = append(c.Choices, ch)
		}
		want, err := marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		sse, err := CompletionToStream(want, true)
		if err != nil {
			t.Fatalf("case %d: %v\n%s", i, err, want)
		}
		got, err := StreamToCompletion(sse)
		if err != nil {
			t.Fatalf("case %d: %v\n%s", i, err, sse)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d: round trip changed the completion:\n got %s\nwant %s\nstream:\n%s", i, got, want, sse)
		}
	}
}

func FuzzStreamToCompletion(f *testing.F) {
	f.Add(readFixture(f, "groq_stream.sse"))
	f.Add(readFixture(f, "tool_calls_stream.sse"))
	f.Add([]byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{\"}}]}}]}\r\n\r\ndata: [DONE]\r\n\r\n"))
	f.Add([]byte(": c\nevent: error\ndata: x\n\n"))
	f.Add([]byte("data: {\"choices\":[{\"index\":3,\"delta\":{\"refusal\":\"no\"},\"logprobs\":{\"content\":[1]}}],\"x_groq\":{\"usage\":{}}}\n"))
	f.Fuzz(func(t *testing.T, sse []byte) {
		first, err := StreamToCompletion(sse)
		if err != nil {
			return
		}
		if !json.Valid(first) {
			t.Fatalf("invalid JSON output: %s", first)
		}
		// The output is a fixed point of the two conversions.
		stream, err := CompletionToStream(first, true)
		if err != nil {
			t.Fatalf("CompletionToStream of our own output: %v\n%s", err, first)
		}
		second, err := StreamToCompletion(stream)
		if err != nil {
			t.Fatalf("StreamToCompletion of our own stream: %v\n%s", err, stream)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("not a fixed point:\n%s\n%s", first, second)
		}
	})
}

func ExampleCompletionToStream() {
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1732627200,"model":"llama-3.1-8b-instant",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`)
	sse, _ := CompletionToStream(body, false)
	os.Stdout.Write(sse)
	back, _ := StreamToCompletion(sse)
	os.Stdout.Write(append(back, '\n'))
	// Output:
	// data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732627200,"model":"llama-3.1-8b-instant","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi!"},"logprobs":null,"finish_reason":null}]}
	//
	// data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732627200,"model":"llama-3.1-8b-instant","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}
	//
	// data: [DONE]
	//
	// {"id":"chatcmpl-1","object":"chat.completion","created":1732627200,"model":"llama-3.1-8b-instant","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"logprobs":null,"finish_reason":"stop"}],"usage":null}
}
