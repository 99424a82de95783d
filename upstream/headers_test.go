package upstream

import (
	"fmt"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestKeptHeaders(t *testing.T) {
	var h fasthttp.ResponseHeader
	h.SetContentType("application/json")
	h.Set("X-Request-Id", "req_1")
	h.Set("Server", "dropped")
	h.Set("Retry-After", "3")
	h.Set("retry-after-ms", "2500")
	h.Set("Set-Cookie", "dropped=1")
	for i := range 20 { // more than keptHeaders' stack room: none may be lost
		h.Set(fmt.Sprintf("X-Ratelimit-Limit-%02d", i), fmt.Sprint(i))
	}
	got := map[string]string{}
	for _, kv := range keptHeaders(&h) {
		got[kv.Key] = kv.Value
	}
	want := map[string]string{"Content-Type": "application/json", "X-Request-Id": "req_1", "Retry-After": "3", "Retry-After-Ms": "2500"}
	for i := range 20 {
		want[fmt.Sprintf("X-Ratelimit-Limit-%02d", i)] = fmt.Sprint(i)
	}
	if len(got) != len(want) {
		t.Errorf("kept %d headers, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}
