package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// transcriptStream is an OpenAI-like streaming transcription upstream
// (gpt-4o-transcribe with stream=true; Groq's Whisper does not stream):
// after reading the upload it answers server-sent events, data lines only,
// each a typed object
// (https://platform.openai.com/docs/api-reference/audio/transcript-text-delta-event
// and .../transcript-text-done-event): transcript.text.delta {"delta"},
// one per word here, then transcript.text.done {"text", "usage":
// {"type":"tokens","input_tokens","input_token_details","output_tokens",
// "total_tokens"}}; no [DONE]. cutAfter > 0 ends the body after that many
// deltas (a cut).
func transcriptStream(words []string, delay time.Duration, cutAfter int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseMultipartForm(64 << 20); err != nil || r.FormValue("stream") != "true" {
			audioErr(w, 400, "want a multipart upload with stream=true")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		fl.Flush()
		for i, word := range words {
			if cutAfter > 0 && i == cutAfter {
				return
			}
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
			fmt.Fprintf(w, "data: {\"type\":\"transcript.text.delta\",\"delta\":%q,\"logprobs\":[]}\n\n", word)
			fl.Flush()
		}
		fmt.Fprintf(w, "data: {\"type\":\"transcript.text.done\",\"text\":%q,\"logprobs\":[],\"usage\":{\"type\":\"tokens\",\"input_tokens\":14,\"input_token_details\":{\"text_tokens\":0,\"audio_tokens\":14},\"output_tokens\":%d,\"total_tokens\":%d}}\n\n",
			strings.Join(words, ""), len(words), 14+len(words))
		fl.Flush()
	}
}

// TestAudioTranscriptStreamIsLive: a transcription with stream=true is
// relayed event by event as the upstream sends them, byte for byte; an
// upstream that fails before its first event fails over invisibly; one
// that breaks off mid-stream ends the client's stream with an in-band
// error event, never a clean end; and its usage counts as tokens.
func TestAudioTranscriptStreamIsLive(t *testing.T) {
	words := []string{"I ", "see ", "skies ", "of ", "blue."}
	const delay = 150 * time.Millisecond
	down := newFake(t, func(w http.ResponseWriter, r *http.Request) { audioErr(w, 500, "Internal server error") })
	live := newFake(t, transcriptStream(words, delay, 0))
	p := startProxy(t, testConfig("",
		upstreamYAML("down", down.BaseURL(), "k1", 1, "    endpoints: [audio/transcriptions]\n"+whisperModels),
		upstreamYAML("live", live.BaseURL(), "k2", 2, "    endpoints: [audio/transcriptions]\n"+whisperModels)))
	body, ctype := audioForm(t, "", formPart{name: "file", value: string(wav(8000)), file: "a.wav"},
		formPart{name: "model", value: "whisper-1"}, formPart{name: "stream", value: "true"})

	resp := postUpload(t, p.URL+"/v1/audio/transcriptions", body, ctype, false)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("X-Upstream") != "live" {
		t.Fatalf("status %d, Content-Type %q, X-Upstream %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("X-Upstream"), readAll(t, resp))
	}
	evs, err := readEvents(t, resp)
	if err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	if len(evs) != len(words)+1 {
		t.Fatalf("%d events, want %d: %v", len(evs), len(words)+1, evs)
	}
	for i, w := range words {
		if want := fmt.Sprintf(`{"type":"transcript.text.delta","delta":%q,"logprobs":[]}`, w); evs[i].data != want {
			t.Errorf("event %d: %s, want %s", i, evs[i].data, want)
		}
	}
	if last := evs[len(evs)-1].data; !strings.Contains(last, `"type":"transcript.text.done"`) || !strings.Contains(last, `"text":"I see skies of blue."`) {
		t.Errorf("last event %s", last)
	}
	if spread, min := evs[len(words)-1].at.Sub(evs[0].at), time.Duration(len(words)-1)*delay*3/4; spread < min {
		t.Errorf("the first and last delta reached the client %v apart, want >= %v: the stream was buffered", spread, min)
	}
	// The relay counts the usage when it ends, just after the last write.
	tokens := 0.0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if tokens = scrape(t, p.URL, `switchyard_tokens_total{upstream="live",kind="completion"}`); tokens == float64(len(words)) {
			break
		}
	}
	if tokens != float64(len(words)) {
		t.Errorf("completion tokens of live = %v, want %d (transcript.text.done's usage)", tokens, len(words))
	}

	// Cut after two deltas: the client gets them, then an error event.
	live.SetHandler(transcriptStream(words, 20*time.Millisecond, 2))
	resp = postUpload(t, p.URL+"/v1/audio/transcriptions", body, ctype, false)
	raw, _ := io.ReadAll(resp.Body) // the body is aborted after the error event
	resp.Body.Close()
	got := string(raw)
	if !strings.Contains(got, `"delta":"see "`) || !strings.Contains(got, `"type":"error"`) || !strings.Contains(got, "stream_interrupted") ||
		strings.Contains(got, `"type":"transcript.text.done"`) || strings.Contains(got, "sequence_number") {
		t.Errorf("a cut transcript stream: %q", got)
	}

	// X-Stream-Commit: complete reads the whole stream first: the same
	// cut is then a failure before the commit, answered as an error, with
	// no partial stream.
	resp = postUpload(t, p.URL+"/v1/audio/transcriptions", body, ctype, false, "X-Stream-Commit", "complete")
	got = string(readAll(t, resp))
	if _, _, code := apiErr(t, []byte(got)); resp.StatusCode != 502 || code != "upstream_error" || strings.Contains(got, "delta") {
		t.Errorf("a cut transcript stream in complete mode: %d %q", resp.StatusCode, got)
	}
}
