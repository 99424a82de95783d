package upstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
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
	quoted := appendJSONString(make([]byte, 0, len(model)+2), model)
	if string(body[start:end]) == string(quoted) {
		return body, nil
	}
	out := make([]byte, 0, len(body)-(end-start)+len(quoted))
	out = append(out, body[:start]...)
	out = append(out, quoted...)
	return append(out, body[end:]...), nil
}

// TopLevelValue finds the value of key in a JSON object and returns its byte
// span. It assumes valid JSON (on anything else it returns ok false or an
// arbitrary span, never panics). Keys are compared after unescaping, so
// "mod\u0065l" is "model". When the key occurs more than once, the last
// occurrence is returned: it is the one encoding/json (and most JSON
// parsers upstream) use, so the proxy and the upstream see the same value.
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
		if i < 0 {
			return 0, 0, false
		}
		k := b[ks:i]
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ':' {
			return 0, 0, false
		}
		i = skipWS(b, i+1)
		vs := i
		i = skipValue(b, i)
		if i <= vs {
			return 0, 0, false
		}
		if keyIs(k, key) {
			start, end, ok = vs, i, true
		}
		i = skipWS(b, i)
		if i < len(b) && b[i] == '}' {
			return start, end, ok
		}
		if i >= len(b) || b[i] != ',' {
			return 0, 0, false
		}
		i++
	}
}

// keyIs reports whether the quoted JSON string k spells key.
func keyIs(k []byte, key string) bool {
	raw := k[1 : len(k)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == key
	}
	var s string
	return json.Unmarshal(k, &s) == nil && s == key
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"',
// or -1 when it is not terminated.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
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
				i = skipString(b, i)
				if i < 0 {
					return -1
				}
				i--
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

// appendJSONString appends s as a JSON string literal, escaping only what
// JSON requires: '"', '\\' and control characters. Invalid UTF-8 becomes
// \ufffd, as with encoding/json. (strconv.Quote is not JSON: it writes
// \x7f, \a or \U0001f600 for some runes.)
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
