package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSSEVariantsRelayedIntact: the SSE dialects servers write — CRLF line
// ends, comments and keep-alives, id/retry/event fields, data without the
// space, multi-line data, extra blank lines, events cut across TCP writes
// — reach the client byte for byte.
func TestSSEVariantsRelayedIntact(t *testing.T) {
	chunk := func(content, finish string) string {
		fr := "null"
		if finish != "" {
			fr = `"` + finish + `"`
		}
		return `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"` + content + `"},"finish_reason":` + fr + `}]}`
	}
	pieces := []string{
		": keep-alive\r\n\r\n",
		"id: 1\r\nretry: 1000\r\ndata: " + chunk("Hel", "") + "\r\n\r\n",
		"data:" + chunk("lo", "") + "\n\n",
		"\n\n", // stray blank lines between events
		"event: message\ndata: " + chunk(" wor", "")[:40],
		chunk(" wor", "")[40:] + "\n\n", // an event cut across two writes
		": ping\n\n",
		"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\n" +
			"data: \"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ld\"},\"finish_reason\":null}]}\n\n", // multi-line data
		"data: " + chunk("", "stop") + "\r\n\r\n",
		"data: [DONE]\n\n",
	}
	want := strings.Join(pieces, "")
	up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		for _, p := range pieces {
			_, _ = w.Write([]byte(p))
			fl.Flush()
			time.Sleep(5 * time.Millisecond)
		}
	})
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	// stream_options is the client's own: nothing to strip from its stream.
	resp := post(t, p.URL, `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, noStore...)
	got := string(readAll(t, resp))
	// A stream starts at its first event: blank lines before it are the
	// only bytes a relay may drop. Everything else is the upstream's.
	if got != strings.TrimLeft(want, "\r\n") && got != want {
		t.Errorf("stream changed on the way:\n got %q\nwant %q", got, want)
	}
}
