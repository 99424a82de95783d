package integration

import (
	"net/http"
	"strings"
	"testing"
)

// TestEndpointsRouteOnlyToUpstreamsServingThem: a request goes only to the
// upstreams whose endpoints list its endpoint, at that endpoint's path;
// one no upstream serves gets a 404 naming why; legacy completions pass
// through where listed; route labels are per endpoint.
func TestEndpointsRouteOnlyToUpstreamsServingThem(t *testing.T) {
	chatOnly := newFake(t, okJSON("chat only"))
	embed := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/embeddings":
			_, _ = w.Write([]byte(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}`))
		case "/v1/completions":
			_, _ = w.Write([]byte(`{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"text":" there","index":0,"logprobs":null,"finish_reason":"stop"}]}`))
		default:
			okJSON("from embed")(w, r)
		}
	})
	p := startProxy(t, testConfig("",
		upstreamYAML("chatonly", chatOnly.BaseURL(), "k1", 1, "    endpoints: [chat/completions]\n"),
		upstreamYAML("embed", embed.BaseURL(), "k2", 2, "    endpoints: [chat/completions, embeddings, completions]\n")))

	const embBody = `{"model":"test-model","input":"hello"}`
	for i, want := range []string{"MISS", "HIT"} {
		resp := postTo(t, p.URL+"/v1/embeddings", embBody)
		b := readAll(t, resp)
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"embedding":[0.1,0.2]`) {
			t.Fatalf("embeddings #%d: %d %s", i, resp.StatusCode, b)
		}
		if got := resp.Header.Get("X-Cache"); got != want {
			t.Errorf("embeddings #%d: X-Cache %q, want %q", i, got, want)
		}
	}
	if chatOnly.Calls() != 0 || embed.Calls() != 1 || embed.LastPath() != "/v1/embeddings" {
		t.Fatalf("calls: chatonly %d, embed %d at %s; want only embed's /v1/embeddings, once", chatOnly.Calls(), embed.Calls(), embed.LastPath())
	}
	// The same JSON sent to chat is another question (and not a valid chat
	// request): never the embeddings entry.
	resp := post(t, p.URL, embBody)
	if b := readAll(t, resp); resp.StatusCode != 400 {
		t.Errorf("chat with an embeddings body: %d %s, want 400 (no messages)", resp.StatusCode, b)
	}

	resp = postTo(t, p.URL+"/openai/v1/completions", `{"model":"test-model","prompt":"hi"}`)
	if b := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(string(b), `"text":" there"`) || embed.LastPath() != "/v1/completions" {
		t.Errorf("legacy completions: %d %s at %s", resp.StatusCode, b, embed.LastPath())
	}
	if resp.Header.Get("X-Cache") != "BYPASS" {
		t.Errorf("legacy completions X-Cache %q, want BYPASS (not cached)", resp.Header.Get("X-Cache"))
	}

	resp = postTo(t, p.URL+"/v1/embeddings", `{"model":"test-model"}`)
	b := readAll(t, resp)
	if _, _, code := apiErr(t, b); resp.StatusCode != 400 || code != "missing_required_parameter" {
		t.Errorf("embeddings without input: %d %s", resp.StatusCode, b)
	}

	for name, want := range map[string]float64{
		`switchyard_requests_total{route="embeddings",status="200"}`:  2,
		`switchyard_requests_total{route="completions",status="200"}`: 1,
	} {
		if got := scrape(t, p.URL, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if !p.WaitLog(`"route":"embeddings"`) {
		t.Errorf("no request log line with route embeddings")
	}
}
