package jsonscan

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{`{}`, true},
		{` {"a" : [1, -2.5e+3, 0, "x", true, false, null, {}, []] } `, true},
		{`"\u00e9\n\"\\\/\b\f\r\t"`, true},
		{"\"\xff\xfe\"", true}, // encoding/json does not check UTF-8
		{`0`, true},
		{`-0.0e-0`, true},
		{``, false},
		{` `, false},
		{`{`, false},
		{`{"a"}`, false},
		{`{"a":}`, false},
		{`{"a":1,}`, false},
		{`[1,]`, false},
		{`[1 2]`, false},
		{`{"a":1 "b":2}`, false},
		{`01`, false},
		{`1.`, false},
		{`.5`, false},
		{`1e`, false},
		{`-`, false},
		{`+1`, false},
		{`tru`, false},
		{`nul`, false},
		{`"abc`, false},
		{"\"a\tb\"", false}, // control character in a string
		{`"\x"`, false},
		{`"\u12g4"`, false},
		{`"\u123"`, false},
		{`{} {}`, false},
		{`[}`, false},
		{`{]`, false},
		{`{1:2}`, false},
		{strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), true},
		{strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), false},
		{`{"long":"` + strings.Repeat("abcdefgh", 40) + `\"` + strings.Repeat("é", 30) + `"}`, true},
	} {
		if got := Valid([]byte(tc.in)); got != tc.want {
			t.Errorf("Valid(%.60q) = %v, want %v", tc.in, got, tc.want)
		}
		if ref := json.Valid([]byte(tc.in)); ref != tc.want {
			t.Errorf("test case %.60q: encoding/json.Valid = %v; fix the case", tc.in, ref)
		}
	}
}

func TestMembers(t *testing.T) {
	keys := []string{"model", "stream", "messages"}
	for _, tc := range []struct {
		in     string
		object bool
		want   []string // the three values, "" when absent
	}{
		{`{"model":"m","stream":true,"messages":[{"model":"inner"}]}`, true, []string{`"m"`, `true`, `[{"model":"inner"}]`}},
		{` { "messages" : [ ] , "model" : "a" , "model":"b" } `, true, []string{`"b"`, ``, `[ ]`}},
		{`{"mod\u0065l":{"x":[1,{"stream":1}]},"n":null}`, true, []string{`{"x":[1,{"stream":1}]}`, ``, ``}},
		{`{"stream":false}`, true, []string{``, `false`, ``}},
		{`{}`, true, []string{``, ``, ``}},
		{`[{"model":"m"}]`, false, []string{``, ``, ``}},
		{`"model"`, false, []string{``, ``, ``}},
		{`{"model":"m",}`, false, []string{``, ``, ``}},
	} {
		spans := make([]Span, len(keys))
		object, _ := Members([]byte(tc.in), keys, spans)
		if object != tc.object {
			t.Errorf("Members(%q) object = %v, want %v", tc.in, object, tc.object)
		}
		for k, sp := range spans {
			if got := tc.in[sp.Start:sp.End]; got != tc.want[k] {
				t.Errorf("Members(%q)[%s] = %q, want %q", tc.in, keys[k], got, tc.want[k])
			}
		}
	}
}

func TestMembersDoesNotAllocate(t *testing.T) {
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("hi there ", 50) + `"}],"stream":true}`)
	keys := []string{"model", "messages", "stream"}
	spans := make([]Span, 3)
	if n := testing.AllocsPerRun(100, func() { Members(body, keys, spans) }); n != 0 {
		t.Errorf("Members allocates %v times per call, want 0", n)
	}
}

// FuzzMembers checks Valid against encoding/json.Valid and the member
// spans against encoding/json's decoding into a map.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{`{"model":"m","stream":true}`, `[1,2,{"a":"b"}]`, `{"a\u0020":1,"a":{"b":[]}}`,
		`"\ud800"`, `-1.5e10`, `{"model":"x","model":"y"}`, "{\"\xff\":1}", `{"":0}`} {
		f.Add([]byte(s))
	}
	keys := []string{"model", "stream", "a", ""}
	f.Fuzz(func(t *testing.T, b []byte) {
		spans := make([]Span, len(keys))
		object, ok := Members(b, keys, spans)
		if ref := json.Valid(b); ok != ref {
			t.Fatalf("Members(%q) ok = %v, encoding/json.Valid = %v", b, ok, ref)
		}
		if !ok {
			return
		}
		var m map[string]json.RawMessage
		isObject := json.Unmarshal(b, &m) == nil && m != nil
		if object != isObject {
			t.Fatalf("Members(%q) object = %v, want %v", b, object, isObject)
		}
		for k, key := range keys {
			want, present := m[key]
			sp := spans[k]
			if present != sp.Found() || (present && !bytes.Equal(b[sp.Start:sp.End], want)) {
				t.Fatalf("Members(%q)[%q] = %q (found %v), want %q (present %v)", b, key, b[sp.Start:sp.End], sp.Found(), want, present)
			}
		}
	})
}

func BenchmarkMembers(b *testing.B) {
	body := []byte(`{"model":"bench","messages":[{"role":"system","content":"You are a concise assistant. Answer in one short paragraph and do not use lists."},` +
		`{"role":"user","content":"Explain in two sentences why a sidecar proxy in front of an LLM API should add as little latency as possible, and what it can cache."}],` +
		`"temperature":0,"max_tokens":128}`)
	keys := []string{"model", "messages", "stream", "stream_options"}
	spans := make([]Span, len(keys))
	b.Run("jsonscan", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			Members(body, keys, spans)
		}
	})
	b.Run("encoding-json-Valid", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			json.Valid(body)
		}
	})
}
