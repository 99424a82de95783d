package sdk

import (
	"bytes"
	bin "encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// The fake's speech-to-text endpoints, Groq-like
// (https://console.groq.com/docs/speech-to-text and
// https://console.groq.com/docs/api-reference#audio-transcription): a
// multipart form with the file and a Groq whisper model; the answer is
// {"text":…,"x_groq":{"id":…}}, or with stream=true OpenAI's
// transcript.text.delta / transcript.text.done events
// (https://platform.openai.com/docs/api-reference/audio/transcript-text-delta-event).
// The text says which endpoint, model and how many audio bytes it got.
func init() {
	fakeRoutes["/v1/audio/transcriptions"] = fakeAudio
	fakeRoutes["/v1/audio/translations"] = fakeAudio
}

// audioUpstreamModel is what the proxy's whisper-1 alias is sent as.
const audioUpstreamModel = "whisper-large-v3-turbo"

func fakeAudio(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+upstreamKey {
		writeErr(w, 401, "Invalid API Key", "invalid_request_error", "invalid_api_key")
		return
	}
	if err := r.ParseMultipartForm(64 << 20); err != nil {
		writeErr(w, 400, "could not parse multipart form", "invalid_request_error", "")
		return
	}
	model := r.FormValue("model")
	if model != "whisper-large-v3" && model != audioUpstreamModel {
		writeErr(w, 404, fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model), "invalid_request_error", "model_not_found")
		return
	}
	f, _, err := r.FormFile("file")
	if err != nil {
		writeErr(w, 400, "file is required", "invalid_request_error", "")
		return
	}
	audio, _ := io.ReadAll(f)
	f.Close()
	if len(audio) < 44 || string(audio[:4]) != "RIFF" || string(audio[8:12]) != "WAVE" {
		writeErr(w, 400, "could not process file - is it a valid media file?", "invalid_request_error", "")
		return
	}
	text := fmt.Sprintf("%s by %s, %d bytes", strings.TrimPrefix(r.URL.Path, "/v1/audio/"), model, len(audio))
	groqHeaders(w)
	if r.FormValue("stream") == "true" {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range strings.Fields(text) {
			fmt.Fprintf(w, "data: {\"type\":\"transcript.text.delta\",\"delta\":%q}\n\n", word+" ")
		}
		fmt.Fprintf(w, "data: {\"type\":\"transcript.text.done\",\"text\":%q}\n\n", text)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"text":%q,"x_groq":{"id":"req_audio_01"}}`, text)
}

// wavFile returns a valid RIFF/WAVE file: 16-bit mono PCM at 16 kHz, a
// 440 Hz tone of n samples.
func wavFile(n int) []byte {
	var b bytes.Buffer
	le := func(v any) { _ = bin.Write(&b, bin.LittleEndian, v) }
	b.WriteString("RIFF")
	le(uint32(36 + 2*n))
	b.WriteString("WAVEfmt ")
	le([]any{uint32(16), uint16(1), uint16(1), uint32(16000), uint32(32000), uint16(2), uint16(16)})
	b.WriteString("data")
	le(uint32(2 * n))
	for i := range n {
		le(int16(8000 * math.Sin(2*math.Pi*440*float64(i)/16000)))
	}
	return b.Bytes()
}

func TestGoSDKAudioTranscription(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	audio := wavFile(16000) // one second
	var raw *http.Response
	resp, err := client.Audio.Transcriptions.New(ctx(t), openai.AudioTranscriptionNewParams{
		File:     openai.File(bytes.NewReader(audio), "speech.wav", "audio/wav"),
		Model:    openai.AudioModelWhisper1,
		Language: openai.String("en"),
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("Audio.Transcriptions.New: %v", err)
	}
	if want := fmt.Sprintf("transcriptions by %s, %d bytes", audioUpstreamModel, len(audio)); resp.Text != want {
		t.Errorf("text = %q, want %q", resp.Text, want)
	}
	if got := raw.Header.Get("X-Upstream"); got != upstreamName {
		t.Errorf("X-Upstream = %q, want %q", got, upstreamName)
	}
}

func TestGoSDKAudioTranslation(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	audio := wavFile(8000)
	resp, err := client.Audio.Translations.New(ctx(t), openai.AudioTranslationNewParams{
		File:  openai.File(bytes.NewReader(audio), "fr.wav", "audio/wav"),
		Model: openai.AudioModelWhisper1,
	})
	if err != nil {
		t.Fatalf("Audio.Translations.New: %v", err)
	}
	if want := fmt.Sprintf("translations by %s, %d bytes", audioUpstreamModel, len(audio)); resp.Text != want {
		t.Errorf("text = %q, want %q", resp.Text, want)
	}
}

// TestGoSDKAudioTranscriptionStream: stream=true is forwarded, and the
// upstream's events, relayed as they arrive, are the SDK's stream.
func TestGoSDKAudioTranscriptionStream(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	audio := wavFile(4000)
	stream := client.Audio.Transcriptions.NewStreaming(ctx(t), openai.AudioTranscriptionNewParams{
		File:  openai.File(bytes.NewReader(audio), "speech.wav", "audio/wav"),
		Model: openai.AudioModelWhisper1,
	})
	defer stream.Close()
	var deltas strings.Builder
	var done string
	for stream.Next() {
		switch ev := stream.Current(); ev.Type {
		case "transcript.text.delta":
			deltas.WriteString(ev.Delta)
		case "transcript.text.done":
			done = ev.Text
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	want := fmt.Sprintf("transcriptions by %s, %d bytes", audioUpstreamModel, len(audio))
	if done != want || strings.TrimSpace(deltas.String()) != want {
		t.Errorf("deltas %q, done %q; want %q", deltas.String(), done, want)
	}
}

// TestGoSDKAudioTooLarge: an upload over max_upload_bytes (25 MiB) is an
// APIError 413 the SDK reads, not a connection error.
func TestGoSDKAudioTooLarge(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	audio := wavFile(13 << 20) // 26 MiB
	_, err := client.Audio.Transcriptions.New(ctx(t), openai.AudioTranscriptionNewParams{
		File:  openai.File(bytes.NewReader(audio), "long.wav", "audio/wav"),
		Model: openai.AudioModelWhisper1,
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v (%T), want *openai.Error", err, err)
	}
	if apiErr.StatusCode != 413 || apiErr.Code != "request_too_large" || apiErr.Param != "file" {
		t.Errorf("StatusCode %d, code %q, param %q; want 413 request_too_large file: %s", apiErr.StatusCode, apiErr.Code, apiErr.Param, apiErr.RawJSON())
	}
}
