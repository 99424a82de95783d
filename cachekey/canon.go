package cachekey

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strconv"
	"unicode/utf8"
)

// syntaxError is the error for a rejected document: what is wrong and the
// byte offset in the input where it was noticed. It wraps ErrInvalidJSON.
type syntaxError struct {
	msg string
	off int
}

func (e *syntaxError) Error() string {
	return ErrInvalidJSON.Error() + ": " + e.msg + " at offset " + strconv.Itoa(e.off)
}

func (e *syntaxError) Unwrap() error { return ErrInvalidJSON }

// Error descriptions. The ones marked "strict" are for inputs that RFC 8259
// (and encoding/json.Valid) accept but this package refuses.
const (
	msgEOF           = "unexpected end of input"
	msgTrailing      = "unexpected data after top-level value"
	msgValue         = "invalid character looking for beginning of value"
	msgLiteral       = "invalid literal"
	msgKey           = "expected string object key"
	msgColon         = "expected ':' after object key"
	msgObjectSep     = "expected ',' or '}' after object member"
	msgArraySep      = "expected ',' or ']' after array element"
	msgControl       = "control character in string"
	msgEscape        = "invalid escape in string"
	msgNotObject     = "request body is not a JSON object"
	msgDuplicate     = "duplicate object key"          // strict
	msgUTF8          = "invalid UTF-8 in string"       // strict
	msgSurrogate     = "lone surrogate in \\u escape"  // strict
	msgDepth         = "nesting exceeds maximum depth" // strict
	msgUnterminated  = "unterminated string"
	msgHexEscape     = "invalid \\u escape"
	msgLeadingZero   = "number has a leading zero"
	msgMissingDigits = "number is missing digits"
)

// The canonicalizer works in two linear passes.
//
// Parsing writes every value's canonical bytes once, in document order, to
// an arena. Arrays, scalars and objects whose members already arrive in
// canonical order (and need no dropping) are then final as they stand. For
// every object, a record is appended in preorder, when its '{' is read; when
// the object ends, the record learns its arena extent and, if its members
// must be reordered or dropped, the sorted list of their arena spans.
//
// Emission copies the arena to the output, and at each reordered object
// emits its members in sorted order instead, each member recursively in the
// same way. Every arena byte is thus copied once however deep it is nested.

// member is an object member while its object is being read: its decoded
// name keys[ks:ke], the arena span [start,end) of its canonical
// "name":value text, and oi, the index of the first object record that can
// lie inside it.
type member struct {
	ks, ke     int
	start, end int
	oi         int
}

// span is a member of a reordered object, in canonical order.
type span struct {
	start, end int // arena extent of "name":value
	oi         int // first object record that can lie inside
}

// objRecord describes one object, in preorder.
type objRecord struct {
	start, end int  // arena extent, '{' to '}'
	next       int  // index of the first record after this object's subtree
	verbatim   bool // the arena text is canonical as it stands
	ps, pe     int  // sorted members: perm[ps:pe] (when not verbatim)
}

// state is the reusable working memory of one canonicalization.
type state struct {
	src   []byte
	pos   int
	depth int  // arrays and objects currently open
	drop  bool // drop the ignorable top-level request fields
	// rawEsc is set by str in raw mode when the decoded string has a byte
	// that the canonical form escapes.
	rawEsc bool

	arena []byte      // canonical values in document order
	keys  []byte      // decoded names of the open objects' members (a stack)
	mems  []member    // members of the open objects (a stack)
	objs  []objRecord // all objects, in preorder
	perm  []span      // sorted members of reordered objects
	out   []byte      // Derive's hash input
}

func (s *state) fail(msg string, off int) error {
	return &syntaxError{msg: msg, off: off}
}

// canonicalize appends the canonical form of src to dst. With request set,
// src must be a JSON object and the top-level fields that do not change the
// answer are left out. dst must not overlap s.arena.
func (s *state) canonicalize(dst, src []byte, request bool) ([]byte, error) {
	s.src = src
	s.pos = 0
	s.depth = 0
	s.drop = request
	s.arena = s.arena[:0]
	s.keys = s.keys[:0]
	s.mems = s.mems[:0]
	s.objs = s.objs[:0]
	s.perm = s.perm[:0]
	s.skipWS()
	if request && (s.pos >= len(src) || src[s.pos] != '{') {
		if s.pos >= len(src) {
			return dst, s.fail(msgEOF, s.pos)
		}
		return dst, s.fail(msgNotObject, s.pos)
	}
	var err error
	if s.arena, err = s.value(s.arena); err != nil {
		return dst, err
	}
	s.skipWS()
	if s.pos != len(src) {
		return dst, s.fail(msgTrailing, s.pos)
	}
	return s.emitRange(dst, 0, len(s.arena), 0), nil
}

// emitRange appends arena[start:end], with the reordered objects in it
// (whose records are at index oi or later) emitted in canonical order.
func (s *state) emitRange(dst []byte, start, end, oi int) []byte {
	cur := start
	for oi < len(s.objs) {
		o := &s.objs[oi]
		if o.start >= end {
			break
		}
		if o.verbatim {
			oi++ // its nested objects are still to be looked at
			continue
		}
		dst = append(dst, s.arena[cur:o.start]...)
		dst = append(dst, '{')
		for i, m := range s.perm[o.ps:o.pe] {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = s.emitRange(dst, m.start, m.end, m.oi)
		}
		dst = append(dst, '}')
		cur = o.end
		oi = o.next
	}
	return append(dst, s.arena[cur:end]...)
}

func (s *state) skipWS() {
	src, i := s.src, s.pos
	for i < len(src) {
		switch src[i] {
		case ' ', '\t', '\n', '\r':
			i++
			continue
		}
		break
	}
	s.pos = i
}

func (s *state) value(dst []byte) ([]byte, error) {
	if s.pos >= len(s.src) {
		return dst, s.fail(msgEOF, s.pos)
	}
	switch c := s.src[s.pos]; c {
	case '{':
		return s.object(dst)
	case '[':
		return s.array(dst)
	case '"':
		return s.str(dst, false)
	case 't':
		return s.literal(dst, "true")
	case 'f':
		return s.literal(dst, "false")
	case 'n':
		return s.literal(dst, "null")
	default:
		if c == '-' || ('0' <= c && c <= '9') {
			return s.number(dst)
		}
		return dst, s.fail(msgValue, s.pos)
	}
}

func (s *state) literal(dst []byte, lit string) ([]byte, error) {
	if !bytes.HasPrefix(s.src[s.pos:], []byte(lit)) {
		return dst, s.fail(msgLiteral, s.pos)
	}
	s.pos += len(lit)
	return append(dst, lit...), nil
}

func (s *state) array(dst []byte) ([]byte, error) {
	if s.depth >= MaxDepth {
		return dst, s.fail(msgDepth, s.pos)
	}
	s.depth++
	s.pos++ // '['
	dst = append(dst, '[')
	s.skipWS()
	if s.pos < len(s.src) && s.src[s.pos] == ']' {
		s.pos++
		s.depth--
		return append(dst, ']'), nil
	}
	for {
		var err error
		s.skipWS()
		if dst, err = s.value(dst); err != nil {
			return dst, err
		}
		s.skipWS()
		if s.pos >= len(s.src) {
			return dst, s.fail(msgEOF, s.pos)
		}
		switch s.src[s.pos] {
		case ',':
			s.pos++
			dst = append(dst, ',')
			continue
		case ']':
			s.pos++
			s.depth--
			return append(dst, ']'), nil
		}
		return dst, s.fail(msgArraySep, s.pos)
	}
}

// object reads the object at s.pos and appends its members to dst (the
// arena) in document order, recording it as described above member.
func (s *state) object(dst []byte) ([]byte, error) {
	if s.depth >= MaxDepth {
		return dst, s.fail(msgDepth, s.pos)
	}
	start := s.pos
	s.depth++
	s.pos++ // '{'
	s.skipWS()
	if s.pos < len(s.src) && s.src[s.pos] == '}' {
		s.pos++
		s.depth--
		return append(dst, '{', '}'), nil
	}

	top := s.drop && s.depth == 1
	idx := len(s.objs)
	s.objs = append(s.objs, objRecord{start: len(dst)})
	dst = append(dst, '{')
	keyBase, memBase := len(s.keys), len(s.mems)
	sorted, dropped := true, false
	for {
		var err error
		if s.pos >= len(s.src) {
			return dst, s.fail(msgEOF, s.pos)
		}
		if s.src[s.pos] != '"' {
			return dst, s.fail(msgKey, s.pos)
		}
		if len(s.mems) > memBase {
			dst = append(dst, ',')
		}
		m := member{ks: len(s.keys), start: len(dst), oi: len(s.objs)}
		if s.keys, err = s.str(s.keys, true); err != nil {
			return dst, err
		}
		m.ke = len(s.keys)
		name := s.keys[m.ks:m.ke]
		if s.rawEsc {
			dst = appendQuoted(dst, name)
		} else {
			dst = append(dst, '"')
			dst = append(dst, name...)
			dst = append(dst, '"')
		}
		dst = append(dst, ':')
		if len(s.mems) > memBase {
			prev := s.mems[len(s.mems)-1]
			switch bytes.Compare(s.keys[prev.ks:prev.ke], name) {
			case 0:
				return dst, s.fail(msgDuplicate, start)
			case 1:
				sorted = false
			}
		}
		if top && droppedField(name) {
			dropped = true
		}

		s.skipWS()
		if s.pos >= len(s.src) {
			return dst, s.fail(msgEOF, s.pos)
		}
		if s.src[s.pos] != ':' {
			return dst, s.fail(msgColon, s.pos)
		}
		s.pos++
		s.skipWS()
		if dst, err = s.value(dst); err != nil {
			return dst, err
		}
		m.end = len(dst)
		s.mems = append(s.mems, m)

		s.skipWS()
		if s.pos >= len(s.src) {
			return dst, s.fail(msgEOF, s.pos)
		}
		if c := s.src[s.pos]; c == ',' {
			s.pos++
			s.skipWS()
			continue
		} else if c != '}' {
			return dst, s.fail(msgObjectSep, s.pos)
		}
		s.pos++
		break
	}
	dst = append(dst, '}')

	o := &s.objs[idx]
	o.end = len(dst)
	o.next = len(s.objs)
	if sorted && !dropped {
		o.verbatim = true
	} else {
		ms := s.mems[memBase:]
		keys := s.keys
		if !sorted && !sortMembers(ms, keys) {
			return dst, s.fail(msgDuplicate, start)
		}
		o.ps = len(s.perm)
		for _, m := range ms {
			if top && droppedField(keys[m.ks:m.ke]) {
				continue
			}
			s.perm = append(s.perm, span{start: m.start, end: m.end, oi: m.oi})
		}
		o.pe = len(s.perm)
	}
	s.keys = s.keys[:keyBase]
	s.mems = s.mems[:memBase]
	s.depth--
	return dst, nil
}

// sortMembers sorts ms by decoded name and reports whether the names are
// distinct.
func sortMembers(ms []member, keys []byte) bool {
	if len(ms) > 16 {
		slices.SortFunc(ms, func(a, b member) int {
			return bytes.Compare(keys[a.ks:a.ke], keys[b.ks:b.ke])
		})
		for i := 1; i < len(ms); i++ {
			if bytes.Equal(keys[ms[i-1].ks:ms[i-1].ke], keys[ms[i].ks:ms[i].ke]) {
				return false
			}
		}
		return true
	}
	// Insertion sort: objects are small, and often nearly sorted.
	for i := 1; i < len(ms); i++ {
		m := ms[i]
		name := keys[m.ks:m.ke]
		j := i
		for ; j > 0; j-- {
			c := bytes.Compare(keys[ms[j-1].ks:ms[j-1].ke], name)
			if c == 0 {
				return false
			}
			if c < 0 {
				break
			}
			ms[j] = ms[j-1]
		}
		ms[j] = m
	}
	return true
}

// droppedField reports whether a top-level request member cannot change the
// generated answer. Keep in sync with the package documentation; changing
// this list changes keys, so it requires a new key version.
func droppedField(name []byte) bool {
	switch string(name) {
	case "stream", "stream_options",
		"user", "safety_identifier",
		"metadata", "store",
		"prompt_cache_key", "prompt_cache_retention":
		return true
	}
	return false
}

// str reads the string starting at s.pos (a '"'). With raw set it appends
// the decoded bytes, and sets s.rawEsc if any of them needs escaping in the
// canonical form; otherwise it appends the canonical quoted form.
//
// Input that is already canonical (printable ASCII other than '"' and '\\',
// and valid multi-byte UTF-8) is copied in runs; the ASCII part is scanned
// eight bytes at a time.
func (s *state) str(dst []byte, raw bool) ([]byte, error) {
	src := s.src
	i := s.pos + 1
	start := i
	if !raw {
		dst = append(dst, '"')
	} else {
		s.rawEsc = false
	}
	for {
		for i+8 <= len(src) && !hasSpecial(binary.LittleEndian.Uint64(src[i:])) {
			i += 8
		}
		for i < len(src) && plain[src[i]] {
			i++
		}
		if i >= len(src) {
			return dst, s.fail(msgUnterminated, s.pos)
		}
		c := src[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(src[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, s.fail(msgUTF8, i)
			}
			i += size
			continue
		}
		dst = append(dst, src[start:i]...)
		switch {
		case c == '"':
			s.pos = i + 1
			if !raw {
				dst = append(dst, '"')
			}
			return dst, nil
		case c < 0x20:
			return dst, s.fail(msgControl, i)
		}
		// c == '\\'
		if i+1 >= len(src) {
			return dst, s.fail(msgUnterminated, s.pos)
		}
		var r rune
		switch e := src[i+1]; e {
		case '"', '\\', '/':
			r = rune(e)
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'u':
			h, ok := hex4(src, i+2)
			if !ok {
				return dst, s.fail(msgHexEscape, i)
			}
			r = rune(h)
			if 0xD800 <= r && r < 0xDC00 {
				// A high surrogate must be followed by an escaped low one.
				if i+7 < len(src) && src[i+6] == '\\' && src[i+7] == 'u' {
					lo, ok := hex4(src, i+8)
					if !ok {
						return dst, s.fail(msgHexEscape, i+6)
					}
					if lo < 0xDC00 || lo >= 0xE000 {
						return dst, s.fail(msgSurrogate, i)
					}
					r = 0x10000 + (r-0xD800)<<10 + (rune(lo) - 0xDC00)
					i += 6
				} else {
					return dst, s.fail(msgSurrogate, i)
				}
			} else if 0xDC00 <= r && r < 0xE000 {
				return dst, s.fail(msgSurrogate, i)
			}
			i += 4
		default:
			return dst, s.fail(msgEscape, i)
		}
		i += 2
		start = i
		switch {
		case r >= utf8.RuneSelf:
			dst = utf8.AppendRune(dst, r)
		case raw:
			if r < 0x20 || r == '"' || r == '\\' {
				s.rawEsc = true
			}
			dst = append(dst, byte(r))
		default:
			dst = appendEscapedByte(dst, byte(r))
		}
	}
}

// plain reports the bytes that stand for themselves in both the input and
// the canonical form: printable ASCII and DEL, except '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// hasSpecial reports whether any of the eight bytes in x is not plain: a
// control character, '"', '\\' or a byte >= 0x80.
func hasSpecial(x uint64) bool {
	q := x ^ ('"' * lsb)
	b := x ^ ('\\' * lsb)
	// (v - lsb) &^ v has the high bit set in a byte that was zero (exact for
	// the lowest such byte, which is all that matters for "any").
	return ((x-0x20*lsb)|(q-lsb)|(b-lsb)|x)&msb != 0
}

// hex4 decodes the four hex digits at src[i:i+4].
func hex4(src []byte, i int) (uint16, bool) {
	if i+4 > len(src) {
		return 0, false
	}
	var v uint16
	for _, c := range src[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint16(c)
	}
	return v, true
}

const lowerHex = "0123456789abcdef"

// appendEscapedByte appends the canonical spelling of the ASCII byte c
// inside a string.
func appendEscapedByte(dst []byte, c byte) []byte {
	switch c {
	case '"':
		return append(dst, '\\', '"')
	case '\\':
		return append(dst, '\\', '\\')
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	if c < 0x20 {
		return append(dst, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xF])
	}
	return append(dst, c)
}

// appendQuoted appends the canonical quoted form of the decoded (valid
// UTF-8) string b.
func appendQuoted(dst, b []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i, c := range b {
		if c < 0x20 || c == '"' || c == '\\' {
			dst = append(dst, b[start:i]...)
			dst = appendEscapedByte(dst, c)
			start = i + 1
		}
	}
	dst = append(dst, b[start:]...)
	return append(dst, '"')
}
