package openai

import "testing"

func TestMaxTokens(t *testing.T) {
	tests := []struct {
		body string
		want int64
	}{
		{`{"model":"m","messages":[]}`, 0},
		{`{"model":"m","messages":[],"max_tokens":256}`, 256},
		{`{"model":"m","messages":[],"max_completion_tokens":512}`, 512},
		{`{"max_tokens":100,"max_completion_tokens":300}`, 300},
		{`{"max_completion_tokens":null,"max_tokens":64}`, 64},
		{`{"max_tokens":0}`, 0},
		{`{"max_tokens":-5}`, 0},
		{`{"max_tokens":1.5}`, 0},
		{`{"max_tokens":"100"}`, 0},
		{`{"messages":[{"content":"{\"max_tokens\":9}"}]}`, 0}, // nested: not the request's
		{`[1,2]`, 0},
		{`not json`, 0},
	}
	for _, tt := range tests {
		if got := MaxTokens([]byte(tt.body)); got != tt.want {
			t.Errorf("MaxTokens(%s) = %d, want %d", tt.body, got, tt.want)
		}
	}
}
