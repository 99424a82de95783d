package sse

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// readAll calls Next until it fails, returning copies of the events, the
// bytes returned with the error (the partial event) and the error. It fails
// the test if Next does not stop within len(input)+2 calls.
func readAll(t testing.TB, r io.Reader, max, inputLen int) (events []string, partial []byte, err error) {
	t.Helper()
	sr := NewReader(r, max)
	for range inputLen + 2 {
		ev, err := sr.Next()
		if err != nil {
			return events, bytes.Clone(ev), err
		}
		if len(ev) == 0 {
			t.Fatalf("Next returned an empty event with no error")
		}
		events = append(events, string(ev))
	}
	t.Fatalf("Next did not stop after %d calls on %d bytes", inputLen+2, inputLen)
	return nil, nil, nil
}

// readers wraps an input in the readers a body can look like: whole, one
// byte per Read, and data returned together with io.EOF.
var readers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"plain", func(r io.Reader) io.Reader { return r }},
	{"one-byte", iotest.OneByteReader},
	{"data-eof", iotest.DataErrReader},
	{"half", iotest.HalfReader},
}

func TestNext(t *testing.T) {
	long := "data: " + strings.Repeat("x", 5000) + "\n"         // over bufio's 4096
	exact := "data: " + strings.Repeat("y", 4096-len("data: ")) // fills the buffer without '\n'
	exactNL := "data: " + strings.Repeat("z", 4095-len("data: ")) + "\n"
	crSplit := "data: " + strings.Repeat("w", 4095-len("data: ")) + "\r\n" // '\r' is the buffer's last byte
	cases := []struct {
		name    string
		in      string
		max     int
		want    []string
		wantErr error
		partial string // bytes returned with wantErr
	}{
		{name: "empty", in: "", wantErr: io.EOF},
		{name: "LF", in: "data: a\n\n", want: []string{"data: a\n\n"}, wantErr: io.EOF},
		{name: "two events", in: "data: a\n\ndata: b\n\n", want: []string{"data: a\n\n", "data: b\n\n"}, wantErr: io.EOF},
		{name: "CRLF", in: "data: a\r\n\r\ndata: b\r\n\r\n", want: []string{"data: a\r\n\r\n", "data: b\r\n\r\n"}, wantErr: io.EOF},
		{name: "CRLF lines LF blank", in: "data: a\r\n\ndata: b\n\r\n", want: []string{"data: a\r\n\n", "data: b\n\r\n"}, wantErr: io.EOF},
		{name: "multiple data lines", in: "data: a\ndata: b\ndata: c\n\ndata: d\n\n", want: []string{"data: a\ndata: b\ndata: c\n\n", "data: d\n\n"}, wantErr: io.EOF},
		{name: "keep-alive comments", in: ": ping\n\ndata: a\n\n: ping\n\n", want: []string{": ping\n\n", "data: a\n\n", ": ping\n\n"}, wantErr: io.EOF},
		{name: "comment inside event", in: "data: a\n: note\ndata: b\n\n", want: []string{"data: a\n: note\ndata: b\n\n"}, wantErr: io.EOF},
		{name: "event field", in: "event: error\ndata: {\"error\":{}}\n\n", want: []string{"event: error\ndata: {\"error\":{}}\n\n"}, wantErr: io.EOF},
		{name: "id and retry fields", in: "id: 7\nretry: 1000\ndata: a\n\n", want: []string{"id: 7\nretry: 1000\ndata: a\n\n"}, wantErr: io.EOF},
		{name: "leading stray blank line", in: "\ndata: a\n\n", want: []string{"\ndata: a\n\n"}, wantErr: io.EOF},
		{name: "stray blank lines between events", in: "data: a\n\n\n\n\r\ndata: b\n\n", want: []string{"data: a\n\n", "\n\n\r\ndata: b\n\n"}, wantErr: io.EOF},
		{name: "trailing blank lines dropped", in: "data: a\n\n\n\r\n\n", want: []string{"data: a\n\n"}, wantErr: io.EOF},
		{name: "trailing lone CR dropped", in: "data: a\n\n\r", want: []string{"data: a\n\n"}, wantErr: io.EOF},
		{name: "only blank lines", in: "\n\r\n\n", wantErr: io.EOF},
		{name: "long line then more lines", in: long + "data: b\n\ndata: c\n\n", want: []string{long + "data: b\n\n", "data: c\n\n"}, wantErr: io.EOF},
		{name: "long line after a short one", in: "event: x\n" + long + long + "\n", want: []string{"event: x\n" + long + long + "\n"}, wantErr: io.EOF},
		{name: "line fills the buffer, newline next", in: exact + "\n\ndata: b\n\n", want: []string{exact + "\n\n", "data: b\n\n"}, wantErr: io.EOF},
		{name: "line with newline fills the buffer", in: exactNL + "\ndata: b\n\n", want: []string{exactNL + "\n", "data: b\n\n"}, wantErr: io.EOF},
		{name: "CRLF split at the buffer end", in: crSplit + "\r\n", want: []string{crSplit + "\r\n"}, wantErr: io.EOF},
		{name: "event at the limit", in: "data: abc\n\n", max: 11, want: []string{"data: abc\n\n"}, wantErr: io.EOF},
		{name: "event over the limit", in: "data: a\n\ndata: abcd\n\n", max: 11, want: []string{"data: a\n\n"}, wantErr: ErrEventTooLarge},
		{name: "lines over the limit together", in: "data: a\ndata: b\ndata: c\n\n", max: 20, wantErr: ErrEventTooLarge},
		{name: "long line over the limit", in: long + "\n", max: 4200, wantErr: ErrEventTooLarge},
		{name: "cut mid-line", in: "data: a\n\ndata: {\"x", want: []string{"data: a\n\n"}, wantErr: ErrTruncated, partial: "data: {\"x"},
		{name: "cut mid-line after stray blank", in: "data: a\n\n\ndata", want: []string{"data: a\n\n"}, wantErr: ErrTruncated, partial: "\ndata"},
		{name: "cut inside a long line", in: long[:4500], wantErr: ErrTruncated, partial: long[:4500]},
		{name: "cut after CR", in: "data: a\r", wantErr: ErrTruncated, partial: "data: a\r"},
		{name: "cut after DONE line", in: "data: a\n\ndata: [DONE]\n", want: []string{"data: a\n\n", "data: [DONE]\n\n"}, wantErr: io.EOF},
		{name: "cut after CRLF line", in: "data: [DONE]\r\n", want: []string{"data: [DONE]\r\n\n"}, wantErr: io.EOF},
		{name: "cut after two lines", in: "data: a\ndata: b\n", want: []string{"data: a\ndata: b\n\n"}, wantErr: io.EOF},
	}
	for _, tc := range cases {
		for _, rd := range readers {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				events, partial, err := readAll(t, rd.wrap(strings.NewReader(tc.in)), tc.max, len(tc.in))
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error = %v, want %v", err, tc.wantErr)
				}
				if len(events) != len(tc.want) {
					t.Fatalf("events = %q, want %q", events, tc.want)
				}
				for i := range events {
					if events[i] != tc.want[i] {
						t.Errorf("event %d = %q, want %q", i, events[i], tc.want[i])
					}
				}
				if string(partial) != tc.partial {
					t.Errorf("bytes with the error = %q, want %q", partial, tc.partial)
				}
				if err == io.EOF && len(partial) != 0 {
					t.Errorf("io.EOF came with bytes %q", partial)
				}
				if tc.wantErr == io.EOF || tc.wantErr == ErrTruncated {
					if msg := checkConcat([]byte(tc.in), events, partial, err); msg != "" {
						t.Error(msg)
					}
				}
			})
		}
	}
}

// checkConcat checks that the events (and the partial bytes of a cut)
// concatenate back to the input: exactly, except for blank lines after the
// last event (dropped) and the blank line appended to an event cut right
// after a complete line.
func checkConcat(in []byte, events []string, partial []byte, err error) string {
	var out []byte
	for _, ev := range events {
		out = append(out, ev...)
	}
	switch {
	case errors.Is(err, ErrTruncated):
		if got := append(out, partial...); !bytes.Equal(got, in) {
			return "events + partial = " + quote(got) + ", want the input " + quote(in)
		}
	case err == io.EOF:
		if bytes.HasPrefix(in, out) && onlyBlank(in[len(out):]) {
			return ""
		}
		// A final cut: the last event got "\n" appended.
		if len(out) > 0 && out[len(out)-1] == '\n' && bytes.Equal(out[:len(out)-1], in) {
			return ""
		}
		return "events concatenate to " + quote(out) + ", want the input " + quote(in)
	}
	return ""
}

// hasContent reports whether ev has a line other than "\n" or "\r\n" (the
// Reader's blank lines; a bare "\r" does not end a line).
func hasContent(ev string) bool {
	for line := range strings.Lines(ev) {
		if line != "\n" && line != "\r\n" {
			return true
		}
	}
	return false
}

// quote quotes b for a failure message, shortened to its first 200 bytes.
func quote(b []byte) string {
	if len(b) > 200 {
		return strconv.Quote(string(b[:200])) + "…"
	}
	return strconv.Quote(string(b))
}

// TestNextReadError checks that a read error other than EOF is returned
// with the bytes read so far, and that it is not mistaken for a cut.
func TestNextReadError(t *testing.T) {
	boom := errors.New("connection reset")
	in := io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(boom))
	events, partial, err := readAll(t, in, 0, 100)
	if !errors.Is(err, boom) || errors.Is(err, ErrTruncated) {
		t.Fatalf("error = %v, want %v", err, boom)
	}
	if len(events) != 1 || events[0] != "data: a\n\n" || string(partial) != "data: b" {
		t.Errorf("events, partial = %q, %q", events, partial)
	}
}

func TestNextErrEventTooLargeMessage(t *testing.T) {
	_, err := NewReader(strings.NewReader(strings.Repeat("data: x\n", 10)+"\n"), 32).Next()
	if !errors.Is(err, ErrEventTooLarge) || !strings.Contains(err.Error(), "32") {
		t.Errorf("error = %v, want ErrEventTooLarge naming the limit", err)
	}
}

func TestNextDefaultMax(t *testing.T) {
	for _, max := range []int{0, -1} {
		r := NewReader(strings.NewReader(""), max)
		if r.max != DefaultMaxEventBytes {
			t.Errorf("NewReader(_, %d).max = %d, want %d", max, r.max, DefaultMaxEventBytes)
		}
	}
	// An event just under the default limit is fine.
	big := "data: " + strings.Repeat("x", DefaultMaxEventBytes-len("data: \n\n")) + "\n\n"
	events, _, err := readAll(t, strings.NewReader(big), 0, len(big))
	if err != io.EOF || len(events) != 1 || len(events[0]) != DefaultMaxEventBytes {
		t.Errorf("4 MiB event: %d events, error %v", len(events), err)
	}
}

func TestData(t *testing.T) {
	cases := []struct {
		name   string
		event  string
		want   string
		wantOK bool
	}{
		{"single line", "data: {\"a\":1}\n\n", `{"a":1}`, true},
		{"no space", "data:x\n\n", "x", true},
		{"two spaces keep one", "data:  x\n\n", " x", true},
		{"trailing space kept", "data: x \n\n", "x ", true},
		{"CRLF", "data: x\r\n\r\n", "x", true},
		{"multi-line joined", "data: a\ndata: b\n\n", "a\nb", true},
		{"three lines", "data: a\ndata:b\ndata:  c\n\n", "a\nb\n c", true},
		{"empty middle line", "data: a\ndata\ndata: c\n\n", "a\n\nc", true},
		{"bare field name", "data\n\n", "", true},
		{"empty value", "data:\n\n", "", true},
		{"datax ignored", "datax: a\n\n", "", false},
		{"datax next to data", "datax: a\ndata: b\n\n", "b", true},
		{"comment", ": ping\n\n", "", false},
		{"comment looking like data", ": data: a\n\n", "", false},
		{"leading space is no field", " data: a\n\n", "", false},
		{"field names are case-sensitive", "Data: a\n\n", "", false},
		{"other fields ignored", "id: 1\nevent: x\nretry: 5\ndata: {}\n\n", "{}", true},
		{"event only", "event: ping\n\n", "", false},
		{"stray blank lines first", "\n\r\ndata: a\n\n", "a", true},
		{"partial event", "data: a", "a", true},
		{"done", "data: [DONE]\n\n", "[DONE]", true},
		{"empty", "", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Data([]byte(tc.event))
			if string(got) != tc.want || ok != tc.wantOK {
				t.Errorf("Data(%q) = %q, %v; want %q, %v", tc.event, got, ok, tc.want, tc.wantOK)
			}
			if !ok && got != nil {
				t.Errorf("Data(%q) returned %q with ok=false", tc.event, got)
			}
		})
	}
}

func TestDataSingleLineNoAlloc(t *testing.T) {
	ev := []byte("event: message\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\r\n\r\n")
	var data []byte
	allocs := testing.AllocsPerRun(100, func() { data, _ = Data(ev) })
	if allocs != 0 {
		t.Errorf("Data allocates %v times for a one-line event, want 0", allocs)
	}
	// The result is a sub-slice of the event.
	i := bytes.Index(ev, data)
	if i < 0 || &ev[i] != &data[0] {
		t.Errorf("Data returned a copy, want a sub-slice")
	}
}

func TestEventType(t *testing.T) {
	cases := []struct {
		event, want string
		none        bool
	}{
		{event: "event: error\ndata: {}\n\n", want: "error"},
		{event: "event:error\n\n", want: "error"},
		{event: "event: error\r\n\r\n", want: "error"},
		{event: "data: x\nevent: late\n\n", want: "late"},
		{event: "event: first\nevent: second\n\n", want: "first"},
		{event: "event:\n\n", want: ""},
		{event: "data: x\n\n", none: true},
		{event: ": event: x\n\n", none: true},
		{event: "events: x\n\n", none: true},
		{event: "", none: true},
	}
	for _, tc := range cases {
		got := EventType([]byte(tc.event))
		if tc.none {
			if got != nil {
				t.Errorf("EventType(%q) = %q, want nil", tc.event, got)
			}
			continue
		}
		if got == nil || string(got) != tc.want {
			t.Errorf("EventType(%q) = %q, want %q", tc.event, got, tc.want)
		}
	}
}

func TestIsDone(t *testing.T) {
	cases := map[string]bool{
		"[DONE]":            true,
		"[DONE] ":           true, // openai-python checks the prefix
		"[DONE]\n":          true,
		"":                  false,
		"[DONE":             false,
		" [DONE]":           false,
		"[done]":            false,
		`{"text":"[DONE]"}`: false,
	}
	for in, want := range cases {
		if got := IsDone([]byte(in)); got != want {
			t.Errorf("IsDone(%q) = %v, want %v", in, got, want)
		}
	}
}

// Realistic streams, used as fuzz seeds and in TestStreams.
var seedStreams = []string{
	// Groq: role chunk with x_groq.id, content, finish, x_groq.usage, [DONE].
	`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732627200,"model":"llama-3.3-70b-versatile","system_fingerprint":"fp_c0cfa69934","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"x_groq":{"id":"req_01jdk8w3x5f0s9yq2c7v4n6m8b"}}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732627200,"model":"llama-3.3-70b-versatile","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732627200,"model":"llama-3.3-70b-versatile","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"x_groq":{"id":"req_01jdk8w3x5f0s9yq2c7v4n6m8b","usage":{"queue_time":0.02,"prompt_tokens":12,"prompt_time":0.001,"completion_tokens":2,"completion_time":0.004,"total_tokens":14,"total_time":0.005}}}

data: [DONE]

`,
	// OpenAI with include_usage: the usage chunk has "choices":[].
	"data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n" +
		"data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n" +
		"data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\n" +
		"data: [DONE]\n\n",
	// CRLF framing with keep-alive comments.
	": keep-alive\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n: keep-alive\r\n\r\ndata: [DONE]\r\n\r\n",
	// vLLM in-band error inside a 200 stream.
	"data: {\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\ndata: {\"error\":{\"message\":\"CUDA out of memory\",\"type\":\"InternalServerError\",\"code\":500}}\n\n",
	// event: error framing.
	"event: error\ndata: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
	// Server closing right after the [DONE] line.
	"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n",
	// Cut mid-event.
	"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"choi",
	// Tool-call deltas with a multi-line data field.
	"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n" +
		"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]}}]}\ndata: \n\n",
}

// TestStreams checks the whole pipeline on realistic streams: events
// concatenate back to the stream, and each event's data is valid.
func TestStreams(t *testing.T) {
	for i, s := range seedStreams {
		events, partial, err := readAll(t, strings.NewReader(s), 0, len(s))
		if err != io.EOF && !errors.Is(err, ErrTruncated) {
			t.Errorf("stream %d: error %v", i, err)
		}
		if msg := checkConcat([]byte(s), events, partial, err); msg != "" {
			t.Errorf("stream %d: %s", i, msg)
		}
		for _, ev := range events {
			if d, ok := Data([]byte(ev)); ok && bytes.Contains(d, []byte("\n\n")) {
				t.Errorf("stream %d: data %q spans events", i, d)
			}
		}
	}
}

func FuzzReader(f *testing.F) {
	for _, s := range seedStreams {
		f.Add([]byte(s), uint16(0))
		f.Add([]byte(s), uint16(64))
	}
	f.Add([]byte("\n\n\ndata: a\n\n\n"), uint16(0))
	f.Add([]byte("data: "+strings.Repeat("x", 5000)+"\ndata: b\n\n"), uint16(0))
	f.Add([]byte("data: a\r"), uint16(3))
	f.Fuzz(func(t *testing.T, in []byte, max uint16) {
		events, partial, err := readAll(t, iotest.HalfReader(bytes.NewReader(in)), int(max), len(in))
		for _, ev := range events {
			if !hasContent(ev) {
				t.Errorf("event %q has only blank lines", ev)
			}
			Data([]byte(ev))
			EventType([]byte(ev))
			if max > 0 && len(ev) > int(max)+1 { // +1: the blank line appended at a cut
				t.Errorf("event of %d bytes over the limit %d", len(ev), max)
			}
		}
		switch {
		case err == io.EOF, errors.Is(err, ErrTruncated):
			if msg := checkConcat(in, events, partial, err); msg != "" {
				t.Error(msg)
			}
		case errors.Is(err, ErrEventTooLarge):
			if max == 0 && len(in) <= DefaultMaxEventBytes {
				t.Errorf("ErrEventTooLarge on %d bytes with the default limit", len(in))
			}
		default:
			t.Errorf("unexpected error %v", err)
		}
	})
}

// onceReader returns its bytes in one Read, then reports a read it should
// not have had: Ready must only promise events Next returns from the buffer.
type onceReader struct {
	b      []byte
	extra  bool // read again after the bytes
	served bool
}

func (r *onceReader) Read(p []byte) (int, error) {
	if r.served {
		r.extra = true
		return 0, io.EOF
	}
	r.served = true
	return copy(p, r.b), nil
}

func TestReady(t *testing.T) {
	for _, tc := range []struct {
		rest string // what follows the first event in the same read
		want bool
	}{
		{"data: b\n\n", true},
		{"\n\n\ndata: b\n\n", true},
		{"data: b\r\n\r\n", true},
		{": keep-alive\n\n", true},
		{"data: b\n", false},
		{"data: b", false},
		{"\n\n\n", false},
		{"\r\n\r\n", false},
		{"", false},
	} {
		src := &onceReader{b: []byte("data: a\n\n" + tc.rest)}
		r := NewReader(src, 0)
		if ev, err := r.Next(); err != nil || string(ev) != "data: a\n\n" {
			t.Fatalf("%q: first Next = %q, %v", tc.rest, ev, err)
		}
		if got := r.Ready(); got != tc.want {
			t.Errorf("%q: Ready() = %v, want %v", tc.rest, got, tc.want)
		}
		if tc.want {
			if _, err := r.Next(); err != nil || src.extra {
				t.Errorf("%q: Ready promised a buffered event, but Next read again (err %v)", tc.rest, err)
			}
		}
	}
}
