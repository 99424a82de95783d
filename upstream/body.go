package upstream

import (
	"errors"
	"strconv"
)

// ErrNoModel is returned by RewriteModel for a body without a top-level
// string "model".
var ErrNoModel = errors.New("request body has no top-level model string")

// RewriteModel returns body with the value of its top-level "model" field
// replaced by model, every other byte unchanged. body must be valid JSON
// (the proxy validated it). When the value already equals model, body is
// returned as is (not copied).
func RewriteModel(body []byte, model string) ([]byte, error) {
	start, end, ok := TopLevelValue(body, "model")
	if !ok || body[start] != '"' {
		return nil, ErrNoModel
	}
	quoted := strconv.AppendQuote(nil, model)
	if string(body[start:end]) == string(quoted) {
		return body, nil
	}
	out := make([]byte, 0, len(body)-(end-start)+len(quoted))
	out = append(out, body[:start]...)
	out = append(out, quoted...)
	return append(out, body[end:]...), nil
}

// TopLevelValue finds the value of key in a JSON object and returns its byte
// span. It assumes valid JSON. The key is compared as raw bytes between the
// quotes, so an escaped spelling of "model" is not matched; the proxy reads
// the model with encoding/json, which would see it, so RewriteModel then
// reports ErrNoModel rather than send the alias unmapped.
func TopLevelValue(b []byte, key string) (start, end int, ok bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return 0, 0, false
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= len(b) || b[i] != '"' {
			return 0, 0, false
		}
		ks := i
		i = skipString(b, i)
		k := b[ks+1 : i-1]
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ':' {
			return 0, 0, false
		}
		i = skipWS(b, i+1)
		vs := i
		i = skipValue(b, i)
		if i < 0 {
			return 0, 0, false
		}
		if string(k) == key {
			return vs, i, true
		}
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ',' {
			return 0, 0, false
		}
		i++
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	default:
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i
	}
}
