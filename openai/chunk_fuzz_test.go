package openai

import (
	"encoding/json"
	"testing"
)

// FuzzReadChunk checks the chunk view against encoding/json: validity,
// the in-band error, the usage member, and which choices finished.
func FuzzReadChunk(f *testing.F) {
	for _, s := range []string{
		`{"id":"x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}`,
		`{"choices":[{"index":1,"delta":{},"finish_reason":"stop"},{"index":0,"finish_reason":""}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`,
		`{"choices":[],"usage":{"prompt_tokens":12}}`,
		`{"error":{"message":"boom"}}`,
		`{"error":null,"choices":[{"finish_reason":"length"}]}`,
		`{"choices":[{"index":70,"finish_reason":"stop"}],"x_groq":{"usage":{"prompt_tokens":3}}}`,
		`[1,2]`, `{"choices":"x"}`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := ReadChunk(data)
		if c.Valid != json.Valid(data) {
			t.Fatalf("ReadChunk(%q).Valid = %v, json.Valid says otherwise", data, c.Valid)
		}
		var v map[string]json.RawMessage
		if json.Unmarshal(data, &v) != nil {
			return
		}
		isSet := func(m json.RawMessage) bool { return len(m) > 0 && string(m) != "null" }
		if c.Error != isSet(v["error"]) {
			t.Fatalf("ReadChunk(%s).Error = %v", data, c.Error)
		}
		usage := v["usage"]
		if wantSpan := isSet(usage) && usage[0] == '{'; c.UsageSpan.Found() != wantSpan {
			t.Fatalf("ReadChunk(%s).UsageSpan = %+v", data, c.UsageSpan)
		}
		if c.UsageSpan.Found() {
			var rest map[string]json.RawMessage
			if err := json.Unmarshal(c.WithoutUsage(data), &rest); err != nil {
				t.Fatalf("WithoutUsage(%s): %v", data, err)
			}
			if _, still := rest["usage"]; still {
				return // a repeated name: the earlier one stays
			}
			if len(rest) != len(v)-1 {
				t.Fatalf("WithoutUsage(%s) = %s: other members changed", data, c.WithoutUsage(data))
			}
		}
		// Member names match exactly (encoding/json's struct fields would
		// match "indeX" too): decode into maps.
		var choices []map[string]json.RawMessage
		if json.Unmarshal(v["choices"], &choices) != nil {
			return
		}
		want := map[int]bool{}
		for _, ch := range choices {
			if ch == nil {
				continue // a null element
			}
			i := 0
			if idx := ch["index"]; isSet(idx) {
				var n int
				if json.Unmarshal(idx, &n) != nil || n < 0 || n > 1<<20 || string(idx) != itoa(n) {
					return // an index ReadChunk skips
				}
				i = n
			}
			fr := ch["finish_reason"]
			want[i] = want[i] || (isSet(fr) && string(fr) != `""`)
		}
		complete := len(want) > 0
		for _, done := range want {
			complete = complete && done
		}
		var fin Finishes
		fin.Add(data, &c)
		if fin.Complete() != complete {
			t.Fatalf("Finishes after %s: Complete %v, want %v", data, fin.Complete(), complete)
		}
	})
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
