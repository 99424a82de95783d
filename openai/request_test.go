package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"switchyard/jsonscan"
)

func TestRewriteModel(t *testing.T) {
	cases := []struct {
		name, body, model, want string
	}{
		{"first key", `{"model":"llama-3.3-70b","messages":[]}`, "llama-3.3-70b-versatile", `{"model":"llama-3.3-70b-versatile","messages":[]}`},
		{"spaces around colon", `{ "model" : "a" , "stream" : true }`, "b", `{ "model" : "b" , "stream" : true }`},
		{"newlines and tabs", "{\n\t\"model\":\r\n  \"a\"\n}\n", "b", "{\n\t\"model\":\r\n  \"b\"\n}\n"},
		{"leading whitespace", "  \n{\"model\":\"a\"}", "b", "  \n{\"model\":\"b\"}"},
		{"not the first key", `{"messages":[{"role":"user","content":"hi"}],"model":"a","stream":true}`, "b", `{"messages":[{"role":"user","content":"hi"}],"model":"b","stream":true}`},
		{"last key", `{"stream":false,"model":"a"}`, "bb", `{"stream":false,"model":"bb"}`},
		{"nested model keys untouched",
			`{"messages":[{"role":"user","model":"x","content":"hi"}],"metadata":{"model":"y","n":{"model":"z"}},"model":"a"}`, "b",
			`{"messages":[{"role":"user","model":"x","content":"hi"}],"metadata":{"model":"y","n":{"model":"z"}},"model":"b"}`},
		{"nested model before top-level in arrays", `{"tools":[[{"model":"x"}],{"model":["y"]}],"model":"a"}`, "b", `{"tools":[[{"model":"x"}],{"model":["y"]}],"model":"b"}`},
		{"escaped quotes before the key",
			`{"messages":[{"content":"say \"model\":\"x\", then {\"model\":\"y\"}"}],"model":"a"}`, "b",
			`{"messages":[{"content":"say \"model\":\"x\", then {\"model\":\"y\"}"}],"model":"b"}`},
		{"string ending in a backslash", `{"path":"C:\\","model":"a"}`, "b", `{"path":"C:\\","model":"b"}`},
		{"brackets inside strings", `{"x":"}]{[","y":["]",{"z":"}"}],"model":"a"}`, "b", `{"x":"}]{[","y":["]",{"z":"}"}],"model":"b"}`},
		{"literals before the key", `{"t":-1.5e3,"b":true,"f":false,"n":null,"e":{},"a":[],"model":"a"}`, "b", `{"t":-1.5e3,"b":true,"f":false,"n":null,"e":{},"a":[],"model":"b"}`},
		{"unicode around", `{"messages":[{"content":"héllo ✓ 🚀 \u00e9"}],"model":"a","x":"ü"}`, "b", `{"messages":[{"content":"héllo ✓ 🚀 \u00e9"}],"model":"b","x":"ü"}`},
		{"unicode model", `{"model":"a"}`, "модель-✓🚀", `{"model":"модель-✓🚀"}`},
		{"old value with escapes", `{"model":"a\"b\\c\u0041"}`, "d", `{"model":"d"}`},
		{"new value needing escapes", `{"model":"a"}`, "a\"b\\c\n\x01\x7f", `{"model":"a\"b\\c\n\u0001` + "\x7f" + `"}`},
		{"invalid UTF-8 in new value", `{"model":"a"}`, "a\xffb", `{"model":"a\ufffdb"}`},
		{"empty old value", `{"model":""}`, "b", `{"model":"b"}`},
		{"empty new value", `{"model":"a"}`, "", `{"model":""}`},
		{"escaped key", `{"mod\u0065l":"a"}`, "b", `{"mod\u0065l":"b"}`},
		{"duplicate keys: the last one counts", `{"model":"a","x":1,"model":"c"}`, "b", `{"model":"a","x":1,"model":"b"}`},
		{"other spellings are other keys", `{"Model":"x","MODEL":"y","model":"a"}`, "b", `{"Model":"x","MODEL":"y","model":"b"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			orig := bytes.Clone(body)
			got, err := RewriteModel(body, tc.model)
			if err != nil {
				t.Fatalf("RewriteModel: %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("RewriteModel(%s, %q)\n got %s\nwant %s", tc.body, tc.model, got, tc.want)
			}
			if !bytes.Equal(body, orig) {
				t.Errorf("RewriteModel modified its input: %s", body)
			}
			if !json.Valid(got) {
				t.Errorf("output is not valid JSON: %s", got)
			}
			checkSpan(t, body, got)
		})
	}
}

// checkSpan checks that got is body with only the top-level model value
// replaced: the bytes before and after it are identical.
func checkSpan(t *testing.T, body, got []byte) {
	t.Helper()
	start, end, ok := topLevel(body, "model")
	if !ok {
		t.Fatalf("topLevel(%q, model) found nothing", body)
	}
	suffix := body[end:]
	if !bytes.HasPrefix(got, body[:start]) || !bytes.HasSuffix(got, suffix) || len(got) < start+len(suffix) {
		t.Errorf("bytes outside the model value changed:\n got %q\nbody %q", got, body)
	}
}

func TestRewriteModelSameModel(t *testing.T) {
	body := []byte(`{"messages":[],"model":"llama-3.1-8b-instant"}`)
	got, err := RewriteModel(body, "llama-3.1-8b-instant")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(body) || &got[0] != &body[0] {
		t.Errorf("RewriteModel with the same model copied the body")
	}
	allocs := testing.AllocsPerRun(100, func() { _, _ = RewriteModel(body, "llama-3.1-8b-instant") })
	if allocs > 1 {
		t.Errorf("RewriteModel with the same model allocates %v times", allocs)
	}
}

func TestRewriteModelNoModel(t *testing.T) {
	for _, body := range []string{
		`{}`,
		`{"messages":[]}`,
		`{"messages":[{"model":"nested"}]}`,
		`{"metadata":{"model":"nested"}}`,
		`{"content":"\"model\":\"x\""}`,
		`{"Model":"a"}`,
		`{"model":1}`,
		`{"model":null}`,
		`{"model":true}`,
		`{"model":["a"]}`,
		`{"model":{"name":"a"}}`,
		`{"model":"a","model":null}`,
		`["model","a"]`,
		`"model"`,
		`null`,
		``,
		`   `,
		// Invalid JSON must not panic either.
		`{`,
		`{"`,
		`{"model`,
		`{"model"`,
		`{"model":`,
		`{"model":"a`,
		`{"model" "a"}`,
		`{"model":}`,
		`{"x":"\`,
		`{"x":[{"y":"}`,
		`{"x":1 "model":"a"}`,
		`{"model":"a",}`,
	} {
		got, err := RewriteModel([]byte(body), "b")
		if !errors.Is(err, ErrNoModel) || got != nil {
			t.Errorf("RewriteModel(%q) = %q, %v; want nil, ErrNoModel", body, got, err)
		}
	}
}

func TestTopLevelSpans(t *testing.T) {
	body := `{ "messages" : [{"role":"user","content":"a \"b\" {c}"}], "stream":true,` +
		`"stream_options":{"include_usage":true},"temperature": 0.5 ,"n":null,"stop":["\n"],"user":"u"}`
	cases := []struct {
		key, want string
		ok        bool
	}{
		{"messages", `[{"role":"user","content":"a \"b\" {c}"}]`, true},
		{"stream", "true", true},
		{"stream_options", `{"include_usage":true}`, true},
		{"temperature", "0.5", true},
		{"n", "null", true},
		{"stop", `["\n"]`, true},
		{"user", `"u"`, true},
		{"include_usage", "", false}, // nested only
		{"role", "", false},
		{"content", "", false},
		{"model", "", false},
		{"", "", false},
	}
	for _, tc := range cases {
		start, end, ok := topLevel([]byte(body), tc.key)
		if ok != tc.ok || (ok && body[start:end] != tc.want) {
			got := ""
			if ok {
				got = body[start:end]
			}
			t.Errorf("topLevel(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
	if _, _, ok := topLevel([]byte(`{}`), "stream_options"); ok {
		t.Errorf("TopLevelValue found a key in {}")
	}
}

// FuzzRewriteModel checks RewriteModel against encoding/json: for any valid
// JSON object with a string "model", the output is valid JSON that decodes
// to the input object with only "model" changed. On any input it must not
// panic.
func FuzzRewriteModel(f *testing.F) {
	for _, s := range []string{
		`{"model":"llama-3.3-70b","messages":[{"role":"user","content":"Hello"}],"stream":true}`,
		`{"messages":[{"role":"system","content":"You are \"helpful\"."},{"role":"user","content":"{\"model\":\"x\"}"}],"model":"llama-3.1-8b","temperature":0.2,"max_tokens":256}`,
		`{"model":"meta-llama/Llama-3.3-70B-Instruct:groq","stream":true,"stream_options":{"include_usage":true}}`,
		`{"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"model":{"type":"string"}}}}}],"model":"a"}`,
		` { "model" : "a" , "n" : 1 } `,
		`{"mod\u0065l":"a"}`,
		`{"model":"a","model":"b"}`,
		`{"model":"a","Model":"b"}`,
		`{"model":"\u00e9\ud83d\ude80"}`,
		`{"x":"\\","model":"a"}`,
		`{"model":1}`,
		`[]`,
		`{"a":[1,2,{"b":null}],"model":"m","c":-0.5e-10}`,
	} {
		f.Add([]byte(s), "llama-3.3-70b-versatile")
		f.Add([]byte(s), "a\"b\\c\n\x00\x7f\u2028\xff🚀")
	}
	f.Fuzz(func(t *testing.T, body []byte, model string) {
		start, end, ok := topLevel(body, "model")
		if ok && (start < 0 || end > len(body) || start >= end) {
			t.Fatalf("TopLevelValue span [%d,%d) outside %d bytes", start, end, len(body))
		}
		got, err := RewriteModel(body, model)
		if !json.Valid(body) {
			return
		}
		var in any
		if json.Unmarshal(body, &in) != nil {
			return // valid but not decodable, e.g. 1e999
		}
		obj, isObj := in.(map[string]any)
		old, isString := obj["model"].(string)
		if !isObj || !isString {
			if !errors.Is(err, ErrNoModel) {
				t.Fatalf("RewriteModel(%s) = %s, %v; want ErrNoModel", body, got, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("RewriteModel(%s): %v", body, err)
		}
		if !json.Valid(got) {
			t.Fatalf("RewriteModel(%s, %q) = %s: invalid JSON", body, model, got)
		}
		var out map[string]any
		if err := json.Unmarshal(got, &out); err != nil {
			t.Fatalf("decoding %s: %v", got, err)
		}
		want := string([]rune(model)) // invalid UTF-8 decodes as U+FFFD
		if out["model"] != want {
			t.Errorf("model = %q, want %q (output %s)", out["model"], want, got)
		}
		obj["model"] = want
		if !reflect.DeepEqual(out, obj) {
			t.Errorf("RewriteModel(%s, %q) = %s: other fields changed", body, model, got)
		}
		checkSpan(t, body, got)
		if old == model && bytes.Equal(got, body) && len(got) > 0 && &got[0] != &body[0] {
			t.Errorf("unchanged model: body copied")
		}
	})
}

// topLevel is jsonscan.Members for one key, as a span.
func topLevel(body []byte, key string) (start, end int, ok bool) {
	var sp [1]jsonscan.Span
	if object, _ := jsonscan.Members(body, []string{key}, sp[:]); !object || !sp[0].Found() {
		return 0, 0, false
	}
	return sp[0].Start, sp[0].End, true
}

func TestParseRequestPerEndpoint(t *testing.T) {
	cases := []struct {
		name   string
		ep     Endpoint
		body   string
		stream bool
		param  string // the *RequestError's param; "" = accepted
	}{
		{"chat", Chat, `{"model":"m","messages":[],"stream":true}`, true, ""},
		{"chat without messages", Chat, `{"model":"m","input":"x"}`, false, "messages"},
		{"chat messages not an array", Chat, `{"model":"m","messages":"hi"}`, false, "messages"},
		{"completions", Completions, `{"model":"m","prompt":["a","b"],"stream":true}`, true, ""},
		{"completions without prompt", Completions, `{"model":"m","messages":[]}`, false, "prompt"},
		{"embeddings string", Embeddings, `{"model":"m","input":"hello"}`, false, ""},
		{"embeddings array", Embeddings, `{"model":"m","input":["a","b"],"dimensions":8}`, false, ""},
		{"embeddings null input", Embeddings, `{"model":"m","input":null}`, false, "input"},
		{"embeddings stream ignored", Embeddings, `{"model":"m","input":"x","stream":"yes"}`, false, ""},
		{"responses without input", Responses, `{"model":"m","previous_response_id":"resp_1","stream":true}`, true, ""},
		{"responses without model", Responses, `{"input":"hi"}`, false, "model"},
		{"responses bad stream", Responses, `{"model":"m","stream":1}`, false, "stream"},
		{"unknown endpoint", Endpoint("images/generations"), `{"model":"m"}`, false, "-"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := ParseRequest(c.ep, []byte(c.body))
			var re *RequestError
			switch {
			case c.param == "" && err != nil:
				t.Fatalf("ParseRequest: %v", err)
			case c.param == "-":
				if !errors.As(err, &re) {
					t.Fatalf("err = %v, want a *RequestError", err)
				}
			case c.param != "":
				if !errors.As(err, &re) || re.Param != c.param {
					t.Fatalf("err = %#v, want a *RequestError on %q", err, c.param)
				}
			default:
				if req.Model != "m" || req.Stream != c.stream || req.Endpoint != c.ep {
					t.Fatalf("got %+v", req)
				}
			}
		})
	}
}
