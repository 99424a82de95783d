package cachekey

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// checkKey fails t unless key is a legal memcached key (gomemcache's
// legalKey: at most 250 bytes, no byte <= ' ' and no DEL) of the form
// "<ns>:v1:<64 lowercase hex>".
func checkKey(t testing.TB, ns, key string) {
	t.Helper()
	if len(key) > 250 || len(key) > MaxKeyLen {
		t.Fatalf("key too long (%d bytes): %q", len(key), key)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c == 0x7f {
			t.Fatalf("key has illegal byte %#x at %d: %q", c, i, key)
		}
	}
	prefix := ns + ":v1:"
	if !strings.HasPrefix(key, prefix) {
		t.Fatalf("key %q lacks prefix %q", key, prefix)
	}
	h := key[len(prefix):]
	if len(h) != 64 {
		t.Fatalf("key %q: hash part has %d chars, want 64", key, len(h))
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			t.Fatalf("key %q: non-hex %q in hash", key, c)
		}
	}
}

// chatBody returns a realistic chat-completions request of about size
// bytes: a system prompt, alternating user/assistant turns, one tool
// call and its result, two tool definitions and sampling parameters.
func chatBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"llama-3.3-70b","temperature":0.7,"top_p":1,"max_tokens":512,"stream":false,"messages":[`)
	b.WriteString(`{"role":"system","content":"You are a helpful assistant. Answer concisely and cite sources when you can."}`)
	turn := 0
	tail := `],"tools":[{"type":"function","function":{"name":"get_weather","description":"Get the current weather for a city","parameters":{"type":"object","properties":{"city":{"type":"string","description":"City name, e.g. Paris"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["city"]}}}],"tool_choice":"auto","seed":42,"user":"user-1234"}`
	for b.Len()+len(tail) < size || turn < 2 {
		switch turn % 4 {
		case 0:
			fmt.Fprintf(&b, `,{"role":"user","content":"Question %d: what is the weather like in Paris today, and should I take an umbrella? Also, \"quoted\" text and caf\u00e9."}`, turn)
		case 1:
			fmt.Fprintf(&b, `,{"role":"assistant","content":null,"tool_calls":[{"id":"call_%d","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"unit\":\"celsius\"}"}}]}`, turn)
		case 2:
			fmt.Fprintf(&b, `,{"role":"tool","tool_call_id":"call_%d","content":"{\"temperature\":14.5,\"condition\":\"light rain\",\"humidity\":0.82}"}`, turn-1)
		case 3:
			fmt.Fprintf(&b, `,{"role":"assistant","content":"It is 14.5 \u00b0C with light rain in Paris (humidity 82%%).\nYes, take an umbrella."}`)
		}
		turn++
	}
	b.WriteString(tail)
	return b.Bytes()
}

func TestChatBodyHelper(t *testing.T) {
	for _, size := range []int{1 << 10, 100 << 10} {
		body := chatBody(size)
		if len(body) < size || len(body) > size+300 {
			t.Errorf("chatBody(%d) has %d bytes", size, len(body))
		}
		if _, err := Canonicalize(nil, body); err != nil {
			t.Errorf("chatBody(%d): %v", size, err)
		}
	}
}
