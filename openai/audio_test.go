package openai

import (
	"encoding/json"
	"testing"
)

func TestParseAudioForm(t *testing.T) {
	file := AudioPart{Name: "file", File: true, Size: 3}
	model := AudioPart{Name: "model", Value: "whisper-1"}
	for _, tc := range []struct {
		name      string
		ep        Endpoint
		parts     []AudioPart
		param     string // "" when valid
		code      string
		model     string
		modelPart int
		stream    bool
	}{
		{"file first", Transcriptions, []AudioPart{file, model, {Name: "language", Value: "en"}}, "", "", "whisper-1", 1, false},
		{"model first", Translations, []AudioPart{model, file}, "", "", "whisper-1", 0, false},
		{"stream true", Transcriptions, []AudioPart{file, model, {Name: "stream", Value: "true"}}, "", "", "whisper-1", 1, true},
		{"stream false", Transcriptions, []AudioPart{file, model, {Name: "stream", Value: "False"}}, "", "", "whisper-1", 1, false},
		{"no file", Transcriptions, []AudioPart{model}, "file", CodeMissingParam, "", 0, false},
		{"file as a field", Transcriptions, []AudioPart{model, {Name: "file", Value: "abc"}}, "file", CodeInvalidMultipart, "", 0, false},
		{"two files", Transcriptions, []AudioPart{file, model, file}, "file", CodeInvalidMultipart, "", 0, false},
		{"no model", Transcriptions, []AudioPart{file}, "model", CodeMissingParam, "", 0, false},
		{"empty model", Transcriptions, []AudioPart{file, {Name: "model"}}, "model", CodeMissingParam, "", 0, false},
		{"two models", Transcriptions, []AudioPart{file, model, model}, "model", CodeInvalidMultipart, "", 0, false},
		{"model as a file", Transcriptions, []AudioPart{file, {Name: "model", File: true}}, "model", CodeInvalidMultipart, "", 0, false},
		{"bad stream", Transcriptions, []AudioPart{file, model, {Name: "stream", Value: "yes"}}, "stream", CodeInvalidMultipart, "", 0, false},
		{"not UTF-8 name", Transcriptions, []AudioPart{file, model, {Name: "\xff", Value: "x"}}, "", CodeInvalidMultipart, "", 0, false},
		{"JSON endpoint", Chat, []AudioPart{file, model}, "", CodeInvalidMultipart, "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseAudioForm(tc.ep, tc.parts)
			if tc.code != "" {
				e, ok := err.(*RequestError)
				if !ok || e.Param != tc.param || e.Code != tc.code || e.Message == "" {
					t.Fatalf("error %#v, want param %q code %q", err, tc.param, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Request.Model != tc.model || f.ModelPart != tc.modelPart || f.Stream != tc.stream || f.Request.Endpoint != tc.ep || !f.Request.ModelPlain {
				t.Errorf("form %+v", f)
			}
		})
	}
}

func TestAudioCacheDocument(t *testing.T) {
	file := AudioPart{Name: "file", File: true, Size: 3, SHA256: [32]byte{1, 2}}
	base := []AudioPart{file, {Name: "model", Value: "m"}, {Name: "language", Value: "en"},
		{Name: "timestamp_granularities[]", Value: "word"}, {Name: "timestamp_granularities[]", Value: "segment"}}
	doc := string(AudioCacheDocument(base))
	if !json.Valid([]byte(doc)) {
		t.Fatalf("not JSON: %s", doc)
	}
	same := map[string][]AudioPart{
		"other part order": {base[3], {Name: "language", Value: "en"}, base[4], file, {Name: "model", Value: "m"}},
		"stream field":     append(append([]AudioPart{}, base...), AudioPart{Name: "stream", Value: "false"}),
	}
	for name, parts := range same {
		if got := string(AudioCacheDocument(parts)); got != doc {
			t.Errorf("%s: %s, want %s", name, got, doc)
		}
	}
	other := map[string][]AudioPart{
		"other language":      {file, {Name: "model", Value: "m"}, {Name: "language", Value: "fr"}, base[3], base[4]},
		"values swapped":      {file, {Name: "model", Value: "m"}, {Name: "language", Value: "en"}, base[4], base[3]},
		"other file":          {{Name: "file", File: true, Size: 3, SHA256: [32]byte{9}}, base[1], base[2], base[3], base[4]},
		"a field as a file":   {file, {Name: "model", Value: "m"}, {Name: "language", File: true}, base[3], base[4]},
		"invalid UTF-8 value": {file, {Name: "model", Value: "m\xff"}, base[2], base[3], base[4]},
	}
	docs := map[string]string{doc: "base"}
	for name, parts := range other {
		got := string(AudioCacheDocument(parts))
		if !json.Valid([]byte(got)) {
			t.Errorf("%s: not JSON: %s", name, got)
		}
		if prev, dup := docs[got]; dup {
			t.Errorf("%s: same document as %s: %s", name, prev, got)
		}
		docs[got] = name
	}
	if a, b := AudioCacheDocument([]AudioPart{{Name: "p", Value: "\xff"}}), AudioCacheDocument([]AudioPart{{Name: "p", Value: "\xfe"}}); string(a) == string(b) {
		t.Errorf("two invalid UTF-8 values share a document: %s", a)
	}
}
