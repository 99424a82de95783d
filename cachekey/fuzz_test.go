package cachekey

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"strconv"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	`{"model":"llama-3.3-70b","messages":[{"role":"user","content":"Hello"}]}`,
	`{"model":"llama-3.1-8b","messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"2+2?"}],"temperature":0.2,"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}`,
	`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"What's in this image?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}],"n":2,"seed":123456789012345678901234567890}`,
	`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","tool_call_id":"call_1","content":"42"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"number"}}}}}],"tool_choice":{"type":"function","function":{"name":"f"}}}`,
	`{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object"},"strict":true}},"logit_bias":{"50256":-100},"stop":["\n\n","END"],"top_p":1.0e0,"presence_penalty":-0.5}`,
	` { "b" : [ 1 , 2.50 , -0 , 1E+2 , "\u00e9\/\ud83d\ude00" , true , false , null ] , "a" : { } } `,
	`[1e99999999999999999999,-0.000e-5,12345678901234567890123456789e-10,0.0000001]`,
	`"\"\\\b\f\n\r\t\u0000\u001f"`,
	`{"a":1,"a":2}`,
	`{"a":"\ud800"}`,
	"{\"a\":\"\xff\"}",
	`{"a":[1,2,]}`,
	`01`,
	`{"a":1}x`,
}

// strictMessages are the rejections of texts that encoding/json accepts.
var strictMessages = map[string]bool{
	msgDuplicate: true,
	msgUTF8:      true,
	msgSurrogate: true,
	msgDepth:     true,
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Add(chatBody(1 << 10))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := Canonicalize(nil, data)
		valid := json.Valid(data)
		if err != nil {
			var se *syntaxError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("error %v (%T) does not wrap ErrInvalidJSON", err, err)
			}
			if se.off < 0 || se.off > len(data) {
				t.Fatalf("error offset %d outside input of %d bytes", se.off, len(data))
			}
			if valid && !strictMessages[se.msg] {
				t.Fatalf("rejected valid JSON %q: %v", data, err)
			}
		} else {
			if !valid {
				t.Fatalf("accepted invalid JSON %q -> %q", data, out)
			}
			if !json.Valid(out) {
				t.Fatalf("invalid output %q for %q", out, data)
			}
			again, err := Canonicalize(nil, out)
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("not idempotent: %q -> %q -> %q (%v)", data, out, again, err)
			}
			in, o := decodeNumbers(t, data), decodeNumbers(t, out)
			if !equivalent(in, o) {
				t.Fatalf("meaning changed: %q -> %q", data, out)
			}
			if ref := reference(t, data); !bytes.Equal(out, ref) {
				t.Fatalf("%q: got %q, reference %q", data, out, ref)
			}
		}

		// Derive agrees with Canonicalize on objects.
		trimmed := bytes.TrimLeft(data, " \t\r\n")
		key, derr := Derive("fz", data)
		if len(trimmed) > 0 && trimmed[0] == '{' {
			if (derr == nil) != (err == nil) {
				t.Fatalf("Derive error %v, Canonicalize error %v", derr, err)
			}
		} else if derr == nil {
			t.Fatalf("Derive accepted non-object %q", data)
		}
		if derr == nil {
			checkKey(t, "fz", key)
		} else if !errors.Is(derr, ErrInvalidJSON) {
			t.Fatalf("Derive error %v does not wrap ErrInvalidJSON", derr)
		}
	})
}

func FuzzDerive(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add("switchyard", []byte(s), s)
	}
	f.Add("a.b-c_D9", chatBody(1<<10), "x-cache-key value")
	f.Add("", []byte(`{}`), "")
	f.Add("bad ns", []byte(`{}`), "\x00\xff")
	f.Fuzz(func(t *testing.T, namespace string, body []byte, text string) {
		key, err := Derive(namespace, body)
		switch {
		case !ValidNamespace(namespace):
			if err != ErrInvalidNamespace || key != "" {
				t.Fatalf("Derive(%q) = %q, %v; want ErrInvalidNamespace", namespace, key, err)
			}
		case err == nil:
			checkKey(t, namespace, key)
		case !errors.Is(err, ErrInvalidJSON) || key != "":
			t.Fatalf("Derive = %q, %v", key, err)
		}
		tk := FromText(namespace, text)
		if ValidNamespace(namespace) {
			checkKey(t, namespace, tk)
			if tk == key {
				t.Fatalf("text key equals derived key %s", key)
			}
		} else if tk != "" {
			t.Fatalf("FromText(%q) = %q, want empty", namespace, tk)
		}
	})
}

func decodeNumbers(t *testing.T, data []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("encoding/json cannot decode %q: %v", data, err)
	}
	return v
}

// equivalent compares decoded JSON values, numbers by decimal value.
func equivalent(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, av := range a {
			bv, ok := b[k]
			if !ok || !equivalent(av, bv) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equivalent(a[i], b[i]) {
				return false
			}
		}
		return true
	case json.Number:
		b, ok := b.(json.Number)
		return ok && sameNumber(string(a), string(b))
	default: // string, bool, nil
		return a == b
	}
}

// sameNumber reports whether two JSON numbers have the same value, as far as
// math/big can tell cheaply; numbers with huge exponents are not checked.
func sameNumber(a, b string) bool {
	if !moderate(a) || !moderate(b) {
		return true
	}
	fa, _, err1 := big.ParseFloat(a, 10, 8192, big.ToNearestEven)
	fb, _, err2 := big.ParseFloat(b, 10, 8192, big.ToNearestEven)
	return err1 == nil && err2 == nil && fa.Cmp(fb) == 0
}

func moderate(n string) bool {
	if len(n) > 600 {
		return false
	}
	if i := strings.IndexAny(n, "eE"); i >= 0 {
		e, err := strconv.Atoi(n[i+1:])
		return err == nil && -2000 < e && e < 2000
	}
	return true
}
