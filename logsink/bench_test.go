package logsink

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"testing"
)

// BenchmarkRequestLine logs a request-sized JSON line from parallel
// goroutines into a pipe that a cat process drains (as a container
// runtime's log driver drains stderr), written directly or through a
// Writer.
//
//	go test -run '^$' -bench RequestLine ./logsink
func BenchmarkRequestLine(b *testing.B) {
	for _, mode := range []string{"direct", "logsink"} {
		b.Run(mode, func(b *testing.B) {
			r, w, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			cat := exec.Command("cat")
			cat.Stdin = r
			if err := cat.Start(); err != nil {
				b.Skip("no cat to drain the pipe:", err)
			}
			r.Close()
			var out io.Writer = w
			var sink *Writer
			if mode == "logsink" {
				sink = New(w)
				out = sink
			}
			log := slog.New(slog.NewJSONHandler(out, nil))
			attrs := []slog.Attr{slog.String("request_id", "sy-1a2b3c-42"), slog.String("route", "chat"), slog.Int("status", 200),
				slog.String("model", "llama-3.1-8b-instant"), slog.Bool("stream", false), slog.String("cache", "BYPASS"),
				slog.String("upstream", "groq"), slog.Int64("duration_us", 1234), slog.String("ranked", "groq=0.912,hf=0.871"),
				slog.String("tried", "groq:ok")}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
				}
			})
			b.StopTimer()
			if sink != nil {
				_ = sink.Close()
			}
			w.Close()
			_ = cat.Wait()
		})
	}
}
