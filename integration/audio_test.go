package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	bin "encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"switchyard/integration/testproc"
)

// groqAudio is a Groq-like speech-to-text upstream, after
// https://console.groq.com/docs/speech-to-text and the API reference
// (https://console.groq.com/docs/api-reference#audio-transcription):
//   - POST …/audio/transcriptions and …/audio/translations take
//     multipart/form-data: file (the audio), model, and optional language,
//     prompt, response_format, temperature, timestamp_granularities[];
//   - models: whisper-large-v3 and whisper-large-v3-turbo transcribe; only
//     whisper-large-v3 translates (the docs' model table), anything else is
//     a 400 invalid_request_error (the message here is ours);
//   - response_format json (the default) answers {"text":…,"x_groq":{"id":…}},
//     verbose_json adds task, language, duration and segments, text
//     answers the text as text/plain;
//   - Groq answers 400 to srt and vtt; this fake answers vtt as OpenAI does
//     (text/vtt), so that another Content-Type is relayed too;
//   - stream=true (OpenAI's gpt-4o-transcribe, not Groq:
//     https://platform.openai.com/docs/api-reference/audio/transcript-text-delta-event)
//     answers transcript.text.delta events, then transcript.text.done.
//
// The text names the language field and the file's size, so a test can
// tell which request an answer is for.
func groqAudio(text string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseMultipartForm(64 << 20); err != nil {
			audioErr(w, 400, "could not parse multipart form: "+err.Error())
			return
		}
		model := r.FormValue("model")
		translate := strings.HasSuffix(r.URL.Path, "/translations")
		switch {
		case model != "whisper-large-v3" && model != "whisper-large-v3-turbo":
			audioErr(w, 404, fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model))
			return
		case translate && model != "whisper-large-v3":
			audioErr(w, 400, fmt.Sprintf("model `%s` does not support translations", model))
			return
		}
		f, fh, err := r.FormFile("file")
		if err != nil {
			audioErr(w, 400, "file is required")
			return
		}
		f.Close()
		out := fmt.Sprintf("%s (lang=%s, %d bytes)", text, r.FormValue("language"), fh.Size)
		groqHeaders(w)
		w.Header().Set("X-Request-Id", "req_audio_01")
		if r.FormValue("stream") == "true" {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, word := range strings.Fields(out) {
				fmt.Fprintf(w, "data: {\"type\":\"transcript.text.delta\",\"delta\":%q}\n\n", word+" ")
			}
			fmt.Fprintf(w, "data: {\"type\":\"transcript.text.done\",\"text\":%q}\n\n", out)
			return
		}
		task := "transcribe"
		if translate {
			task = "translate"
		}
		switch r.FormValue("response_format") {
		case "", "json":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"text":%q,"x_groq":{"id":"req_audio_01"}}`, out)
		case "verbose_json":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"task":%q,"language":"English","duration":1.5,"text":%q,"segments":[{"id":0,"seek":0,"start":0,"end":1.5,"text":%q,"tokens":[50365,2425],"temperature":0,"avg_logprob":-0.2,"compression_ratio":0.8,"no_speech_prob":0.01}],"x_groq":{"id":"req_audio_01"}}`, task, out, out)
		case "text":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, out+"\n")
		case "vtt":
			w.Header().Set("Content-Type", "text/vtt; charset=utf-8")
			fmt.Fprintf(w, "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n%s\n", out)
		default:
			audioErr(w, 400, "response_format must be one of json, verbose_json, text")
		}
	}
}

func audioErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"message":%q,"type":"invalid_request_error"}}`, msg)
}

// wav returns a valid RIFF/WAVE file: 16-bit mono PCM at 16 kHz (what
// Whisper resamples to), a 440 Hz tone, n samples.
func wav(n int) []byte {
	var b bytes.Buffer
	le := func(v any) { _ = bin.Write(&b, bin.LittleEndian, v) }
	b.WriteString("RIFF")
	le(uint32(36 + 2*n))
	b.WriteString("WAVEfmt ")
	le(uint32(16))
	le(uint16(1))     // PCM
	le(uint16(1))     // mono
	le(uint32(16000)) // sample rate
	le(uint32(32000)) // byte rate
	le(uint16(2))     // block align
	le(uint16(16))    // bits per sample
	b.WriteString("data")
	le(uint32(2 * n))
	for i := range n {
		le(int16(8000 * math.Sin(2*math.Pi*440*float64(i)/16000)))
	}
	return b.Bytes()
}

// formPart is one part of a test upload: a file when file is set.
type formPart struct{ name, value, file string }

// audioForm encodes parts as the SDKs do, with the boundary given ("" for
// a random one).
func audioForm(t *testing.T, boundary string, parts ...formPart) (body []byte, contentType string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	if boundary != "" {
		if err := w.SetBoundary(boundary); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range parts {
		var pw io.Writer
		var err error
		if p.file != "" {
			pw, err = w.CreateFormFile(p.name, p.file)
		} else {
			pw, err = w.CreateFormField(p.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(pw, p.value)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), w.FormDataContentType()
}

// postUpload posts body to url with Content-Type ctype; chunked sends it
// without a length.
func postUpload(t *testing.T, url string, body []byte, ctype string, chunked bool, hdr ...string) *http.Response {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // no length: Transfer-Encoding: chunked
	}
	req, err := http.NewRequest("POST", url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer client-key-should-not-pass")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// audioError decodes an OpenAI-shaped error with its param.
func audioError(t *testing.T, body []byte) (typ, param, code string) {
	t.Helper()
	apiErr(t, body)
	var e struct {
		Error struct {
			Type  string  `json:"type"`
			Param *string `json:"param"`
			Code  *string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	if e.Error.Param != nil {
		param = *e.Error.Param
	}
	if e.Error.Code != nil {
		code = *e.Error.Code
	}
	return e.Error.Type, param, code
}

// withModel is body with its model field's value replaced: what an
// upstream that calls the model by another name must receive.
func withModel(body []byte, from, to string) []byte {
	return bytes.Replace(body, []byte("\r\n\r\n"+from+"\r\n"), []byte("\r\n\r\n"+to+"\r\n"), 1)
}

const whisperModels = "    models: {whisper-1: whisper-large-v3-turbo, whisper-large-v3: whisper-large-v3}\n"

// TestAudioTranscriptionFormats: a transcription goes to the upstream with
// only its model field renamed (the file first, as SDKs send it: the
// model after it), and the upstream's answer reaches the client unchanged
// in each format, with its Content-Type; route labels, the request id and
// the log line are the chat ones.
func TestAudioTranscriptionFormats(t *testing.T) {
	up := newFake(t, groqAudio("hello world"))
	p := startProxy(t, testConfig("", upstreamYAML("groq", up.BaseURL(), "gsk-upstream-key", 1, whisperModels)))
	audio := wav(16000)
	for _, tc := range []struct {
		format, ctype, want string
	}{
		{"", "application/json", `{"text":"hello world (lang=en, 32044 bytes)","x_groq":{"id":"req_audio_01"}}`},
		{"json", "application/json", `{"text":"hello world (lang=en, 32044 bytes)","x_groq":{"id":"req_audio_01"}}`},
		{"verbose_json", "application/json", `"task":"transcribe","language":"English","duration":1.5,"text":"hello world (lang=en, 32044 bytes)"`},
		{"text", "text/plain; charset=utf-8", "hello world (lang=en, 32044 bytes)\n"},
		{"vtt", "text/vtt; charset=utf-8", "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nhello world (lang=en, 32044 bytes)\n"},
	} {
		t.Run("format "+tc.format, func(t *testing.T) {
			parts := []formPart{{name: "file", value: string(audio), file: "speech.wav"}, {name: "model", value: "whisper-1"}, {name: "language", value: "en"}}
			if tc.format != "" {
				parts = append(parts, formPart{name: "response_format", value: tc.format})
			}
			body, ctype := audioForm(t, "", parts...)
			resp := postUpload(t, p.URL+"/v1/audio/transcriptions", body, ctype, false, "X-Request-Id", "client-req-7", "Cache-Control", "no-store")
			got := readAll(t, resp)
			if resp.StatusCode != 200 || !strings.Contains(string(got), tc.want) {
				t.Fatalf("status %d: %s", resp.StatusCode, got)
			}
			if tc.format == "text" || tc.format == "vtt" || tc.format == "" || tc.format == "json" {
				if string(got) != tc.want {
					t.Errorf("body %q, want %q", got, tc.want)
				}
			}
			if ct := resp.Header.Get("Content-Type"); ct != tc.ctype {
				t.Errorf("Content-Type %q, want %q", ct, tc.ctype)
			}
			if resp.Header.Get("X-Upstream") != "groq" || resp.Header.Get("X-Request-Id") != "client-req-7" ||
				resp.Header.Get("X-Upstream-Request-Id") != "req_audio_01" || resp.Header.Get("x-ratelimit-limit-requests") != "14400" {
				t.Errorf("headers %v", resp.Header)
			}
			if up.LastPath() != "/v1/audio/transcriptions" {
				t.Errorf("upstream path %s", up.LastPath())
			}
			if sent := up.LastBody(); !bytes.Equal(sent, withModel(body, "whisper-1", "whisper-large-v3-turbo")) {
				t.Errorf("the upstream got other bytes than the upload with its model renamed (%d bytes, want %d)", len(sent), len(body)+len("whisper-large-v3-turbo")-len("whisper-1"))
			}
			if h := up.LastHeader(); h.Get("Content-Type") != ctype || h.Get("Authorization") != "Bearer gsk-upstream-key" {
				t.Errorf("upstream headers: Content-Type %q, Authorization %q", h.Get("Content-Type"), h.Get("Authorization"))
			}
		})
	}
	// A model the upstream calls by the same name is sent untouched.
	body, ctype := audioForm(t, "", formPart{name: "model", value: "whisper-large-v3"}, formPart{name: "file", value: string(audio), file: "a.wav"})
	resp := postUpload(t, p.URL+"/openai/v1/audio/transcriptions", body, ctype, true)
	if b := readAll(t, resp); resp.StatusCode != 200 || !bytes.Equal(up.LastBody(), body) {
		t.Errorf("chunked, model first, no rename: status %d %s; upstream bytes equal: %v", resp.StatusCode, b, bytes.Equal(up.LastBody(), body))
	}
	if got := scrape(t, p.URL, `switchyard_requests_total{route="audio_transcriptions",status="200"}`); got != 6 {
		t.Errorf("audio_transcriptions 200s = %v, want 6", got)
	}
	if got := scrape(t, p.URL, `switchyard_upstream_requests_total{upstream="groq",outcome="ok"}`); got != 6 {
		t.Errorf("groq ok attempts = %v, want 6", got)
	}
	if !p.WaitLog(`"route":"audio_transcriptions","status":200,"model":"whisper-1"`) {
		t.Errorf("no request log line for the transcription")
	}
	if strings.Contains(p.Logs(), "gsk-upstream-key") {
		t.Error("the upstream key is in the log")
	}
}

// TestAudioTranslation: translations route to the upstreams that list
// them, under their own route label; the upstream's own refusal (Groq:
// turbo does not translate) is relayed as it is, not failed over.
func TestAudioTranslation(t *testing.T) {
	noTranslate := newFake(t, groqAudio("never"))
	up := newFake(t, groqAudio("bonjour translated"))
	p := startProxy(t, testConfig("",
		upstreamYAML("transcribe-only", noTranslate.BaseURL(), "k1", 1, whisperModels+"    endpoints: [audio/transcriptions]\n"),
		upstreamYAML("groq", up.BaseURL(), "k2", 2, whisperModels)))
	audio := wav(8000)
	body, ctype := audioForm(t, "", formPart{name: "file", value: string(audio), file: "fr.wav"}, formPart{name: "model", value: "whisper-large-v3"})
	resp := postUpload(t, p.URL+"/v1/audio/translations", body, ctype, false)
	got := readAll(t, resp)
	if resp.StatusCode != 200 || string(got) != `{"text":"bonjour translated (lang=, 16044 bytes)","x_groq":{"id":"req_audio_01"}}` {
		t.Fatalf("status %d: %s", resp.StatusCode, got)
	}
	if noTranslate.Calls() != 0 || up.LastPath() != "/v1/audio/translations" || !bytes.Equal(up.LastBody(), body) {
		t.Errorf("calls: transcribe-only %d; groq at %s, bytes equal %v", noTranslate.Calls(), up.LastPath(), bytes.Equal(up.LastBody(), body))
	}

	body, ctype = audioForm(t, "", formPart{name: "file", value: string(audio), file: "fr.wav"}, formPart{name: "model", value: "whisper-1"})
	resp = postUpload(t, p.URL+"/v1/audio/translations", body, ctype, false)
	got = readAll(t, resp)
	if typ, _, _ := audioError(t, got); resp.StatusCode != 400 || typ != "invalid_request_error" || !strings.Contains(string(got), "does not support translations") {
		t.Errorf("turbo translation: %d %s, want Groq's 400 relayed", resp.StatusCode, got)
	}
	if got := scrape(t, p.URL, `switchyard_requests_total{route="audio_translations",status="200"}`); got != 1 {
		t.Errorf("audio_translations 200s = %v, want 1", got)
	}
	if !p.WaitLog(`"route":"audio_translations"`) {
		t.Errorf("no request log line with route audio_translations")
	}
}

// TestAudioFailoverReplaysUpload: the first upstream fails (500, then
// 429) before anything reaches the client; the second gets the identical
// upload, here 3 MB (over max_body_bytes, under max_upload_bytes, held in
// a file), and its answer is the client's.
func TestAudioFailoverReplaysUpload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fail    http.HandlerFunc
		outcome string
	}{
		{"500", statusHandler(500, `{"error":{"message":"Internal Server Error","type":"internal_server_error"}}`), "error"},
		{"429", statusHandler(429, `{"error":{"message":"Rate limit reached for model whisper-large-v3-turbo on audio seconds per hour (ASH)","type":"tokens","code":"rate_limit_exceeded"}}`, "retry-after", "7"), "rate_limited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := newFake(t, tc.fail)
			second := newFake(t, groqAudio("from second"))
			p := startProxy(t, testConfig("max_body_bytes: 1048576\n",
				upstreamYAML("first", first.BaseURL(), "k1", 1, whisperModels),
				upstreamYAML("second", second.BaseURL(), "k2", 2, whisperModels)))
			audio := wav(1_500_000) // 3 MB
			body, ctype := audioForm(t, "", formPart{name: "file", value: string(audio), file: "long.wav"},
				formPart{name: "model", value: "whisper-1"}, formPart{name: "prompt", value: "Switchyard, Groq"}, formPart{name: "temperature", value: "0"})
			resp := postUpload(t, p.URL+"/v1/audio/transcriptions", body, ctype, false)
			got := readAll(t, resp)
			if resp.StatusCode != 200 || !strings.Contains(string(got), "from second (lang=, 3000044 bytes)") {
				t.Fatalf("status %d: %s", resp.StatusCode, got)
			}
			if resp.Header.Get("X-Upstream") != "second" || resp.Header.Get("X-Attempts") != "2" {
				t.Errorf("X-Upstream %q, X-Attempts %q", resp.Header.Get("X-Upstream"), resp.Header.Get("X-Attempts"))
			}
			want := withModel(body, "whisper-1", "whisper-large-v3-turbo")
			if first.Calls() != 1 || second.Calls() != 1 {
				t.Fatalf("calls: first %d, second %d", first.Calls(), second.Calls())
			}
			a, b := first.LastBody(), second.LastBody()
			if !bytes.Equal(a, want) || !bytes.Equal(b, want) {
				t.Errorf("upstream bodies differ from the upload: first %d bytes (sha %x), second %d (sha %x), want %d (sha %x)",
					len(a), sha256.Sum256(a), len(b), sha256.Sum256(b), len(want), sha256.Sum256(want))
			}
			if got := scrape(t, p.URL, fmt.Sprintf(`switchyard_upstream_requests_total{upstream="first",outcome=%q}`, tc.outcome)); got != 1 {
				t.Errorf("first's %s attempts = %v, want 1", tc.outcome, got)
			}
			if got := scrape(t, p.URL, `switchyard_upload_spills_total`); got != 1 {
				t.Errorf("spills = %v, want 1 (a 3 MB upload goes to a file)", got)
			}
		})
	}
}

// TestAudioAllUpstreamsFail: when every upstream fails, the client gets
// the last upstream's own error when there is one (as for chat), else the
// proxy's OpenAI-shaped 502 naming each attempt; nothing is cached.
func TestAudioAllUpstreamsFail(t *testing.T) {
	a := newFake(t, statusHandler(500, `{"error":{"message":"boom","type":"internal_server_error"}}`))
	b := newFake(t, statusHandler(500, `{"error":{"message":"also boom","type":"internal_server_error"}}`))
	body, ctype := audioForm(t, "", formPart{name: "file", value: string(wav(4000)), file: "a.wav"}, formPart{name: "model", value: "whisper-1"})

	p := startProxy(t, testConfig("",
		upstreamYAML("a", a.BaseURL(), "k1", 1, whisperModels),
		upstreamYAML("b", b.BaseURL(), "k2", 2, whisperModels)))
	resp := postUpload(t, p.URL+"/v1/audio/transcriptions", body, ctype, false)
	got := readAll(t, resp)
	if _, _, _ = audioError(t, got); resp.StatusCode != 500 || !strings.Contains(string(got), "also boom") || resp.Header.Get("X-Upstream") != "b" {
		t.Errorf("two 500s: %d (X-Upstream %q) %s, want b's own 500", resp.StatusCode, resp.Header.Get("X-Upstream"), got)
	}

	p = startProxy(t, testConfig("",
		upstreamYAML("a", a.BaseURL(), "k1", 1, whisperModels),
		upstreamYAML("dead", "http://127.0.0.1:1/v1", "k2", 2, whisperModels)))
	for i := range 2 {
		resp := postUpload(t, p.URL+"/v1/audio/transcriptions", body, ctype, false)
		got := readAll(t, resp)
		typ, _, code := audioError(t, got)
		if resp.StatusCode != 502 || typ != "server_error" || code != "upstream_error" ||
			!strings.Contains(string(got), "all upstreams failed: a: HTTP 500") || !strings.Contains(string(got), "dead: connection") {
			t.Errorf("#%d: %d %s", i, resp.StatusCode, got)
		}
		if x := resp.Header.Get("X-Cache"); x != "MISS" {
			t.Errorf("#%d: X-Cache %q, want MISS (a failure is never cached)", i, x)
		}
	}
	if a.Calls() != 3 {
		t.Errorf("a was called %d times, want 3", a.Calls())
	}
}

// TestAudioCache: the key is the file's hash and the other fields, in any
// order: the same upload with its fields reordered (and another boundary
// and filename) is a HIT; another language, another file or the other
// endpoint is a MISS; the usual controls apply.
func TestAudioCache(t *testing.T) {
	up := newFake(t, groqAudio("cached words"))
	p := startProxy(t, testConfig("", upstreamYAML("groq", up.BaseURL(), "k", 1, whisperModels)))
	audio := string(wav(12000))
	post := func(path string, boundary string, parts []formPart, hdr ...string) (*http.Response, []byte) {
		body, ctype := audioForm(t, boundary, parts...)
		resp := postUpload(t, p.URL+path, body, ctype, false, hdr...)
		return resp, readAll(t, resp)
	}
	base := []formPart{{name: "file", value: audio, file: "a.wav"}, {name: "model", value: "whisper-large-v3"},
		{name: "language", value: "en"}, {name: "response_format", value: "text"},
		{name: "timestamp_granularities[]", value: "segment"}}
	reordered := []formPart{base[4], base[3], {name: "model", value: "whisper-large-v3"}, base[2], {name: "file", value: audio, file: "renamed.wav"}}
	french := []formPart{base[0], base[1], {name: "language", value: "fr"}, base[3], base[4]}
	otherFile := []formPart{{name: "file", value: audio + "\x00\x00", file: "a.wav"}, base[1], base[2], base[3], base[4]}

	for i, tc := range []struct {
		name, path string
		parts      []formPart
		hdr        []string
		status     int
		xcache     string
		calls      int
	}{
		{"first", "/v1/audio/transcriptions", base, nil, 200, "MISS", 1},
		{"same again", "/v1/audio/transcriptions", base, nil, 200, "HIT", 1},
		{"fields in another order", "/v1/audio/transcriptions", reordered, nil, 200, "HIT", 1},
		{"another language", "/v1/audio/transcriptions", french, nil, 200, "MISS", 2},
		{"another file", "/v1/audio/transcriptions", otherFile, nil, 200, "MISS", 3},
		{"the other endpoint", "/v1/audio/translations", base, nil, 200, "MISS", 4},
		{"no-cache", "/v1/audio/transcriptions", base, []string{"Cache-Control", "no-cache"}, 200, "BYPASS", 5},
		{"no-store", "/v1/audio/transcriptions", reordered, []string{"Cache-Control", "no-store"}, 200, "BYPASS", 6},
		{"only-if-cached, cached", "/v1/audio/transcriptions", french, []string{"Cache-Control", "only-if-cached"}, 200, "HIT", 6},
		{"only-if-cached, not cached", "/v1/audio/transcriptions", []formPart{base[0], base[1], {name: "language", value: "de"}}, []string{"Cache-Control", "only-if-cached"}, 504, "MISS", 6},
		{"stream=true is never cached", "/v1/audio/transcriptions", append([]formPart{{name: "stream", value: "true"}}, base...), nil, 200, "BYPASS", 7},
	} {
		resp, got := post(tc.path, fmt.Sprintf("boundary-%d", i), tc.parts, tc.hdr...)
		if resp.StatusCode != tc.status || resp.Header.Get("X-Cache") != tc.xcache || up.Calls() != tc.calls {
			t.Errorf("%s: status %d, X-Cache %q, upstream calls %d; want %d, %s, %d: %s",
				tc.name, resp.StatusCode, resp.Header.Get("X-Cache"), up.Calls(), tc.status, tc.xcache, tc.calls, got)
			continue
		}
		if tc.status == 200 && strings.Contains(tc.name, "stream") {
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" || !strings.Contains(string(got), `"type":"transcript.text.done"`) {
				t.Errorf("%s: %q %s", tc.name, ct, got)
			}
			continue
		}
		if tc.status == 200 && (string(got) != "cached words (lang="+langOf(tc.parts)+", 24044 bytes)\n" && tc.name != "another file" && tc.name != "the other endpoint") {
			t.Errorf("%s: body %q", tc.name, got)
		}
		if tc.xcache == "HIT" && resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("%s: a hit's Content-Type %q, want the upstream's", tc.name, resp.Header.Get("Content-Type"))
		}
	}
}

func langOf(parts []formPart) string {
	for _, p := range parts {
		if p.name == "language" {
			return p.value
		}
	}
	return ""
}

// TestAudioBadInput: each malformed upload gets a clear OpenAI-shaped 4xx
// naming the param, none reaches the upstream, and the client reads the
// answer even when it sends a body the proxy does not read.
func TestAudioBadInput(t *testing.T) {
	up := newFake(t, groqAudio("never"))
	p := startProxy(t, testConfig("max_upload_bytes: 1048576\n", upstreamYAML("groq", up.BaseURL(), "k", 1, whisperModels)))
	audio := string(wav(4000))
	noModel, noModelCT := audioForm(t, "", formPart{name: "file", value: audio, file: "a.wav"}, formPart{name: "language", value: "en"})
	noFile, noFileCT := audioForm(t, "", formPart{name: "model", value: "whisper-1"}, formPart{name: "language", value: "en"})
	good, goodCT := audioForm(t, "", formPart{name: "file", value: audio, file: "a.wav"}, formPart{name: "model", value: "whisper-1"})
	// 1.8 MB: over the limit, and within what the lingering close drains
	// after a 413 (twice max_upload_bytes), so the client reads its answer.
	big, bigCT := audioForm(t, "", formPart{name: "file", value: string(wav(900_000)), file: "big.wav"}, formPart{name: "model", value: "whisper-1"})
	unknown, unknownCT := audioForm(t, "", formPart{name: "file", value: audio, file: "a.wav"}, formPart{name: "model", value: "no-such-model"})
	for _, tc := range []struct {
		name    string
		body    []byte
		ctype   string
		chunked bool
		status  int
		param   string
		code    string
	}{
		{"missing model", noModel, noModelCT, false, 400, "model", "missing_required_parameter"},
		{"no file part", noFile, noFileCT, false, 400, "file", "missing_required_parameter"},
		{"JSON body", []byte(`{"model":"whisper-1","file":"a.wav"}`), "application/json", false, 415, "", "unsupported_media_type"},
		{"no Content-Type", good, "", false, 415, "", "unsupported_media_type"},
		{"no boundary", good, "multipart/form-data", false, 400, "", "invalid_multipart"},
		{"wrong boundary", good, "multipart/form-data; boundary=not-the-one", false, 400, "", "invalid_multipart"},
		{"cut short", good[:len(good)-40], goodCT, false, 400, "", "invalid_multipart"},
		{"over max_upload_bytes", big, bigCT, false, 413, "file", "request_too_large"},
		{"over max_upload_bytes, chunked", big, bigCT, true, 413, "file", "request_too_large"},
		{"unknown model", unknown, unknownCT, false, 404, "model", "model_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := postUpload(t, p.URL+"/v1/audio/transcriptions", tc.body, tc.ctype, tc.chunked)
			got := readAll(t, resp)
			typ, param, code := audioError(t, got)
			if resp.StatusCode != tc.status || typ != "invalid_request_error" || param != tc.param || code != tc.code {
				t.Errorf("status %d, type %q, param %q, code %q; want %d, %q, %q: %s", resp.StatusCode, typ, param, code, tc.status, tc.param, tc.code, got)
			}
		})
	}
	t.Run("413 read before sending the body", func(t *testing.T) {
		// A client that declares an oversize upload and waits (as with
		// Expect: 100-continue, without saying so) reads its 413 at once.
		c, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", bigCT, len(big))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		if _, param, code := audioError(t, got); resp.StatusCode != 413 || param != "file" || code != "request_too_large" {
			t.Errorf("status %d: %s", resp.StatusCode, got)
		}
	})
	resp, err := httpClient.Get(p.URL + "/v1/audio/transcriptions")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: %d %s", resp.StatusCode, got)
	}
	if up.Calls() != 0 {
		t.Errorf("bad uploads reached the upstream %d times", up.Calls())
	}
	if got := scrape(t, p.URL, `switchyard_requests_total{route="audio_transcriptions",status="413"}`); got != 3 {
		t.Errorf("audio_transcriptions 413s = %v, want 3", got)
	}
}

// TestAudioSpoolFilesRemoved: an upload over the spool's memory goes to a
// file in TMPDIR that has no name there even while the request runs (it is
// unlinked at once), and whose descriptor is closed when the request ends,
// answered or cut by the client mid-upload.
func TestAudioSpoolFilesRemoved(t *testing.T) {
	gate := make(chan struct{})
	arrived := make(chan struct{}, 4)
	var once sync.Once
	up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-gate:
		case <-time.After(5 * time.Second):
		}
		groqAudio("spooled")(w, r)
	})
	dir := t.TempDir()
	p := startProxy(t, testConfig("", upstreamYAML("groq", up.BaseURL(), "k", 1, whisperModels)), "TMPDIR="+dir)
	spoolFDs := func() int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Pid()))
		if err != nil {
			t.Skip("no /proc:", err)
		}
		n := 0
		for _, e := range ents {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p.Pid(), e.Name())); err == nil && strings.HasPrefix(l, filepath.Join(dir, "switchyard-upload-")) {
				n++
			}
		}
		return n
	}
	waitFDs := func(want int) bool {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if spoolFDs() == want {
				return true
			}
		}
		return false
	}
	body, ctype := audioForm(t, "", formPart{name: "file", value: string(wav(1_000_000)), file: "a.wav"}, formPart{name: "model", value: "whisper-1"})

	done := make(chan *http.Response, 1)
	go func() { done <- postUpload(t, p.URL+"/v1/audio/transcriptions", body, ctype, false) }()
	// The whole upload is spooled once the upstream has the request.
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the upload never reached the upstream")
	}
	if !waitFDs(1) {
		t.Fatalf("no spool file open while the upstream works (%d)", spoolFDs())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("the spool directory lists %d entries: the file was not unlinked", len(ents))
	}
	if held := scrape(t, p.URL, `switchyard_upload_spool_bytes`); held != float64(len(body)) {
		t.Errorf("switchyard_upload_spool_bytes = %v while held, want %d", held, len(body))
	}
	once.Do(func() { close(gate) })
	resp := <-done
	if got := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, got)
	}
	if !waitFDs(0) {
		t.Errorf("a spool file is still open after the answer (%d)", spoolFDs())
	}

	// The client goes away halfway through its upload.
	c, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", ctype, len(body))
	c.Write(body[:len(body)*3/4]) // past the 1 MiB held in memory
	if !waitFDs(1) {
		t.Errorf("no spool file open during the upload (%d)", spoolFDs())
	}
	c.Close()
	if !waitFDs(0) {
		t.Errorf("a spool file is still open after the client left (%d)", spoolFDs())
	}
	if held := scrape(t, p.URL, `switchyard_upload_spool_bytes`); held != 0 {
		t.Errorf("switchyard_upload_spool_bytes = %v after every request ended", held)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("the spool directory lists %d entries at the end", len(ents))
	}
	if up.Calls() != 1 {
		t.Errorf("upstream calls %d, want 1 (the cut upload never goes out)", up.Calls())
	}
}

// TestAudioUploadMemoryBounded: a 20 MB upload, failed over from one
// upstream to another, raises the proxy's peak RSS by far less than its
// size: it is spooled to a file and replayed from there, never held.
//
// It runs its own binary built without the race detector, whose shadow
// memory would swamp the figure.
func TestAudioUploadMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary and moves 60 MB")
	}
	const size = 20 << 20
	first := newFake(t, statusHandler(500, `{"error":{"message":"boom","type":"internal_server_error"}}`))
	second := newFake(t, groqAudio("big"))
	exe := filepath.Join(t.TempDir(), "switchyard-norace")
	if err := testproc.Build(exe, "..", false); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	cfg := testConfig("", upstreamYAML("first", first.BaseURL(), "k1", 1, whisperModels), upstreamYAML("second", second.BaseURL(), "k2", 2, whisperModels))
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(cfg, "log_level: debug", "log_level: warn", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := testproc.Start(exe, cfgPath, []string{"TMPDIR=" + t.TempDir()}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	small, smallCT := audioForm(t, "", formPart{name: "file", value: string(wav(16000)), file: "a.wav"}, formPart{name: "model", value: "whisper-1"})
	readAll(t, postUpload(t, p.URL+"/v1/audio/transcriptions", small, smallCT, false, "Cache-Control", "no-store")) // warm: connections, pools
	base := procStatusKB(t, p.Pid(), "VmHWM")

	audio := wav(size / 2)
	body, ctype := audioForm(t, "", formPart{name: "file", value: string(audio), file: "long.wav"}, formPart{name: "model", value: "whisper-1"})
	resp := postUpload(t, p.URL+"/v1/audio/transcriptions", body, ctype, false, "Cache-Control", "no-store")
	got := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(string(got), fmt.Sprintf("%d bytes", len(audio))) || resp.Header.Get("X-Attempts") != "2" {
		t.Fatalf("status %d, X-Attempts %q: %s", resp.StatusCode, resp.Header.Get("X-Attempts"), got)
	}
	if h := sha256.Sum256(second.LastBody()); hex.EncodeToString(h[:]) != hex.EncodeToString(sumOf(withModel(body, "whisper-1", "whisper-large-v3-turbo"))) {
		t.Error("the second upstream got other bytes than the upload")
	}
	peak := procStatusKB(t, p.Pid(), "VmHWM")
	growth := peak - base
	t.Logf("upload %d MB: peak RSS %d MB, baseline %d MB, growth %d kB", len(body)>>20, peak>>10, base>>10, growth)
	if limit := int64(size / 4 / 1024); growth > limit {
		t.Errorf("peak RSS grew by %d kB for a %d MB upload (bound %d kB): the upload is held in memory", growth, len(body)>>20, limit)
	}
}

func sumOf(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
