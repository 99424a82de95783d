package openai

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The form fields of an audio upload (transcriptions, translations) the
// proxy reads; every other field (language, prompt, response_format,
// temperature, timestamp_granularities[], ...) passes through unread.
const (
	// AudioFileField is the part that carries the audio.
	AudioFileField = "file"
	// AudioModelField is the model field.
	AudioModelField = "model"
	// AudioStreamField asks for an event stream (gpt-4o-transcribe).
	AudioStreamField = "stream"
)

// CodeInvalidMultipart is the code of the proxy's answer to an upload
// whose multipart form it cannot use.
const CodeInvalidMultipart = "invalid_multipart"

// AudioPart is one part of an audio upload's multipart form, as read.
type AudioPart struct {
	// Name is the part's field name.
	Name string
	// File reports a file part; Value is then empty.
	File bool
	// Value is a field's value.
	Value string
	// SHA256 and Size describe a file part's content.
	SHA256 [32]byte
	Size   int64
}

// AudioForm is what the proxy reads of an audio upload.
type AudioForm struct {
	// Request has the endpoint and the model (the client's alias).
	Request Request
	// ModelPart is the index of the model field among the parts: the one
	// part rewritten when an upstream calls the model by another name.
	ModelPart int
	// Stream is stream=true: the client asks for an event stream.
	Stream bool
}

// ParseAudioForm checks the parts of an upload sent to e (an audio
// endpoint): one file part named "file", one non-empty model field, a
// stream field that is true or false if present, field names in UTF-8.
// The error is a *RequestError naming the param.
func ParseAudioForm(e Endpoint, parts []AudioPart) (AudioForm, error) {
	f := AudioForm{Request: Request{Endpoint: e}, ModelPart: -1}
	if !e.Multipart() {
		return f, &RequestError{"endpoint " + string(e) + " takes no multipart upload", "", CodeInvalidMultipart}
	}
	files, models := 0, 0
	for i, p := range parts {
		if !utf8.ValidString(p.Name) {
			return f, &RequestError{fmt.Sprintf("form field %d: its name is not UTF-8", i+1), "", CodeInvalidMultipart}
		}
		switch p.Name {
		case AudioFileField:
			if !p.File {
				return f, &RequestError{`the file parameter must be a file part (with a filename), not a form field`, AudioFileField, CodeInvalidMultipart}
			}
			files++
		case AudioModelField:
			if p.File {
				return f, &RequestError{`the model parameter must be a form field, not a file`, AudioModelField, CodeInvalidMultipart}
			}
			models++
			f.Request.Model, f.ModelPart = p.Value, i
		case AudioStreamField:
			switch strings.ToLower(p.Value) {
			case "true":
				f.Stream = true
			case "false":
			default:
				return f, &RequestError{"stream must be true or false", AudioStreamField, CodeInvalidMultipart}
			}
		}
	}
	switch {
	case files == 0:
		return f, &RequestError{`you must provide a file parameter (the audio, in a multipart part named "file")`, AudioFileField, CodeMissingParam}
	case files > 1:
		return f, &RequestError{fmt.Sprintf(`only one file may be uploaded; the form has %d parts named "file"`, files), AudioFileField, CodeInvalidMultipart}
	case models == 0 || f.Request.Model == "":
		return f, &RequestError{`you must provide a model parameter (a form field named "model")`, AudioModelField, CodeMissingParam}
	case models > 1:
		return f, &RequestError{fmt.Sprintf("the model parameter is given %d times", models), AudioModelField, CodeInvalidMultipart}
	}
	f.Request.ModelPlain = true // a form field has no escapes: the rewrite replaces its bytes
	return f, nil
}

// AudioCacheDocument returns the JSON document an upload's cache key is
// derived from (as a chat request's key is from its body): each field's
// values by name, in the order sent, and each file by its SHA-256 and size.
// The order of the parts across names does not count, nor do filenames
// (the bytes are the audio), nor stream (transport framing). A value that
// is not UTF-8 is written as {"base64":...}, so no two forms share a
// document.
func AudioCacheDocument(parts []AudioPart) []byte {
	names := make([]string, 0, len(parts))
	for _, p := range parts {
		if p.Name != AudioStreamField && !slices.Contains(names, p.Name) {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	b := make([]byte, 0, 256)
	for _, kind := range []string{"fields", "files"} {
		if kind == "fields" {
			b = append(b, `{"fields":{`...)
		} else {
			b = append(b, `},"files":{`...)
		}
		first := true
		for _, name := range names {
			open := false
			for _, p := range parts {
				if p.Name != name || p.File != (kind == "files") {
					continue
				}
				if !open {
					if !first {
						b = append(b, ',')
					}
					first, open = false, true
					b = AppendString(b, name)
					b = append(b, ":["...)
				} else {
					b = append(b, ',')
				}
				switch {
				case p.File:
					b = append(b, `{"sha256":"`...)
					b = hex.AppendEncode(b, p.SHA256[:])
					b = append(b, `","size":`...)
					b = strconv.AppendInt(b, p.Size, 10)
					b = append(b, '}')
				case utf8.ValidString(p.Value):
					b = AppendString(b, p.Value)
				default:
					b = append(b, `{"base64":"`...)
					b = base64.StdEncoding.AppendEncode(b, []byte(p.Value))
					b = append(b, `"}`...)
				}
			}
			if open {
				b = append(b, ']')
			}
		}
	}
	return append(b, "}}"...)
}
