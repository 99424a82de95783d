package integration

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestModelRetrieveAndGroqBasePath: GET /v1/models/{id} answers the same
// entry /v1/models lists (an org/model id too, percent-encoded as the SDKs
// send it), or an OpenAI-shaped 404 model_not_found; and Groq's own base
// path, /openai/v1, is an alias of /v1 for every route, so a Groq user
// swaps only the host.
func TestModelRetrieveAndGroqBasePath(t *testing.T) {
	up := newFake(t, okJSON("via the groq path"))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1,
		"    models: {llama-3.3-70b: llama-3.3-70b-versatile, meta-llama/Llama-3.3-70B-Instruct: x}\n")))
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := httpClient.Get(p.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		return resp, readAll(t, resp)
	}
	var list struct {
		Data []json.RawMessage `json:"data"`
	}
	_, b := get("/v1/models")
	if err := json.Unmarshal(b, &list); err != nil || len(list.Data) != 2 {
		t.Fatalf("models list %s (%v)", b, err)
	}
	byID := map[string]string{}
	for _, m := range list.Data {
		var e struct{ ID string }
		_ = json.Unmarshal(m, &e)
		byID[e.ID] = string(m)
	}
	for _, id := range []string{"llama-3.3-70b", "meta-llama/Llama-3.3-70B-Instruct"} {
		for _, path := range []string{"/v1/models/" + id, "/v1/models/" + url.PathEscape(id), "/openai/v1/models/" + url.PathEscape(id)} {
			resp, b := get(path)
			if resp.StatusCode != 200 || string(b) != byID[id] {
				t.Errorf("GET %s: %d %s, want the list's entry %s", path, resp.StatusCode, b, byID[id])
			}
		}
	}
	resp, b := get("/v1/models/no-such-model")
	if resp.StatusCode != 404 {
		t.Fatalf("unknown model: status %d %s", resp.StatusCode, b)
	}
	if _, _, code := apiErr(t, b); code != "model_not_found" {
		t.Errorf("unknown model: code %q, want model_not_found", code)
	}

	// /openai/v1: the list, and a chat completion.
	if resp, b := get("/openai/v1/models"); resp.StatusCode != 200 || !strings.Contains(string(b), "llama-3.3-70b") {
		t.Errorf("GET /openai/v1/models: %d %s", resp.StatusCode, b)
	}
	req, _ := http.NewRequest("POST", p.URL+"/openai/v1/chat/completions", strings.NewReader(`{"model":"llama-3.3-70b","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Content-Type", "application/json")
	r, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, r); r.StatusCode != 200 || !strings.Contains(string(b), "via the groq path") {
		t.Errorf("POST /openai/v1/chat/completions: %d %s", r.StatusCode, b)
	}
	if !strings.Contains(string(up.LastBody()), `"llama-3.3-70b-versatile"`) {
		t.Errorf("alias not mapped through /openai/v1: %s", up.LastBody())
	}
}
