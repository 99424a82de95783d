// Package jsonscan validates JSON in one pass over its bytes and, on the
// way, locates the values of chosen top-level object members, without
// decoding anything or allocating.
//
// The proxy's hot path needs both for every request body and every answer:
// is it valid JSON, and where are "model", "stream", "error" or "usage"?
// encoding/json.Valid followed by a search per field walks the bytes several
// times, through a state machine that calls a function per byte; this
// scanner walks them once and skips the inside of strings eight bytes at a
// time. It accepts exactly what encoding/json.Valid accepts (fuzzed against
// it): RFC 8259 JSON, strings not checked for valid UTF-8, nesting at most
// MaxDepth deep.
package jsonscan

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
)

// MaxDepth is the deepest nesting of arrays and objects accepted; it is
// encoding/json's limit.
const MaxDepth = 10000

// Span is the byte range b[Start:End] of a member's value; Key is where
// the member's quoted name starts, so b[Key:End] is the whole member. The
// zero Span means the member is absent.
type Span struct{ Key, Start, End int }

// Found reports whether the member was present.
func (s Span) Found() bool { return s.End > s.Start }

// Valid reports whether b is one valid JSON value (surrounding whitespace
// allowed), as encoding/json.Valid does.
func Valid(b []byte) bool {
	_, ok := Members(b, nil, nil)
	return ok
}

// Members validates b and, when b is a JSON object, sets spans[i] to the
// value of its top-level member named keys[i] (the last one when the name
// repeats, as encoding/json decodes it; names compare after unescaping).
// spans must be at least as long as keys; spans of absent members, and all
// spans when b is not an object or not valid, are zero. object reports
// whether b is an object; ok whether it is valid JSON.
func Members(b []byte, keys []string, spans []Span) (object, ok bool) {
	for k := range keys {
		spans[k] = Span{}
	}
	object, ok = scan(b, keys, spans)
	if !ok {
		for k := range keys {
			spans[k] = Span{}
		}
		return false, false
	}
	return object, true
}

// scan is one pass over b. Its stack holds one byte per open container:
// '{' or '['.
func scan(b []byte, keys []string, spans []Span) (object, ok bool) {
	var arr [32]byte // the stack's storage for the usual shallow documents
	stack := arr[:0]
	i := skipWS(b, 0)
	object = i < len(b) && b[i] == '{'
	key := -1     // index in keys of the top-level member being read
	keyStart := 0 // where that member's name starts
	valStart := 0 // where that member's value starts
	for {
		// A value starts at b[i] (after whitespace).
		i = skipWS(b, i)
		if i >= len(b) {
			return false, false
		}
		if len(stack) == 1 && key >= 0 {
			valStart = i
		}
		switch c := b[i]; {
		case c == '{' || c == '[':
			if len(stack) >= MaxDepth {
				return false, false
			}
			end := byte('}')
			if c == '[' {
				end = ']'
			}
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == end {
				i++ // empty: a complete value
				break
			}
			stack = append(stack, c)
			if c == '{' {
				if len(stack) == 1 {
					keyStart = i
				}
				if i, key, ok = memberName(b, keys, i, key, len(stack)); !ok {
					return false, false
				}
			}
			continue
		case c == '"':
			if i, ok = str(b, i); !ok {
				return false, false
			}
		case c == '-' || ('0' <= c && c <= '9'):
			if i, ok = number(b, i); !ok {
				return false, false
			}
		case c == 't':
			if i, ok = literal(b, i, "true"); !ok {
				return false, false
			}
		case c == 'f':
			if i, ok = literal(b, i, "false"); !ok {
				return false, false
			}
		case c == 'n':
			if i, ok = literal(b, i, "null"); !ok {
				return false, false
			}
		default:
			return false, false
		}
		// A value ended at b[i]: close the containers it completes, then
		// move to the next element or member.
		for {
			n := len(stack)
			if n == 0 {
				return object, skipWS(b, i) == len(b)
			}
			if n == 1 && key >= 0 {
				spans[key] = Span{keyStart, valStart, i}
				key = -1
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return false, false
			}
			top := stack[n-1]
			if b[i] == ',' {
				i++
				if top == '{' {
					i = skipWS(b, i)
					if n == 1 {
						keyStart = i
					}
					if i, key, ok = memberName(b, keys, i, key, len(stack)); !ok {
						return false, false
					}
				}
				break
			}
			if (top == '{' && b[i] != '}') || (top == '[' && b[i] != ']') {
				return false, false
			}
			i++
			stack = stack[:n-1]
		}
	}
}

// memberName reads `"name" :` at b[i] and returns the index after the
// colon and key: for a member of the top-level object, the index in s.keys
// of its name (-1 when not wanted); for a nested member (level > 1), key
// unchanged.
func memberName(b []byte, keys []string, i, key, level int) (next, k int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, -1, false
	}
	start := i
	if i, ok = str(b, i); !ok {
		return 0, -1, false
	}
	if level == 1 {
		key = -1
		if len(keys) > 0 {
			key = lookup(keys, b[start:i])
		}
	}
	i = skipWS(b, i)
	if i >= len(b) || b[i] != ':' {
		return 0, -1, false
	}
	return i + 1, key, true
}

// lookup returns the index in keys of the quoted JSON string name, or -1.
func lookup(keys []string, name []byte) int {
	raw := name[1 : len(name)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		var u string
		if json.Unmarshal(name, &u) != nil {
			return -1
		}
		raw = []byte(u)
	}
	for k, key := range keys {
		if string(raw) == key {
			return k
		}
	}
	return -1
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// specials returns a mask with the high bit set in the first (lowest) of
// the 8 bytes in x that ends or escapes a string or is a control character
// ('"', '\\', below 0x20); zero when there is none. (The has-zero-byte and
// has-byte-less-than tricks: a byte's high bit survives only when that byte
// underflows; the lowest flagged byte is exact, higher ones may be spurious.)
func specials(x uint64) uint64 {
	quote := x ^ (ones * '"')
	bslash := x ^ (ones * '\\')
	return (((quote - ones) &^ quote) | ((bslash - ones) &^ bslash) | ((x - ones*0x20) &^ x)) & highs
}

// str returns the index after the string starting at b[i] == '"'.
func str(b []byte, i int) (int, bool) {
	i++
	for {
		// Skip ordinary bytes eight at a time, then straight to the first
		// special one; the last few bytes one at a time.
		for i+8 <= len(b) {
			if m := specials(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		for i < len(b) && b[i] >= 0x20 && b[i] != '"' && b[i] != '\\' {
			i++
		}
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case '"':
			return i + 1, true
		case '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !hex(b[i+2]) || !hex(b[i+3]) || !hex(b[i+4]) || !hex(b[i+5]) {
					return i, false
				}
				i += 6
			default:
				return i, false
			}
		default: // a control character
			return i, false
		}
	}
}

func hex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// number returns the index after the number starting at b[i].
func number(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return i, false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return i, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return i, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

func literal(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// Elements calls fn with the byte span of each element of the JSON array
// b, in order, and stops early when fn returns false. b must be valid JSON
// (Members said so): on anything else Elements stops without panicking,
// and the spans it reported may be arbitrary. A b that is not an array
// has no elements.
func Elements(b []byte, fn func(start, end int) bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return
	}
	i = skipWS(b, i+1)
	for i < len(b) && b[i] != ']' {
		end := skipValue(b, i)
		if end <= i || !fn(i, end) {
			return
		}
		i = skipWS(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
}

// DeleteMember returns b without the top-level member at sp (a Span from
// Members on b), and without the comma that separated it from its
// neighbour, so the result is valid JSON when b was. b is not modified.
func DeleteMember(b []byte, sp Span) []byte {
	if !sp.Found() {
		return b
	}
	from, to := sp.Key, sp.End
	if j := skipWS(b, to); j < len(b) && b[j] == ',' {
		to = skipWS(b, j+1) // the member had a successor: take the comma after it
	} else {
		k := from - 1 // the last member: take the comma before it
		for k >= 0 && (b[k] == ' ' || b[k] == '\t' || b[k] == '\n' || b[k] == '\r') {
			k--
		}
		if k >= 0 && b[k] == ',' {
			from = k
		}
	}
	out := make([]byte, 0, len(b)-(to-from))
	out = append(out, b[:from]...)
	return append(out, b[to:]...)
}

// skipValue returns the index after the valid JSON value starting at b[i]
// (-1 when it does not end).
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, ok := str(b, i)
		if !ok {
			return -1
		}
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, ok := str(b, i)
				if !ok {
					return -1
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default:
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i
	}
}
