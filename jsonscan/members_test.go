package jsonscan

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestDeleteMember(t *testing.T) {
	tests := []struct{ in, key, want string }{
		{`{"a":1,"b":2,"c":3}`, "b", `{"a":1,"c":3}`},
		{`{"a":1,"b":2}`, "a", `{"b":2}`},
		{`{"a":1,"b":2}`, "b", `{"a":1}`},
		{`{"a":1}`, "a", `{}`},
		{`{ "a" : 1 , "b" : {"x":[1,2]} }`, "b", `{ "a" : 1  }`},
		{`{"a":1,"b":2}`, "z", `{"a":1,"b":2}`},
		{`{"u\u0073age":{"p":1},"choices":[]}`, "usage", `{"choices":[]}`},
	}
	for _, tc := range tests {
		var sp [1]Span
		if _, ok := Members([]byte(tc.in), []string{tc.key}, sp[:]); !ok {
			t.Fatalf("%s: not valid", tc.in)
		}
		if got := string(DeleteMember([]byte(tc.in), sp[0])); got != tc.want {
			t.Errorf("DeleteMember(%s, %s) = %s, want %s", tc.in, tc.key, got, tc.want)
		}
	}
}

func TestElements(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`[]`, nil},
		{` [ 1 , "a,]" , {"x":[1,{"y":"]"}]} , null ] `, []string{`1`, `"a,]"`, `{"x":[1,{"y":"]"}]}`, `null`}},
		{`{"a":1}`, nil},
	}
	for _, tc := range tests {
		var got []string
		Elements([]byte(tc.in), func(s, e int) bool { got = append(got, tc.in[s:e]); return true })
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Elements(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzDeleteMember checks, against encoding/json, that deleting a member
// leaves valid JSON with exactly the other members, and that Elements
// finds the elements encoding/json finds.
func FuzzDeleteMember(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":[1,2],"c":"x"}`, `{"usage":null}`, `[1,"2",[3],{"4":5}]`, `{"a":{"b":1},"a":2}`} {
		f.Add([]byte(s), "a")
	}
	f.Fuzz(func(t *testing.T, b []byte, key string) {
		var sp [1]Span
		object, ok := Members(b, []string{key}, sp[:])
		if !ok {
			return
		}
		var arr []json.RawMessage
		if json.Unmarshal(b, &arr) == nil {
			n := 0
			Elements(b, func(s, e int) bool {
				if n >= len(arr) || !json.Valid(b[s:e]) {
					t.Fatalf("element %d of %s: %q", n, b, b[s:e])
				}
				n++
				return true
			})
			if n != len(arr) {
				t.Fatalf("Elements found %d elements in %s, encoding/json %d", n, b, len(arr))
			}
		}
		if !object || !sp[0].Found() {
			return
		}
		out := DeleteMember(b, sp[0])
		var before, after map[string]json.RawMessage
		if json.Unmarshal(b, &before) != nil {
			return
		}
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("DeleteMember(%s, %q) = %s: %v", b, key, out, err)
		}
		if _, still := after[key]; still {
			// Only when the name repeats: the earlier one stays.
			return
		}
		delete(before, key)
		if len(before) != len(after) {
			t.Fatalf("DeleteMember(%s, %q) = %s: members %d, want %d", b, key, out, len(after), len(before))
		}
	})
}
