package proxy

import (
	"errors"
	"strings"
	"testing"

	"switchyard/cachekey"
	"switchyard/openai"
)

// TestStickyKey: a record's key is a legal memcached key whatever the id,
// distinct per kind, id and scope, and never the key of an answer.
func TestStickyKey(t *testing.T) {
	const ns = "switchyard"
	ids := []string{"resp_1", "conv_1", "", "a b\r\n\x00", strings.Repeat("é", 400), "resp_1\x00response"}
	seen := map[string]string{}
	for _, scope := range []string{"", "0123456789abcdef"} {
		for _, kind := range []string{stickyResponse, stickyConversation} {
			for _, id := range ids {
				k := stickyKey(ns, scope, kind, id)
				if len(k) > 250 || strings.ContainsAny(k, " \r\n\x00\x7f") || !strings.HasPrefix(k, ns+":") || !strings.Contains(k, ":sticky:v1:") {
					t.Errorf("stickyKey(%q, %q, %q) = %q: not a legal, namespaced record key", scope, kind, id, k)
				}
				what := scope + "/" + kind + "/" + id
				if other, dup := seen[k]; dup {
					t.Errorf("%s and %s share the key %q", what, other, k)
				}
				seen[k] = what
			}
		}
	}
	// Answers: a Responses body, the same text as an X-Cache-Key name on
	// any endpoint, scoped or not.
	for _, id := range ids {
		for _, tag := range []string{"", "responses", "embeddings"} {
			answer := taggedKey(cachekey.FromText(ns, stickyResponse+"\x00"+id), ns, tag)
			for _, k := range []string{answer, scopedKey(answer, ns, "0123456789abcdef")} {
				if what, clash := seen[k]; clash {
					t.Errorf("the answer key %q is also the record key of %s", k, what)
				}
			}
		}
	}
}

func TestStickyRef(t *testing.T) {
	cases := []struct {
		req              openai.Request
		stored           string
		kind, id, prefix string
	}{
		{openai.Request{}, "", "", "", ""},
		{openai.Request{PreviousResponseID: "resp_1"}, "", stickyResponse, "resp_1", `previous_response_id "resp_1"`},
		{openai.Request{Conversation: "conv_1"}, "", stickyConversation, "conv_1", `conversation "conv_1"`},
		{openai.Request{PreviousResponseID: "resp_1", Conversation: "conv_1"}, "", stickyResponse, "resp_1", `previous_response_id`},
		{openai.Request{Conversation: strings.Repeat("x", 500)}, "", stickyConversation, strings.Repeat("x", 500), `conversation "xxx`},
		{openai.Request{}, "resp_2", stickyResponse, "resp_2", `the response "resp_2"`},
		{openai.Request{}, strings.Repeat("r", 500), stickyResponse, strings.Repeat("r", 500), `the response "rrr`},
	}
	for _, tc := range cases {
		kind, id, ref := stickyRef(&tc.req, tc.stored)
		if kind != tc.kind || id != tc.id || !strings.HasPrefix(ref, tc.prefix) || len(ref) > 130 {
			t.Errorf("stickyRef(%+v) = %q %q %q", tc.req, kind, id, ref)
		}
	}
}

func TestEntryConverts(t *testing.T) {
	cases := []struct {
		ep                   openai.Endpoint
		storedStream, stream bool
		want                 bool
	}{
		{openai.Chat, true, false, true},
		{openai.Chat, false, true, true},
		{openai.Responses, true, false, true},  // response.completed holds the plain answer
		{openai.Responses, false, true, false}, // events cannot be rebuilt exactly
		{openai.Responses, true, true, true},
		{openai.Responses, false, false, true},
		{openai.Embeddings, false, false, true},
		{openai.Embeddings, true, false, false},
	}
	for _, tc := range cases {
		if got := entryConverts(tc.ep, tc.storedStream, tc.stream); got != tc.want {
			t.Errorf("entryConverts(%s, stored stream %v, want stream %v) = %v", tc.ep, tc.storedStream, tc.stream, got)
		}
	}
}

func TestErrCutResponseIsACutStream(t *testing.T) {
	if !errors.Is(errCutResponse, errCutStream) || errors.Is(errCutStream, errCutResponse) {
		t.Error("errCutResponse must be an errCutStream, for the log and /status")
	}
	if got := errSummary(errCutResponse, timeouts{}); !strings.Contains(got, "terminal event") {
		t.Errorf("errSummary = %q", got)
	}
}

func TestResponsesStateObserve(t *testing.T) {
	var s responsesState
	for _, raw := range []string{
		"data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\"}}\n\n",
		"data: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"delta\":\"x\"}\n\n",
		"data: {\"type\":\"response.output_text.delta\",\"delta\":\"y\"}\n\n", // no sequence_number: the count stays
		"data: {\"type\":\"response.completed\",\"sequence_number\":4,\"response\":{\"id\":\"resp_other\",\"usage\":{\"input_tokens\":5,\"output_tokens\":6}}}\n\n",
	} {
		ev := openai.ReadResponseEvent([]byte(raw))
		s.observe(&ev)
	}
	if s.next != 5 || s.id != "resp_1" || !s.terminal || s.usage != (openai.Usage{PromptTokens: 5, CompletionTokens: 6}) {
		t.Errorf("%+v", s)
	}
}

func TestResponsesEchoesSplitKey(t *testing.T) {
	key := "gsk_SECRET0123456789"
	st := &state{secrets: []string{key}, secretsB: [][]byte{[]byte(key)}}
	delta := func(s string) string {
		return `data: {"type":"response.output_text.delta","sequence_number":1,"delta":"` + s + `"}` + "\n\n"
	}
	r := &relay{c: &call{req: openai.Request{Endpoint: openai.Responses}, st: st}}
	r.tee = []byte(delta("your key: ") + delta(key[:8]) + delta(key[8:]) + `data: {"type":"response.completed","response":{"id":"r"}}` + "\n\n")
	if !r.echoesSplitKey() {
		t.Error("a key spelled across deltas not found")
	}
	r.tee = []byte(delta("hello") + delta(key[:8]))
	if r.echoesSplitKey() {
		t.Error("a clean stream reported")
	}
}

func TestSplitStoredPath(t *testing.T) {
	cases := []struct {
		path, id, suffix string
		ok               bool
	}{
		{"responses/resp_1", "resp_1", "", true},
		{"responses/resp_1/cancel", "resp_1", "/cancel", true},
		{"responses/resp_1/input_items", "resp_1", "/input_items", true},
		{"responses/", "", "", false},
		{"responses//cancel", "", "", false},
		{"responses/resp_1/", "", "", false},
		{"responses/resp_1/cancel/", "", "", false},
		{"responses/resp_1/delete", "", "", false},
		{"responses/a/b/cancel", "", "", false},
		{"responses/..", "", "", false}, // would climb out of the upstream's path
		{"responses/./cancel", "", "", false},
		{"responses/resp 1?x", "resp 1?x", "", true}, // escaped when sent on
	}
	for _, tc := range cases {
		id, suffix, ok := splitStoredPath([]byte(tc.path))
		if id != tc.id || suffix != tc.suffix || ok != tc.ok {
			t.Errorf("splitStoredPath(%q) = %q %q %v, want %q %q %v", tc.path, id, suffix, ok, tc.id, tc.suffix, tc.ok)
		}
	}
}
