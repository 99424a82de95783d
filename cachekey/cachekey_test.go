package cachekey

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const ns = "switchyard"

func mustDerive(t *testing.T, body string) string {
	t.Helper()
	k, err := Derive(ns, []byte(body))
	if err != nil {
		t.Fatalf("Derive(%s): %v", body, err)
	}
	checkKey(t, ns, k)
	return k
}

const baseBody = `{"model":"llama-3.3-70b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello, café!"}],"temperature":0.7,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"integer"}}}}}],"n":1,"seed":123456789012345678901234567890}`

func TestDeriveSame(t *testing.T) {
	base := mustDerive(t, baseBody)
	same := []struct{ name, body string }{
		{"reordered keys", `{"seed":123456789012345678901234567890,"n":1,"tools":[{"function":{"parameters":{"properties":{"x":{"type":"integer"}},"type":"object"},"name":"f"},"type":"function"}],"temperature":0.7,"messages":[{"content":"Be brief.","role":"system"},{"content":"Hello, café!","role":"user"}],"model":"llama-3.3-70b"}`},
		{"whitespace", "\r\n\t {\n  \"model\" : \"llama-3.3-70b\" ,\n  \"messages\" : [ { \"role\" : \"system\" , \"content\" : \"Be brief.\" } ,\t{ \"role\":\"user\",\"content\":\"Hello, café!\" } ] ,\n \"temperature\" : 0.7 , \"tools\" : [ { \"type\" : \"function\" , \"function\" : { \"name\" : \"f\" , \"parameters\" : { \"type\" : \"object\" , \"properties\" : { \"x\" : { \"type\" : \"integer\" } } } } } ] , \"n\" : 1 , \"seed\" : 123456789012345678901234567890 }\n"},
		{"escaped strings", `{"model":"llama\u002d3.3\u002D70b","messages":[{"role":"system","content":"Be\u0020brief."},{"role":"user","content":"Hello, caf\u00e9!"}],"temperature":0.7,"tools":[{"type":"function","function":{"name":"\u0066","parameters":{"type":"object","properties":{"x":{"type":"integer"}}}}}],"n":1,"seed":123456789012345678901234567890}`},
		{"escaped key", `{"mod\u0065l":"llama-3.3-70b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello, café!"}],"temperature":0.7,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"integer"}}}}}],"n":1,"seed":123456789012345678901234567890}`},
		{"number spellings", `{"model":"llama-3.3-70b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello, café!"}],"temperature":70e-2,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"integer"}}}}}],"n":1.000,"seed":1.23456789012345678901234567890E+29}`},
		{"number spellings 2", `{"model":"llama-3.3-70b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello, café!"}],"temperature":0.07e1,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"integer"}}}}}],"n":10e-1,"seed":12345678901234567890123456789.0e1}`},
		{"dropped stream", `{"stream":true,"stream_options":{"include_usage":true},"model":"llama-3.3-70b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello, café!"}],"temperature":0.7,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"integer"}}}}}],"n":1,"seed":123456789012345678901234567890}`},
		{"dropped user etc", `{"model":"llama-3.3-70b","user":"u-42","safety_identifier":"h","metadata":{"k":"v"},"store":true,"prompt_cache_key":"p","prompt_cache_retention":"24h","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello, café!"}],"temperature":0.7,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"integer"}}}}}],"n":1,"seed":123456789012345678901234567890}`},
	}
	for _, tc := range same {
		t.Run(tc.name, func(t *testing.T) {
			if got := mustDerive(t, tc.body); got != base {
				t.Errorf("key %s, want %s", got, base)
			}
		})
	}
}

func TestDeriveDifferent(t *testing.T) {
	different := []struct{ name, body string }{
		{"message content", `{"model":"m","messages":[{"role":"user","content":"Hello!"}]}`},
		{"temperature 0.7", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"temperature":0.7}`},
		{"temperature 0.8", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"temperature":0.8}`},
		{"no temperature", `{"model":"m","messages":[{"role":"user","content":"Hi"}]}`},
		{"model", `{"model":"m2","messages":[{"role":"user","content":"Hi"}]}`},
		{"tools", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}`},
		{"tools changed", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function","function":{"name":"g"}}]}`},
		{"nested key", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function","function":{"Name":"g"}}]}`},
		{"response_format", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"response_format":{"type":"json_object"}}`},
		{"n", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"n":2}`},
		{"seed", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"seed":123456789012345678901234567890}`},
		{"seed last digit", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"seed":123456789012345678901234567891}`},
		{"service_tier kept", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"service_tier":"flex"}`},
		{"array order", `{"model":"m","messages":[{"role":"assistant","content":"Hi"},{"role":"user","content":"Hi"}]}`},
		{"array order 2", `{"model":"m","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hi"}]}`},
		{"nested user kept", `{"model":"m","messages":[{"role":"user","content":"Hi","user":"x"}]}`},
		{"string vs number", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"n":"2"}`},
		{"null vs missing", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"n":null}`},
		{"empty object", `{}`},
		{"trailing space in content", `{"model":"m","messages":[{"role":"user","content":"Hi "}]}`},
		{"escaped quote", `{"model":"m","messages":[{"role":"user","content":"H\"i"}]}`},
		{"key with quote", `{"model":"m","messages":[{"role":"user","cont\"ent":"Hi"}]}`},
	}
	seen := map[string]string{}
	for _, tc := range different {
		k := mustDerive(t, tc.body)
		if prev, dup := seen[k]; dup {
			t.Errorf("%q and %q share key %s", prev, tc.name, k)
		}
		seen[k] = tc.name
	}
}

func TestDroppedOnlyAtTopLevel(t *testing.T) {
	a := mustDerive(t, `{"model":"m","extra":{"stream":true}}`)
	b := mustDerive(t, `{"model":"m","extra":{}}`)
	if a == b {
		t.Error("nested stream field was dropped")
	}
}

func TestDroppedFieldsStillValidated(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","stream":tru}`,
		`{"model":"m","user":"x","user":"y"}`,
		`{"model":"m","metadata":{"a":1,"a":2}}`,
	} {
		if _, err := Derive(ns, []byte(body)); !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("Derive(%s) = %v, want ErrInvalidJSON", body, err)
		}
	}
}

var invalidBodies = []struct{ name, body string }{
	{"empty", ``},
	{"whitespace only", " \n"},
	{"truncated", `{"model":"m","messages":[{"role":"user"`},
	{"truncated after key", `{"model"`},
	{"truncated after colon", `{"model":`},
	{"truncated in number", `{"n":-`},
	{"truncated escape", `{"a":"\`},
	{"truncated unicode escape", `{"a":"\u00`},
	{"trailing comma object", `{"a":1,}`},
	{"trailing comma array", `{"a":[1,2,]}`},
	{"leading comma", `{,"a":1}`},
	{"missing comma", `{"a":1 "b":2}`},
	{"missing colon", `{"a" 1}`},
	{"trailing garbage", `{"a":1}x`},
	{"two documents", `{"a":1}{"a":1}`},
	{"leading zero", `{"a":01}`},
	{"negative leading zero", `{"a":-01}`},
	{"bare dot end", `{"a":1.}`},
	{"bare dot start", `{"a":.5}`},
	{"plus sign", `{"a":+1}`},
	{"exponent without digits", `{"a":1e}`},
	{"exponent sign only", `{"a":1e+}`},
	{"hex number", `{"a":0x10}`},
	{"NaN", `{"a":NaN}`},
	{"Infinity", `{"a":Infinity}`},
	{"unterminated string", `{"a":"abc}`},
	{"bad escape", `{"a":"\x41"}`},
	{"bad unicode escape", `{"a":"\u12g4"}`},
	{"raw newline in string", "{\"a\":\"a\nb\"}"},
	{"raw tab in string", "{\"a\":\"a\tb\"}"},
	{"single quotes", `{'a':1}`},
	{"unquoted key", `{a:1}`},
	{"number key", `{1:1}`},
	{"bad literal", `{"a":tru}`},
	{"capital literal", `{"a":True}`},
	{"comment", `{"a":1/*c*/}`},
	{"non-object array", `[{"a":1}]`},
	{"non-object string", `"hello"`},
	{"non-object number", `42`},
	{"non-object null", `null`},
	{"duplicate keys", `{"a":1,"a":1}`},
	{"duplicate keys escaped", `{"a":1,"\u0061":2}`},
	{"duplicate keys apart", `{"b":1,"a":2,"b":3}`},
	{"duplicate keys apart sorted", `{"a":1,"b":2,"a":3}`},
	{"duplicate keys many members", `{"k20":0,"k19":0,"k18":0,"k17":0,"k16":0,"k15":0,"k14":0,"k13":0,"k12":0,"k11":0,"k10":0,"k09":0,"k08":0,"k07":0,"k06":0,"k05":0,"k04":0,"k03":0,"k02":0,"k01":0,"k15":1}`},
	{"nested duplicate keys", `{"m":[{"role":"user","role":"system"}]}`},
	{"invalid UTF-8", "{\"a\":\"\xff\"}"},
	{"truncated UTF-8", "{\"a\":\"\xc3\"}"},
	{"overlong UTF-8", "{\"a\":\"\xc0\xaf\"}"},
	{"UTF-8 surrogate", "{\"a\":\"\xed\xa0\x80\"}"},
	{"invalid UTF-8 key", "{\"\xfe\":1}"},
	{"lone high surrogate", `{"a":"\ud800"}`},
	{"lone high surrogate then char", `{"a":"\ud800x"}`},
	{"high surrogate then non-surrogate", `{"a":"\ud800\u0041"}`},
	{"lone low surrogate", `{"a":"\udc00"}`},
	{"reversed surrogates", `{"a":"\udc00\ud800"}`},
	{"BOM", "\xef\xbb\xbf{}"},
	{"NUL after", "{}\x00"},
	{"depth bomb arrays", `{"a":` + strings.Repeat("[", 100000)},
	{"depth bomb objects", strings.Repeat(`{"a":`, 100000)},
	{"depth bomb closed", `{"a":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`},
}

func TestDeriveInvalid(t *testing.T) {
	for _, tc := range invalidBodies {
		t.Run(tc.name, func(t *testing.T) {
			k, err := Derive(ns, []byte(tc.body))
			if !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("Derive = %q, %v; want error wrapping ErrInvalidJSON", k, err)
			}
			if k != "" {
				t.Errorf("key %q returned with error", k)
			}
			if !strings.Contains(err.Error(), "offset") {
				t.Errorf("error %q has no position", err)
			}
			dst := []byte("prefix")
			got, err := AppendDerive(dst, ns, []byte(tc.body))
			if err == nil || string(got) != "prefix" {
				t.Errorf("AppendDerive = %q, %v", got, err)
			}
		})
	}
}

func TestDepthLimit(t *testing.T) {
	nest := func(n int) string {
		return strings.Repeat("[", n) + strings.Repeat("]", n)
	}
	if _, err := Canonicalize(nil, []byte(nest(MaxDepth))); err != nil {
		t.Errorf("depth %d: %v", MaxDepth, err)
	}
	if _, err := Canonicalize(nil, []byte(nest(MaxDepth+1))); !errors.Is(err, ErrInvalidJSON) {
		t.Errorf("depth %d: %v, want ErrInvalidJSON", MaxDepth+1, err)
	}
	objs := strings.Repeat(`{"a":`, MaxDepth-1) + "{}" + strings.Repeat("}", MaxDepth-1)
	if _, err := Derive(ns, []byte(objs)); err != nil {
		t.Errorf("object depth %d: %v", MaxDepth, err)
	}
	objs = strings.Repeat(`{"a":`, MaxDepth) + "{}" + strings.Repeat("}", MaxDepth)
	if _, err := Derive(ns, []byte(objs)); !errors.Is(err, ErrInvalidJSON) {
		t.Errorf("object depth %d: %v, want ErrInvalidJSON", MaxDepth+1, err)
	}
}

func TestNamespace(t *testing.T) {
	valid := []string{"a", "switchyard", "prod-1.v2_x", strings.Repeat("n", 64)}
	invalid := []string{"", strings.Repeat("n", 65), "a b", "a:b", "é", "a\x00", "a/b", "a\x7f"}
	for _, n := range valid {
		if !ValidNamespace(n) {
			t.Errorf("ValidNamespace(%q) = false", n)
		}
		k, err := Derive(n, []byte(`{}`))
		if err != nil {
			t.Errorf("Derive(%q): %v", n, err)
		}
		checkKey(t, n, k)
		checkKey(t, n, FromText(n, "x"))
	}
	for _, n := range invalid {
		if ValidNamespace(n) {
			t.Errorf("ValidNamespace(%q) = true", n)
		}
		if k, err := Derive(n, []byte(`{}`)); err != ErrInvalidNamespace || k != "" {
			t.Errorf("Derive(%q) = %q, %v; want ErrInvalidNamespace", n, k, err)
		}
		if k := FromText(n, "x"); k != "" {
			t.Errorf("FromText(%q) = %q, want empty", n, k)
		}
	}
	a, _ := Derive("a", []byte(`{}`))
	b, _ := Derive("b", []byte(`{}`))
	if a[2:] != b[2:] || a == b {
		t.Errorf("namespaces should differ only in prefix: %s %s", a, b)
	}
}

func TestFromText(t *testing.T) {
	texts := []string{
		"", " ", "my key", "tab\there", "nl\nhere", "\x00\x01\x7f", "ünïcødé ✓ 🚀",
		"\xff\xfe invalid utf8", strings.Repeat("long key ", 1200), strings.Repeat("x", 511), strings.Repeat("x", 512),
		`{}`, `{"model":"m"}`,
	}
	seen := map[string]string{}
	for _, text := range texts {
		k := FromText(ns, text)
		checkKey(t, ns, k)
		if k != FromText(ns, text) {
			t.Errorf("FromText(%q) not deterministic", text)
		}
		if prev, dup := seen[k]; dup {
			t.Errorf("FromText(%q) == FromText(%q)", text, prev)
		}
		seen[k] = text
	}
	// Domain separation: a text never yields the key derived from the same
	// bytes, nor from a body whose canonical form is that text.
	for _, body := range []string{`{}`, `{"model":"m"}`} {
		d := mustDerive(t, body)
		if d == FromText(ns, body) {
			t.Errorf("FromText(%s) collides with Derive", body)
		}
	}
}

func TestDeriveMatchesCanonicalize(t *testing.T) {
	// Derive hashes "json\x00" + canonical form; a body without dropped
	// fields must therefore get the key of its canonical form.
	body := chatBody(4096)
	body = bytes.Replace(body, []byte(`"stream":false,`), nil, 1)
	body = bytes.Replace(body, []byte(`,"user":"user-1234"`), nil, 1)
	canon, err := Canonicalize(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	k1 := mustDerive(t, string(body))
	k2 := mustDerive(t, string(canon))
	if k1 != k2 {
		t.Errorf("Derive(body) %s != Derive(canonical) %s", k1, k2)
	}
	if k1 != mustDerive(t, string(chatBody(4096))) {
		t.Error("stream/user changed the key")
	}
}

func TestCanonicalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{}`, `{}`},
		{` [ ] `, `[]`},
		{`{"b":1,"a":2,"c":{"z":[3,2,1],"y":null}}`, `{"a":2,"b":1,"c":{"y":null,"z":[3,2,1]}}`},
		{`{"é":1,"z":2,"Z":3,"":4,"a\u0000":5,"a":6}`, `{"":4,"Z":3,"a":6,"a\u0000":5,"z":2,"é":1}`},
		{`"\u00e9\/\"\\\b\f\n\r\t\u0001\u001F\u007f\u2028"`, "\"é/\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\u2028\""},
		{`"\uD83D\uDE00😀"`, `"😀😀"`},
		{`"\u0000"`, `"\u0000"`},
		{`[true,false,null]`, `[true,false,null]`},
		{`{"a":{"b":{"c":{}}},"A":[{}]}`, `{"A":[{}],"a":{"b":{"c":{}}}}`},
		{`[1.0,-0,0e10,-0.0e-5,1E+2,1e-0]`, `[1,0,0,0,100,1]`},
		// keys sort by decoded bytes, not by their escaped spelling
		{`{"\"":1,"!":2,"#":3}`, `{"!":2,"\"":1,"#":3}`},
		{`{"\n":1,"\u0001":2," ":3}`, `{"\u0001":2,"\n":1," ":3}`},
	}
	for _, tc := range tests {
		got, err := Canonicalize(nil, []byte(tc.in))
		if err != nil {
			t.Errorf("Canonicalize(%s): %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("Canonicalize(%s)\n got %s\nwant %s", tc.in, got, tc.want)
		}
		again, err := Canonicalize(nil, got)
		if err != nil || !bytes.Equal(again, got) {
			t.Errorf("not idempotent: %s -> %s (%v)", got, again, err)
		}
	}
}

func TestCanonicalizeAppends(t *testing.T) {
	dst := []byte("prefix:")
	got, err := Canonicalize(dst, []byte(`{"b":1,"a":2}`))
	if err != nil || string(got) != `prefix:{"a":2,"b":1}` {
		t.Errorf("got %q, %v", got, err)
	}
	got, err = Canonicalize(dst, []byte(`{"b":1,"a":}`))
	if err == nil || string(got) != "prefix:" {
		t.Errorf("on error got %q, %v", got, err)
	}
	// Scalars are fine at the top level of Canonicalize.
	for _, in := range []string{`1`, `"x"`, `null`, `[]`} {
		if _, err := Canonicalize(nil, []byte(in)); err != nil {
			t.Errorf("Canonicalize(%s): %v", in, err)
		}
	}
}

func TestCanonicalizeInvalid(t *testing.T) {
	for _, tc := range invalidBodies {
		if strings.HasPrefix(tc.name, "non-object") {
			continue // only Derive insists on an object
		}
		if _, err := Canonicalize(nil, []byte(tc.body)); !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("%s: Canonicalize(%q) = %v, want ErrInvalidJSON", tc.name, tc.body, err)
		}
	}
}

func TestErrorPosition(t *testing.T) {
	_, err := Canonicalize(nil, []byte(`{"a":1}x`))
	var se *syntaxError
	if !errors.As(err, &se) || se.off != 7 || se.msg != msgTrailing {
		t.Errorf("got %v", err)
	}
	if want := "cachekey: invalid JSON: unexpected data after top-level value at offset 7"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

func TestLargeAndReuse(t *testing.T) {
	// Interleave big, small and failing inputs so that pooled state is
	// reused across them.
	big := chatBody(3 << 20)
	small := chatBody(1 << 10)
	kb, ks := mustDerive(t, string(big)), mustDerive(t, string(small))
	for range 3 {
		if _, err := Derive(ns, []byte(`{"a":[{"b":{"c":`)); err == nil {
			t.Fatal("expected error")
		}
		if k := mustDerive(t, string(small)); k != ks {
			t.Fatal("small key changed")
		}
		if k := mustDerive(t, string(big)); k != kb {
			t.Fatal("big key changed")
		}
	}
}

func TestAllocs(t *testing.T) {
	if raceEnabled || testing.CoverMode() != "" {
		t.Skip("allocation counts are unreliable under -race or -cover")
	}
	body := chatBody(1 << 10)
	buf := make([]byte, 0, MaxKeyLen)
	Derive(ns, body) // warm the pool
	if n := testing.AllocsPerRun(100, func() {
		buf, _ = AppendDerive(buf[:0], ns, body)
	}); n != 0 {
		t.Errorf("AppendDerive: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { Derive(ns, body) }); n > 1 {
		t.Errorf("Derive: %v allocs, want <= 1", n)
	}
	if n := testing.AllocsPerRun(100, func() { FromText(ns, "some header value") }); n > 1 {
		t.Errorf("FromText: %v allocs, want <= 1", n)
	}
	out := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { out, _ = Canonicalize(out[:0], body) }); n != 0 {
		t.Errorf("Canonicalize: %v allocs, want 0", n)
	}
}
