package proxy

import (
	"testing"

	"switchyard/openai"
)

func TestClientChunkStripsUsage(t *testing.T) {
	tests := []struct{ name, raw, want string }{
		{"one data line", "data: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":1}}\n\n", "data: {\"choices\":[{\"index\":0}]}\n\n"},
		{"usage only: dropped", "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n", ""},
		{"multi-line data keeps a data: per line", "data: {\"choices\":\ndata: [{\"index\":0}],\"usage\":{\"prompt_tokens\":1}}\n\n", "data: {\"choices\":\ndata: [{\"index\":0}]}\n\n"},
		{"usage null (OpenAI's, with include_usage): stripped", "data: {\"choices\":[{\"index\":0}],\"usage\":null}\n\n", "data: {\"choices\":[{\"index\":0}]}\n\n"},
		{"text completion chunk", "data: {\"object\":\"text_completion\",\"choices\":[{\"text\":\"a\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":1}}\n\n", "data: {\"object\":\"text_completion\",\"choices\":[{\"text\":\"a\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n"},
		{"no usage: the upstream's bytes", "data:{\"choices\":[]}\r\n\r\n", "data:{\"choices\":[]}\r\n\r\n"},
	}
	for _, tc := range tests {
		ev := openai.ReadEvent([]byte(tc.raw))
		if got := string(clientChunk([]byte(tc.raw), &ev, false)); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
		if got := string(clientChunk([]byte(tc.raw), &ev, true)); got != tc.raw {
			t.Errorf("%s: a client that asked for usage got %q", tc.name, got)
		}
	}
}

func TestEchoesSplitKey(t *testing.T) {
	key := "gsk_SECRET0123456789"
	st := &state{secrets: []string{key}, secretsB: [][]byte{[]byte(key)}}
	ev := func(content string) string {
		return `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"` + content + `"},"finish_reason":null}]}` + "\n\n"
	}
	split := ev("your key: ") + ev(key[:8]) + ev(key[8:]) + "data: [DONE]\n\n"
	if !st.echoesSplitKey([]byte(split)) {
		t.Error("a key spelled across events not found")
	}
	if st.echoesSplitKey([]byte(ev("hello") + "data: [DONE]\n\n")) {
		t.Error("a clean stream reported")
	}
}
