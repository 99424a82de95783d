package proxy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"switchyard/config"
	"switchyard/policy"
	"switchyard/upstream"
	"switchyard/verdict"
)

// newStatusServer builds a Server with two upstreams (one without a key)
// that dials nothing, and its policy.
func newStatusServer(t *testing.T) (*Server, *policy.Policy) {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.Keys = []string{"other-inbound-key-0", statusToken}
	cfg.Upstreams = []config.Upstream{
		{Name: "status_a", Provider: "groq", BaseURL: "http://127.0.0.1:1/v1", APIKey: "sk-unit-SECRET-aaaa1111", Priority: 1,
			Quota: config.Quota{Limit: 100, Unit: config.UnitRequests, Period: config.PeriodDay}},
		{Name: "status_b", Provider: "huggingface", BaseURL: "http://127.0.0.1:1/v1", Priority: 2},
	}
	var ups []*upstream.Client
	var specs []config.Upstream
	for _, u := range cfg.Upstreams {
		c, err := upstream.New(u)
		if err != nil {
			t.Fatal(err)
		}
		ups = append(ups, c)
		specs = append(specs, u)
	}
	pol, err := policy.New(specs, policy.Options{Metrics: metrics.NewSet()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Config: cfg, Upstreams: ups, Policy: pol, CacheBackend: "embedded", Version: "v-test"})
	if err != nil {
		t.Fatal(err)
	}
	return s, pol
}

// observeAttempt runs one attempt through the policy's breakers and observes ob,
// as the handler does.
func observeAttempt(pol *policy.Policy, name, model string, ob policy.Observation) {
	_, _ = pol.Do(name, model, nil, func(res *policy.Reservation) (policy.Attempt, error) {
		ob.Reservation = res
		pol.Observe(name, model, ob)
		return policy.Attempt{Outcome: ob.Outcome}, nil
	})
}

// statusToken is newStatusServer's inbound key: /status on the API
// listener needs it.
const statusToken = "inbound-SECRET-token-1"

func getStatus(s *Server, accept, query string) *fasthttp.Response {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("GET")
	ctx.Request.Header.Set("Authorization", "Bearer "+statusToken)
	uri := "/status"
	if query != "" {
		uri += "?" + query
	}
	ctx.Request.SetRequestURI(uri)
	if accept != "" {
		ctx.Request.Header.Set("Accept", accept)
	}
	s.Handler(true)(&ctx)
	var resp fasthttp.Response
	ctx.Response.CopyTo(&resp)
	return &resp
}

func TestStatusNegotiation(t *testing.T) {
	s, _ := newStatusServer(t)
	const firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	const chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
	cases := []struct {
		name, accept, query string
		html                bool
	}{
		{"no accept", "", "", false},
		{"any", "*/*", "", false},
		{"json", "application/json", "", false},
		{"curl", "*/*", "", false},
		{"firefox", firefox, "", true},
		{"chrome", chrome, "", true},
		{"html only", "text/html", "", true},
		{"text wildcard", "text/*", "", true},
		{"html upper case", "TEXT/HTML", "", true},
		{"json preferred", "text/html;q=0.5, application/json", "", false},
		{"html preferred", "application/json;q=0.5, text/html", "", true},
		{"tie goes to json", "text/html, application/json", "", false},
		{"html refused", "text/html;q=0, */*", "", false},
		{"specific beats wildcard", "text/*;q=0.1, text/html;q=0.9, application/json;q=0.5", "", true},
		{"bad q", "text/html;q=abc, application/json;q=0.1", "", false},
		{"garbage", "nonsense, ;;;, /", "", false},
		{"format=html overrides", "application/json", "format=html", true},
		{"format=json overrides", firefox, "format=json", false},
		{"unknown format ignored", firefox, "format=xml", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := getStatus(s, tc.accept, tc.query)
			if resp.StatusCode() != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
			}
			ct := string(resp.Header.ContentType())
			body := resp.Body()
			if tc.html {
				if !strings.HasPrefix(ct, "text/html") || !strings.HasPrefix(string(body), "<!DOCTYPE html>") {
					t.Fatalf("want HTML, got %q: %.80s", ct, body)
				}
			} else {
				var rep map[string]any
				if ct != "application/json" || json.Unmarshal(body, &rep) != nil {
					t.Fatalf("want JSON, got %q: %.80s", ct, body)
				}
			}
			if string(resp.Header.Peek("Vary")) != "Accept" || string(resp.Header.Peek("Cache-Control")) != "no-store" {
				t.Errorf("Vary %q Cache-Control %q", resp.Header.Peek("Vary"), resp.Header.Peek("Cache-Control"))
			}
		})
	}
}

// TestStatusJSONFields pins the public field names of issue 5.
func TestStatusJSONFields(t *testing.T) {
	s, pol := newStatusServer(t)
	observeAttempt(pol, "status_a", "m1", policy.Observation{Outcome: verdict.Failure, Status: 500, Err: "HTTP 500 server_error"})
	resp := getStatus(s, "application/json", "")
	var rep map[string]any
	if err := json.Unmarshal(resp.Body(), &rep); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "uptime_seconds", "cache", "requests", "success_rate", "upstreams", "providers", "by_provider"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("report has no %q", k)
		}
	}
	if rep["version"] != "v-test" {
		t.Errorf("version %v", rep["version"])
	}
	c, _ := rep["cache"].(map[string]any)
	for _, k := range []string{"backend", "hits", "misses", "hit_rate"} {
		if _, ok := c[k]; !ok {
			t.Errorf("cache has no %q", k)
		}
	}
	ups, _ := rep["upstreams"].([]any)
	if len(ups) != 2 {
		t.Fatalf("upstreams %v", rep["upstreams"])
	}
	a := ups[0].(map[string]any)
	for _, k := range []string{"name", "provider", "priority", "configured", "breaker", "breakers", "score", "score_components", "latency_ms", "quota", "requests", "failures", "last_error"} {
		if _, ok := a[k]; !ok {
			t.Errorf("upstream has no %q", k)
		}
	}
	comp, _ := a["score_components"].(map[string]any)
	for _, k := range []string{"health", "quota", "latency"} {
		if _, ok := comp[k]; !ok {
			t.Errorf("score_components has no %q", k)
		}
	}
	q, _ := a["quota"].(map[string]any)
	for _, k := range []string{"used", "limit", "unit", "resets_at"} {
		if _, ok := q[k]; !ok {
			t.Errorf("quota has no %q", k)
		}
	}
	if a["name"] != "status_a" || a["provider"] != "groq" || a["configured"] != true || a["requests"] != 1.0 || a["failures"] != 1.0 || a["last_error"] != "HTTP 500 server_error" {
		t.Errorf("upstream a: %v", a)
	}
	if br, _ := a["breakers"].(map[string]any); br["m1"] != "closed" || br[policy.KeyBreaker] != "closed" {
		t.Errorf("breakers %v", a["breakers"])
	}
	b := ups[1].(map[string]any)
	if b["configured"] != false || b["disabled"] != "unconfigured: no api_key" {
		t.Errorf("upstream b: %v", b)
	}
	if bp, _ := rep["by_provider"].(map[string]any); bp["groq"].(map[string]any)["failures"] != 1.0 {
		t.Errorf("by_provider %v", rep["by_provider"])
	}
	if strings.Contains(string(resp.Body()), "SECRET") {
		t.Errorf("a key in /status: %s", resp.Body())
	}
}

func TestStatusHTMLEscapesAndRedacts(t *testing.T) {
	s, pol := newStatusServer(t)
	const evil = `<script>alert("x")</script> rejected key sk-unit-SECRET-aaaa1111 & token inbound-SECRET-token-1`
	observeAttempt(pol, "status_a", "<img src=x onerror=alert(1)>", policy.Observation{Outcome: verdict.Failure, Status: 401, Err: evil})
	resp := getStatus(s, "text/html", "")
	body := string(resp.Body())
	if !strings.HasPrefix(string(resp.Header.ContentType()), "text/html") {
		t.Fatalf("content type %q", resp.Header.ContentType())
	}
	for _, bad := range []string{"<script>", "<img", "SECRET"} {
		if strings.Contains(body, bad) {
			t.Errorf("HTML contains %q:\n%s", bad, body)
		}
	}
	for _, want := range []string{"&lt;script&gt;", "&lt;img src=x onerror=alert(1)&gt;", "[redacted]", "status_a", "status_b", "v-test", "embedded", `id="summary"`, `id="upstreams"`, "0.0%", "unconfigured: no api_key"} {
		if !strings.Contains(body, want) {
			t.Errorf("HTML lacks %q:\n%s", want, body)
		}
	}
	if csp := string(resp.Header.Peek("Content-Security-Policy")); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	// JSON carries the message escaped by encoding/json, and redacted too.
	js := string(getStatus(s, "", "").Body())
	if strings.Contains(js, "SECRET") || !strings.Contains(js, `\u003cscript\u003e`) {
		t.Errorf("JSON last_error: %s", js)
	}
}

func TestStatusOnlyWithAdmin(t *testing.T) {
	s, _ := newStatusServer(t)
	for _, path := range []string{"/status", "/metrics"} {
		var api, admin fasthttp.RequestCtx
		api.Request.SetRequestURI(path)
		s.Handler(false)(&api)
		if api.Response.StatusCode() != 404 {
			t.Errorf("%s on the API listener with admin_listen: %d", path, api.Response.StatusCode())
		}
		admin.Request.SetRequestURI(path)
		s.AdminHandler()(&admin)
		if admin.Response.StatusCode() != 200 {
			t.Errorf("%s on the admin listener: %d", path, admin.Response.StatusCode())
		}
	}
}

// TestStatusAndMetricsAuth: with auth.keys, /status and /metrics on
// the API listener need a key; the admin listener and /healthz need none.
func TestStatusAndMetricsAuth(t *testing.T) {
	s, _ := newStatusServer(t)
	serve := func(h fasthttp.RequestHandler, path, auth string) int {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("GET")
		ctx.Request.SetRequestURI(path)
		if auth != "" {
			ctx.Request.Header.Set("Authorization", auth)
		}
		h(&ctx)
		return ctx.Response.StatusCode()
	}
	cases := []struct {
		name, path, auth string
		admin            bool
		want             int
	}{
		{"status no key", "/status", "", false, 401},
		{"status wrong key", "/status", "Bearer inbound-SECRET-token-2", false, 401},
		{"status key prefix", "/status", "Bearer inbound-SECRET-token-", false, 401},
		{"status basic", "/status", "Basic " + statusToken, false, 401},
		{"status key", "/status", "Bearer " + statusToken, false, 200},
		{"status other key", "/status", "Bearer other-inbound-key-0", false, 200},
		{"status lower-case scheme", "/status", "bearer " + statusToken, false, 200},
		{"metrics no key", "/metrics", "", false, 401},
		{"metrics key", "/metrics", "Bearer " + statusToken, false, 200},
		{"healthz no key", "/healthz", "", false, 200},
		{"admin status no key", "/status", "", true, 200},
		{"admin metrics no key", "/metrics", "", true, 200},
		{"admin healthz no key", "/healthz", "", true, 200},
	}
	for _, tc := range cases {
		h := s.Handler(true)
		if tc.admin {
			h = s.AdminHandler()
		}
		if got := serve(h, tc.path, tc.auth); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
