package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"switchyard/logsink"
	"switchyard/openai"
	"switchyard/policy"
	"switchyard/verdict"
)

// lineCall is a request as the log sees it at its end.
func lineCall(model string) *call {
	return &call{
		route: jsonRoutes["chat/completions"], rid: "5125f147552f-42", start: time.Now().Add(-1234 * time.Microsecond),
		req:    openai.Request{Model: model, Stream: true},
		xcache: cacheMiss, upstream: "groq_1",
		ranked: []policy.Candidate{{Name: "groq_1", Score: 0.912}, {Name: "hf_1", Score: 0.871}},
		tried:  []attempt{{upstream: "hf_1", breakerOpen: true}, {upstream: "groq_1", outcome: verdict.OK}},
		usage:  openai.Usage{PromptTokens: 12, CompletionTokens: 5},
	}
}

// TestRequestLineMatchesSlog: the proxy's own encoding of the request line
// has the fields, values and order of slog's JSON handler, and a hostile
// model name cannot forge a second line or field.
func TestRequestLineMatchesSlog(t *testing.T) {
	for _, model := range []string{"llama-3.3-70b", "m\n{\"level\":\"ERROR\",\"msg\":\"forged\"}\x00\u2028\xff", strings.Repeat("x", 300)} {
		c := lineCall(model)
		var want bytes.Buffer
		s := &Server{log: slog.New(slog.NewJSONHandler(&want, nil))}
		s.logRequest(c, 200, "upstream x: \"cut\"\n")
		var got bytes.Buffer
		s.logOut = &got
		s.logRequest(c, 200, "upstream x: \"cut\"\n")
		if strings.Count(got.String(), "\n") != 1 || !strings.HasSuffix(got.String(), "\n") {
			t.Fatalf("not one line: %q", got.String())
		}
		var w, g map[string]any
		if err := json.Unmarshal(want.Bytes(), &w); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(got.Bytes(), &g); err != nil {
			t.Fatalf("%v: %s", err, got.String())
		}
		delete(w, "time")
		delete(g, "time")
		delete(w, "duration_us") // read twice: may differ by a microsecond
		delete(g, "duration_us")
		wb, _ := json.Marshal(w)
		gb, _ := json.Marshal(g)
		if string(wb) != string(gb) {
			t.Errorf("fields differ:\n slog %s\n ours %s", wb, gb)
		}
		if keys(want.String()) != keys(got.String()) {
			t.Errorf("field order differs:\n slog %s\n ours %s", keys(want.String()), keys(got.String()))
		}
	}
}

// keys lists a JSON object's member names in order.
func keys(line string) string {
	dec := json.NewDecoder(strings.NewReader(line))
	_, _ = dec.Token()
	var names []string
	for dec.More() {
		k, _ := dec.Token()
		names = append(names, k.(string))
		var v json.RawMessage
		_ = dec.Decode(&v)
	}
	return strings.Join(names, ",")
}

// BenchmarkRequestLogLine is the request line's cost, slog's JSON handler
// against the proxy's own encoding, written to io.Discard and through a
// logsink.Writer into a pipe that cat drains (as a container's log driver
// drains stderr).
//
//	go test -run '^$' -bench RequestLogLine ./proxy
func BenchmarkRequestLogLine(b *testing.B) {
	for _, out := range []string{"discard", "pipe"} {
		for _, enc := range []string{"slog", "append"} {
			b.Run(out+"/"+enc, func(b *testing.B) {
				var w io.Writer = io.Discard
				if out == "pipe" {
					r, pw, err := os.Pipe()
					if err != nil {
						b.Fatal(err)
					}
					cat := exec.Command("cat")
					cat.Stdin = r
					cat.Stdout = io.Discard
					if err := cat.Start(); err != nil {
						b.Skip("no cat:", err)
					}
					r.Close()
					sink := logsink.New(pw)
					w = sink
					defer func() { _ = sink.Close(); pw.Close(); _ = cat.Wait() }()
				}
				s := &Server{log: slog.New(slog.NewJSONHandler(w, nil))}
				if enc == "append" {
					s.logOut = w
				}
				c := lineCall("llama-3.3-70b")
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						s.logRequest(c, 200, "")
					}
				})
				_ = context.Background()
			})
		}
	}
}
