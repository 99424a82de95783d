package cachekey

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// reference canonicalizes data the slow, obvious way: encoding/json into
// maps, then sorted re-encoding by the documented rules. Numbers go through
// Canonicalize on their own (they are checked against math/big elsewhere).
func reference(t testing.TB, data []byte) []byte {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("reference decode %q: %v", data, err)
	}
	var b []byte
	var enc func(v any)
	encStr := func(s string) {
		b = append(b, '"')
		for _, r := range s {
			switch {
			case r == '"':
				b = append(b, `\"`...)
			case r == '\\':
				b = append(b, `\\`...)
			case r == '\b':
				b = append(b, `\b`...)
			case r == '\f':
				b = append(b, `\f`...)
			case r == '\n':
				b = append(b, `\n`...)
			case r == '\r':
				b = append(b, `\r`...)
			case r == '\t':
				b = append(b, `\t`...)
			case r < 0x20:
				b = fmt.Appendf(b, `\u%04x`, r)
			default:
				b = utf8.AppendRune(b, r)
			}
		}
		b = append(b, '"')
	}
	enc = func(v any) {
		switch v := v.(type) {
		case nil:
			b = append(b, "null"...)
		case bool:
			b = strconv.AppendBool(b, v)
		case string:
			encStr(v)
		case json.Number:
			n, err := Canonicalize(nil, []byte(v))
			if err != nil {
				t.Fatalf("number %s: %v", v, err)
			}
			b = append(b, n...)
		case []any:
			b = append(b, '[')
			for i, e := range v {
				if i > 0 {
					b = append(b, ',')
				}
				enc(e)
			}
			b = append(b, ']')
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			b = append(b, '{')
			for i, k := range keys {
				if i > 0 {
					b = append(b, ',')
				}
				encStr(k)
				b = append(b, ':')
				enc(v[k])
			}
			b = append(b, '}')
		}
	}
	enc(v)
	return b
}

// randomDoc writes a random JSON value, spelling the same abstract value
// differently depending on r (key order, whitespace, escapes, numbers).
type docGen struct {
	shape *rand.Rand // decides the value
	spell *rand.Rand // decides the spelling
}

var docKeys = []string{"model", "messages", "role", "content", "a", "b", "é", "\"", "\\", "\n", "", "tools", "z", "A", "a\u0000", "\U0001F600"}

func (g *docGen) ws(b *bytes.Buffer) {
	if g.spell.IntN(4) == 0 {
		b.WriteString([]string{" ", "\n", "\t", "\r\n  "}[g.spell.IntN(4)])
	}
}

func (g *docGen) str(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || g.spell.IntN(8) == 0:
			if r > 0xFFFF {
				r1, r2 := (r-0x10000)>>10+0xD800, (r-0x10000)&0x3FF+0xDC00
				fmt.Fprintf(b, `\u%04X\u%04x`, r1, r2)
			} else {
				fmt.Fprintf(b, `\u%04x`, r)
			}
		case r == '/' && g.spell.IntN(2) == 0:
			b.WriteString(`\/`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

func (g *docGen) value(b *bytes.Buffer, depth int) {
	kind := g.shape.IntN(8)
	if depth < 2 {
		kind = g.shape.IntN(4) // containers near the top
	}
	if depth > 5 {
		kind = 4 + kind%4
	}
	switch kind {
	case 0, 1: // object
		n := g.shape.IntN(7)
		keys := make([]string, 0, n)
		for range n {
			k := docKeys[g.shape.IntN(len(docKeys))]
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
		// Values are generated in key order so that the shape does not
		// depend on the spelling's permutation.
		vals := make([][]byte, len(keys))
		for i := range keys {
			var vb bytes.Buffer
			g.value(&vb, depth+1)
			vals[i] = vb.Bytes()
		}
		order := g.spell.Perm(len(keys))
		if g.spell.IntN(3) == 0 {
			slices.SortFunc(order, func(i, j int) int { return strings.Compare(keys[i], keys[j]) })
		}
		b.WriteByte('{')
		for i, o := range order {
			if i > 0 {
				b.WriteByte(',')
			}
			g.ws(b)
			g.str(b, keys[o])
			g.ws(b)
			b.WriteByte(':')
			g.ws(b)
			b.Write(vals[o])
			g.ws(b)
		}
		b.WriteByte('}')
	case 2, 3: // array
		n := g.shape.IntN(4)
		b.WriteByte('[')
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			g.ws(b)
			g.value(b, depth+1)
			g.ws(b)
		}
		b.WriteByte(']')
	case 4:
		g.str(b, []string{"", "hi", "café", "a/b", "tab\there", "\x01\x1f\x7f", "😀", "quote\"back\\"}[g.shape.IntN(8)])
	case 5:
		d := randDigits(g.shape)
		e := g.shape.IntN(40) - 20
		neg := g.shape.IntN(2) == 0
		b.WriteString(spell(g.spell, neg, d, e))
	case 6:
		b.WriteString([]string{"true", "false", "null"}[g.shape.IntN(3)])
	case 7:
		b.WriteString(strconv.Itoa(g.shape.IntN(100)))
	}
}

func TestRandomDocuments(t *testing.T) {
	for seed := range uint64(3000) {
		var docs [2][]byte
		for i := range docs {
			g := docGen{rand.New(rand.NewPCG(seed, 0)), rand.New(rand.NewPCG(seed, uint64(i+1)))}
			var b bytes.Buffer
			g.ws(&b)
			g.value(&b, 0)
			g.ws(&b)
			docs[i] = b.Bytes()
		}
		c0, err0 := Canonicalize(nil, docs[0])
		c1, err1 := Canonicalize(nil, docs[1])
		if err0 != nil || err1 != nil {
			t.Fatalf("seed %d: %v / %v\n%s\n%s", seed, err0, err1, docs[0], docs[1])
		}
		if !bytes.Equal(c0, c1) {
			t.Fatalf("seed %d: spellings differ:\n%s\n%s\n->\n%s\n%s", seed, docs[0], docs[1], c0, c1)
		}
		if ref := reference(t, docs[0]); !bytes.Equal(c0, ref) {
			t.Fatalf("seed %d: %s\n got %s\nwant %s", seed, docs[0], c0, ref)
		}
	}
}

func TestLargeObjectsAgainstReference(t *testing.T) {
	for _, n := range []int{15, 16, 17, 100, 5000} {
		doc := []byte(manyMembers(n))
		got, err := Canonicalize(nil, doc)
		if err != nil {
			t.Fatal(err)
		}
		if want := reference(t, doc); !bytes.Equal(got, want) {
			t.Errorf("%d members: got %.200s..., want %.200s...", n, got, want)
		}
	}
}

// pathologicalDocs are inputs that a naive canonicalizer handles in time
// proportional to size × depth, or worse.
func pathologicalDocs(size int) map[string]string {
	big := strings.Repeat("x", size)
	return map[string]string{
		"flat":                             `{"a":"` + big + `"}`,
		"deep objects around a big string": strings.Repeat(`{"b":1,"a":`, MaxDepth-1) + `"` + big + `"` + strings.Repeat("}", MaxDepth-1),
		"deep arrays around a big string":  strings.Repeat(`[`, MaxDepth) + `"` + big + `"` + strings.Repeat("]", MaxDepth),
		"huge exponent":                    "1e" + strings.Repeat("7", size),
		"huge negative exponent":           "-1.5e-" + strings.Repeat("1", size),
		"huge fraction":                    "0." + strings.Repeat("0", size) + "1",
		"many members":                     manyMembers(size / 40),
	}
}

// TestPathologicalInputs checks that the pathological documents
// canonicalize to output no larger than their input. How fast they do is
// measured by BenchmarkPathological (compare each to "flat"), not asserted
// here.
func TestPathologicalInputs(t *testing.T) {
	for name, doc := range pathologicalDocs(64 << 10) {
		out, err := Canonicalize(nil, []byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(out) > len(doc)+64 {
			t.Errorf("%s: output %d bytes for %d input", name, len(out), len(doc))
		}
	}
}

// BenchmarkPathological: every case should cost about what "flat" costs
// per byte; a size × depth implementation is hundreds of times slower.
func BenchmarkPathological(b *testing.B) {
	for name, doc := range pathologicalDocs(2 << 20) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			buf := make([]byte, 0, len(doc)+64)
			for b.Loop() {
				if _, err := Canonicalize(buf[:0], []byte(doc)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func manyMembers(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":{"y":%d,"x":[%d]}`, n-i, i, i)
	}
	b.WriteByte('}')
	return b.String()
}
