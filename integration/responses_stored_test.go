package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Operations on a stored response (GET and DELETE /v1/responses/{id},
// POST …/cancel, GET …/input_items) go to the upstream holding it; see
// respFake.storedOp for the fake's shapes.

// doStored sends method to the proxy's url (a path under it) and returns
// the answer and its body.
func doStored(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readAll(t, resp)
}

// TestResponsesStoredOperationsGoToTheirUpstream: retrieve, list input
// items (the query passed on), cancel and delete reach the upstream that
// created the response, never the one ranked first; after the delete the
// holder's own 404 comes back; with the holder failing, a 503 names it.
func TestResponsesStoredOperationsGoToTheirUpstream(t *testing.T) {
	a := newFake(t, respFake{status: 500}.handler())
	bOK := respFake{prefix: "resp_b", words: helloWords}.handler()
	b := newFake(t, bOK)
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "k1", 1, ""), upstreamYAML("b", b.BaseURL(), "k2", 2, "")))

	// a fails, so b creates both responses; then a ranks first again.
	var ids []string
	for range 2 {
		resp := postResponses(t, p.URL, `{"model":"m","input":"first"}`)
		ids = append(ids, responseID(t, readAll(t, resp)))
		if resp.Header.Get("X-Upstream") != "b" {
			t.Fatalf("creation served by %q, want b", resp.Header.Get("X-Upstream"))
		}
	}
	a.SetHandler(respFake{prefix: "resp_a", words: helloWords}.handler())
	id := ids[0]
	aCalls := a.Calls()

	cases := []struct {
		method, path, want string // want: a text the answer holds
		upstreamSaw        string
	}{
		{"GET", "/v1/responses/" + id, `"status":"completed"`, "GET /v1/responses/" + id},
		{"GET", "/v1/responses/" + id + "?include[]=message.input_image.image_url", `"id":"` + id + `"`, "GET /v1/responses/" + id + "?include[]=message.input_image.image_url"},
		{"GET", "/v1/responses/" + id + "/input_items?limit=2&order=asc", `"object":"list"`, "GET /v1/responses/" + id + "/input_items?limit=2&order=asc"},
		{"POST", "/v1/responses/" + id + "/cancel", `"status":"cancelled"`, "POST /v1/responses/" + id + "/cancel"},
		{"GET", "/openai/v1/responses/" + id, `"id":"` + id + `"`, "GET /v1/responses/" + id},
		{"DELETE", "/v1/responses/" + id, `"deleted":true`, "DELETE /v1/responses/" + id},
	}
	for _, tc := range cases {
		resp, body := doStored(t, tc.method, p.URL+tc.path)
		if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "b" || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %s: %d from %q: %s", tc.method, tc.path, resp.StatusCode, resp.Header.Get("X-Upstream"), body)
		}
		if got := b.LastRequest(); got != tc.upstreamSaw {
			t.Errorf("%s %s: b got %q, want %q", tc.method, tc.path, got, tc.upstreamSaw)
		}
		if h := b.LastHeader(); h.Get("Authorization") != "Bearer k2" || (tc.method != "POST" && h.Get("Content-Type") != "") {
			t.Errorf("%s %s: b got Authorization %q, Content-Type %q", tc.method, tc.path, h.Get("Authorization"), h.Get("Content-Type"))
		}
		if resp.Header.Get("X-Request-Id") == "" || resp.Header.Get("X-Cache") != "BYPASS" {
			t.Errorf("%s %s: X-Request-Id %q, X-Cache %q", tc.method, tc.path, resp.Header.Get("X-Request-Id"), resp.Header.Get("X-Cache"))
		}
	}
	if a.Calls() != aCalls {
		t.Errorf("a was asked %d times about b's response", a.Calls()-aCalls)
	}

	// Deleted: b's own 404, in OpenAI's shape; a is not asked.
	resp, body := doStored(t, "GET", p.URL+"/v1/responses/"+id)
	if msg, typ, _ := apiErr(t, body); resp.StatusCode != 404 || typ != "invalid_request_error" || !strings.Contains(msg, "not found") || resp.Header.Get("X-Upstream") != "b" {
		t.Errorf("after delete: %d from %q: %s", resp.StatusCode, resp.Header.Get("X-Upstream"), body)
	}

	// Wrong methods and paths, answered by the proxy.
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"PUT", "/v1/responses/" + ids[1], 405, "GET, DELETE"},
		{"GET", "/v1/responses/" + ids[1] + "/cancel", 405, "POST"},
		{"DELETE", "/v1/responses/" + ids[1] + "/input_items", 405, "GET"},
		{"GET", "/v1/responses/" + ids[1] + "/nothing", 404, ""},
		{"GET", "/v1/responses/", 404, ""},
	} {
		calls := a.Calls() + b.Calls()
		resp, body := doStored(t, tc.method, p.URL+tc.path)
		if _, typ, _ := apiErr(t, body); resp.StatusCode != tc.status || resp.Header.Get("Allow") != tc.allow || typ != "invalid_request_error" {
			t.Errorf("%s %s: %d Allow %q: %s", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), body)
		}
		if a.Calls()+b.Calls() != calls {
			t.Errorf("%s %s reached an upstream", tc.method, tc.path)
		}
	}

	// The holder fails: 503 naming it and why; a is not asked.
	b.SetHandler(respFake{status: 500}.handler())
	aCalls = a.Calls()
	resp, body = doStored(t, "GET", p.URL+"/v1/responses/"+ids[1])
	msg, typ, code := apiErr(t, body)
	if resp.StatusCode != 503 || typ != "server_error" || code != "sticky_upstream_unavailable" || !strings.Contains(msg, `upstream "b"`) || !strings.Contains(msg, ids[1]) {
		t.Errorf("holder down: %d %s", resp.StatusCode, body)
	}
	if a.Calls() != aCalls {
		t.Errorf("a was asked about b's response while b was down")
	}
	if got := scrape(t, p.URL, `switchyard_requests_total{route="responses_stored",status="200"}`); got != float64(len(cases)) {
		t.Errorf(`switchyard_requests_total{route="responses_stored",status="200"} = %v, want %d`, got, len(cases))
	}
}

// TestResponsesStoredWithoutRecord: an id the proxy has no record of (a
// response created before it, or whose record expired) is looked for on
// each upstream serving /v1/responses; the one that has it answers, and
// is recorded, so that previous_response_id then goes straight there. An
// id no upstream knows gets their 404.
func TestResponsesStoredWithoutRecord(t *testing.T) {
	a := newFake(t, respFake{prefix: "resp_a", words: helloWords}.handler())
	b := newFake(t, respFake{prefix: "resp_b", words: helloWords}.handler())
	p := startProxy(t, testConfig("", upstreamYAML("a", a.BaseURL(), "k1", 1, ""), upstreamYAML("b", b.BaseURL(), "k2", 2, "")))

	// Created on b behind the proxy's back.
	direct, err := http.Post(b.BaseURL()+"/responses", "application/json", strings.NewReader(`{"model":"m","input":"made directly"}`))
	if err != nil {
		t.Fatal(err)
	}
	id := responseID(t, readAll(t, direct))

	resp, body := doStored(t, "GET", p.URL+"/v1/responses/"+id)
	if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "b" || responseID(t, body) != id {
		t.Fatalf("unrecorded id: %d from %q: %s", resp.StatusCode, resp.Header.Get("X-Upstream"), body)
	}
	if got := resp.Header.Get("X-Attempts"); got != "2" {
		t.Errorf("X-Attempts %q, want 2 (a's 404, then b)", got)
	}

	// Found by asking, so recorded: the follow-up goes to b, though a
	// ranks first.
	aCalls := a.Calls()
	resp = postResponses(t, p.URL, `{"model":"m","input":"more","previous_response_id":"`+id+`"}`)
	if body := readAll(t, resp); resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "b" {
		t.Errorf("follow-up: %d from %q: %s", resp.StatusCode, resp.Header.Get("X-Upstream"), body)
	}
	if a.Calls() != aCalls {
		t.Errorf("the follow-up reached a")
	}

	// Which upstreams were asked is in the request's log line.
	if !p.WaitLog(`"route":"responses_stored","status":200`) || !strings.Contains(p.Logs(), `"tried":"a:not_served,b:ok"`) {
		t.Errorf("the log line does not list the upstreams asked")
	}

	// A server that keeps no stored responses answers 400 or 405: not
	// the holder, so b is asked next.
	aHandler := respFake{prefix: "resp_a", words: helloWords}.handler()
	a.SetHandler(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/responses/") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(405)
			io.WriteString(w, `{"error":{"message":"Method Not Allowed","type":"invalid_request_error","param":null,"code":null}}`)
			return
		}
		aHandler(w, r)
	})
	direct, err = http.Post(b.BaseURL()+"/responses", "application/json", strings.NewReader(`{"model":"m","input":"made directly, again"}`))
	if err != nil {
		t.Fatal(err)
	}
	id2 := responseID(t, readAll(t, direct))
	resp, body = doStored(t, "GET", p.URL+"/v1/responses/"+id2+"/input_items")
	if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "b" || resp.Header.Get("X-Attempts") != "2" {
		t.Errorf("a answering 405: %d from %q: %s", resp.StatusCode, resp.Header.Get("X-Upstream"), body)
	}
	a.SetHandler(aHandler)

	// POST under /v1/responses/ names other APIs (input_tokens): 404.
	if resp, body := doStored(t, "POST", p.URL+"/v1/responses/input_tokens"); resp.StatusCode != 404 {
		t.Errorf("POST /v1/responses/input_tokens: %d %s", resp.StatusCode, body)
	}

	// Nobody has it: 404 in OpenAI's shape.
	resp, body = doStored(t, "DELETE", p.URL+"/v1/responses/resp_nowhere")
	var e struct {
		Error struct{ Message, Type string }
	}
	if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != 404 || e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, "resp_nowhere") {
		t.Errorf("unknown id: %d %s", resp.StatusCode, body)
	}

	// One upstream failed: the id may live there, so no 404 but that
	// upstream's failure.
	a.SetHandler(respFake{status: 500}.handler())
	resp, body = doStored(t, "GET", p.URL+"/v1/responses/resp_nowhere")
	if _, typ, _ := apiErr(t, body); resp.StatusCode != 500 || typ == "invalid_request_error" {
		t.Errorf("unknown id, a failing: %d %s", resp.StatusCode, body)
	}
}

// TestResponsesStoredNoUpstream: with no upstream that could hold a
// stored response, the proxy says why: 404 when none lists responses,
// 503 when those that do have no API key.
func TestResponsesStoredNoUpstream(t *testing.T) {
	up := newFake(t, respFake{prefix: "resp_a"}.handler())
	chatOnly := upstreamYAML("chat_only", up.BaseURL(), "k1", 1, "    endpoints: [chat/completions]\n")
	p := startProxy(t, testConfig("", chatOnly))
	resp, body := doStored(t, "GET", p.URL+"/v1/responses/resp_a_1")
	if _, typ, code := apiErr(t, body); resp.StatusCode != 404 || typ != "invalid_request_error" || code != "not_found" {
		t.Errorf("no upstream lists responses: %d %s", resp.StatusCode, body)
	}
	noKey := strings.Replace(upstreamYAML("keyless", up.BaseURL(), "k2", 1, ""), "api_key: k2", `api_key: ""`, 1)
	p = startProxy(t, testConfig("", chatOnly, noKey))
	resp, body = doStored(t, "GET", p.URL+"/v1/responses/resp_a_1")
	if msg, _, code := apiErr(t, body); resp.StatusCode != 503 || code != "no_upstream_available" || !strings.Contains(msg, "keyless") {
		t.Errorf("the upstream serving responses has no key: %d %s", resp.StatusCode, body)
	}
	if up.Calls() != 0 {
		t.Errorf("the upstream was called %d times", up.Calls())
	}
}
