package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ---- Prometheus text format ------------------------------------------------

// promSample is one line of the Prometheus text format: name{labels} value.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// promScrape is one /metrics answer.
type promScrape []promSample

// parsePromText parses the Prometheus text exposition format (comments and
// blank lines are skipped; an optional timestamp after the value is ignored).
func parsePromText(text string) (promScrape, error) {
	var out promScrape
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parsePromLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %w", i+1, line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parsePromLine(line string) (promSample, error) {
	s := promSample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return s, errors.New("no metric name")
	}
	s.name, line = line[:i], line[i:]
	if line[0] == '{' {
		line = line[1:]
		for {
			line = strings.TrimLeft(line, " ,")
			if line == "" {
				return s, errors.New("unterminated labels")
			}
			if line[0] == '}' {
				line = line[1:]
				break
			}
			eq := strings.IndexByte(line, '=')
			if eq <= 0 || eq+1 >= len(line) || line[eq+1] != '"' {
				return s, errors.New("bad label")
			}
			key := strings.TrimSpace(line[:eq])
			line = line[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(line); j++ {
				c := line[j]
				if c == '\\' && j+1 < len(line) {
					j++
					switch line[j] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(line[j])
					}
					continue
				}
				if c == '"' {
					line, closed = line[j+1:], true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return s, errors.New("unterminated label value")
			}
			s.labels[key] = val.String()
		}
	}
	fields := strings.Fields(line)
	if len(fields) == 0 || len(fields) > 2 {
		return s, errors.New("want a value and an optional timestamp")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, err
	}
	s.value = v
	return s, nil
}

// matches reports whether the promSample is name with every label pair of kv.
func (s promSample) matches(name string, kv []string) bool {
	if s.name != name {
		return false
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if v, ok := s.labels[kv[i]]; !ok || v != kv[i+1] {
			return false
		}
	}
	return true
}

// get sums the samples of name whose labels include the pairs of kv.
func (m promScrape) get(name string, kv ...string) float64 {
	sum := 0.0
	for _, s := range m {
		if s.matches(name, kv) {
			sum += s.value
		}
	}
	return sum
}

// has reports whether any promSample of name has the labels of kv.
func (m promScrape) has(name string, kv ...string) bool {
	for _, s := range m {
		if s.matches(name, kv) {
			return true
		}
	}
	return false
}

// names returns the promSample names (histograms contribute _bucket, _sum and
// _count).
func (m promScrape) names() map[string]bool {
	out := map[string]bool{}
	for _, s := range m {
		out[s.name] = true
	}
	return out
}

func TestObservabilityPromParser(t *testing.T) {
	s, err := parsePromLine(`switchyard_requests_total{route="chat_completions",status="200"} 7`)
	if err != nil || s.name != "switchyard_requests_total" || s.labels["route"] != "chat_completions" || s.labels["status"] != "200" || s.value != 7 {
		t.Errorf("%+v %v", s, err)
	}
	s, err = parsePromLine(`x_bucket{a="q\"uo\\te, }",le="+Inf"} 1.5e3 1700000000`)
	if err != nil || s.labels["a"] != `q"uo\te, }` || s.labels["le"] != "+Inf" || s.value != 1500 {
		t.Errorf("%+v %v", s, err)
	}
	if s, err = parsePromLine(`go_goroutines 12`); err != nil || s.value != 12 || len(s.labels) != 0 {
		t.Errorf("%+v %v", s, err)
	}
	for _, bad := range []string{`{a="b"} 1`, `x{a="b} 1`, `x{a=b} 1`, `x`, `x 1 2 3`, `x abc`} {
		if _, err := parsePromLine(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// obsMetrics GETs base/metrics and parses it.
func obsMetrics(t *testing.T, base string) (promScrape, string) {
	t.Helper()
	resp, err := httpClient.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	m, err := parsePromText(string(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return m, string(body)
}

// ---- /status ---------------------------------------------------------------

type obsStatus struct {
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Requests      int64   `json:"requests"`
	SuccessRate   float64 `json:"success_rate"`
	Cache         struct {
		Backend string  `json:"backend"`
		Hits    int64   `json:"hits"`
		Misses  int64   `json:"misses"`
		HitRate float64 `json:"hit_rate"`
	} `json:"cache"`
	Upstreams []obsUpstream `json:"upstreams"`
}

type obsUpstream struct {
	Name       string            `json:"name"`
	Provider   string            `json:"provider"`
	Priority   int               `json:"priority"`
	Configured bool              `json:"configured"`
	Breaker    string            `json:"breaker"`
	Breakers   map[string]string `json:"breakers"`
	Score      float64           `json:"score"`
	Components struct {
		Health  float64 `json:"health"`
		Quota   float64 `json:"quota"`
		Latency float64 `json:"latency"`
	} `json:"score_components"`
	LatencyMS float64 `json:"latency_ms"`
	Quota     struct {
		Used     int64      `json:"used"`
		Limit    int64      `json:"limit"`
		Unit     string     `json:"unit"`
		ResetsAt *time.Time `json:"resets_at"`
	} `json:"quota"`
	Requests  int64   `json:"requests"`
	Failures  int64   `json:"failures"`
	LastError *string `json:"last_error"`
}

func (d *obsStatus) upstream(name string) *obsUpstream {
	for i := range d.Upstreams {
		if d.Upstreams[i].Name == name {
			return &d.Upstreams[i]
		}
	}
	return nil
}

// obsGetStatus GETs base/status with the given Accept header.
func obsGetStatus(t *testing.T, base, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readAll(t, resp)
}

func obsFetchStatus(t *testing.T, base string) (obsStatus, []byte) {
	t.Helper()
	resp, body := obsGetStatus(t, base, "")
	var d obsStatus
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/status: status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("/status: %v: %s", err, body)
	}
	return d, body
}

const obsBrowserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

// ---- traffic ---------------------------------------------------------------

// obsTally records what the client saw, to compare with what the proxy counted.
type obsTally struct {
	responses int
	status    map[int]int
	xcache    map[string]int
	attempts  map[string]int
	upstream  map[string]int
}

func newObsTally() *obsTally {
	return &obsTally{status: map[int]int{}, xcache: map[string]int{}, attempts: map[string]int{}, upstream: map[string]int{}}
}

func (tl *obsTally) post(t *testing.T, url, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	r := post(t, url, body, hdr...)
	b := readAll(t, r)
	tl.responses++
	tl.status[r.StatusCode]++
	// Requests rejected before the cache lookup (400s) say X-Cache: BYPASS
	// but are not cache requests: count answered requests only.
	if x := r.Header.Get("X-Cache"); x != "" && r.StatusCode == 200 {
		tl.xcache[x]++
	}
	if a := r.Header.Get("X-Attempts"); a != "" {
		tl.attempts[a]++
	}
	if u := r.Header.Get("X-Upstream"); u != "" {
		tl.upstream[u]++
	}
	return r, b
}

// waitHit repeats body until a cache hit (the store is asynchronous).
func (tl *obsTally) waitHit(t *testing.T, url, body string) {
	t.Helper()
	for i := 0; i < 50; i++ {
		r, _ := tl.post(t, url, body)
		if r.Header.Get("X-Cache") == "HIT" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("never a cache hit: %s", body)
}

// obsPlainOrStream answers streams with an SSE stream (usage included when
// asked) and plain requests with a completion.
func obsPlainOrStream(content string) http.HandlerFunc {
	plain := okJSON(content)
	stream := sseHandler(streamScript{words: []string{content, "!"}, usage: true})
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var req struct{ Stream bool }
		_ = json.Unmarshal(body, &req)
		if req.Stream {
			stream(w, r)
			return
		}
		plain(w, r)
	}
}

// obsEventually retries check (which lists what is wrong) for up to 5s: a
// stream is counted when fasthttp closes it, just after the client read its
// end.
func obsEventually(t *testing.T, check func() []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		problems := check()
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range problems {
				t.Error(p)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func obsBody(q string, stream bool) string {
	return fmt.Sprintf(`{"model":"obs-model","stream":%v,"messages":[{"role":"user","content":%q}]}`, stream, q)
}

// TestObservabilityCountsAndStates drives cache misses and hits, a bypass,
// fallbacks (a answers 500, b serves) until a's breaker opens, a stream and
// a bad request, then checks /metrics and /status against what the client
// saw.
func TestObservabilityCountsAndStates(t *testing.T) {
	cacheBackends(t, func(t *testing.T, top string) {
		a := newFake(t, statusHandler(500, `{"error":{"message":"a is down","type":"server_error"}}`))
		b := newFake(t, obsPlainOrStream("from b"))
		// failure_threshold 3 (testConfig); a long delay keeps a's breaker
		// open while the test looks.
		cfg := strings.Replace(testConfig(top,
			upstreamYAML("a", a.BaseURL(), "ka", 1, ""),
			upstreamYAML("b", b.BaseURL(), "kb", 2, "    quota: {limit: 1000, unit: requests, period: day}\n")),
			"delay: 1s", "delay: 60s", 1)
		p := startProxy(t, cfg)
		tl := newObsTally()

		// Three misses fail over from a to b; the third failure opens a's breaker.
		for i := 1; i <= 3; i++ {
			r, body := tl.post(t, p.URL, obsBody(fmt.Sprintf("q%d", i), false))
			if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "b" || r.Header.Get("X-Attempts") != "2" || r.Header.Get("X-Cache") != "MISS" {
				t.Fatalf("request %d: status %d upstream %q attempts %q cache %q: %s", i, r.StatusCode,
					r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), r.Header.Get("X-Cache"), body)
			}
		}
		// a is skipped now: no fallback.
		r, body := tl.post(t, p.URL, obsBody("q4", false))
		if r.StatusCode != 200 || r.Header.Get("X-Upstream") != "b" || r.Header.Get("X-Attempts") != "" {
			t.Fatalf("with a's breaker open: status %d upstream %q attempts %q: %s", r.StatusCode, r.Header.Get("X-Upstream"), r.Header.Get("X-Attempts"), body)
		}
		if a.Calls() != 3 {
			t.Fatalf("a got %d calls, want 3 (its breaker should be open)", a.Calls())
		}
		// Hits.
		tl.waitHit(t, p.URL, obsBody("q1", false))
		tl.waitHit(t, p.URL, obsBody("q2", false))
		tl.waitHit(t, p.URL, obsBody("q1", false))
		// A bypass, a streamed miss and a bad request.
		if r, _ := tl.post(t, p.URL, obsBody("q3", false), "Cache-Control", "no-store"); r.Header.Get("X-Cache") != "BYPASS" {
			t.Fatalf("no-store: X-Cache %q", r.Header.Get("X-Cache"))
		}
		if r, body := tl.post(t, p.URL, obsBody("s1", true)); r.StatusCode != 200 || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
			t.Fatalf("stream: status %d: %q", r.StatusCode, body)
		}
		if r, _ := tl.post(t, p.URL, `{"model":`); r.StatusCode != 400 {
			t.Fatalf("bad request: status %d", r.StatusCode)
		}

		hits, misses, bypass := tl.xcache["HIT"], tl.xcache["MISS"], tl.xcache["BYPASS"]
		served := misses + bypass // answers b produced
		if hits < 3 || tl.status[200] != tl.responses-1 || tl.attempts["2"] != 3 || b.Calls() != served {
			t.Fatalf("unexpected traffic: %+v, b calls %d", *tl, b.Calls())
		}

		obsEventually(t, func() []string {
			m, _ := obsMetrics(t, p.Admin)
			var bad []string
			want := func(what string, got, want float64) {
				if got != want {
					bad = append(bad, fmt.Sprintf("%s = %v, want %v", what, got, want))
				}
			}
			want(`switchyard_requests_total{route="chat_completions",status="200"}`, m.get("switchyard_requests_total", "route", "chat_completions", "status", "200"), float64(tl.status[200]))
			want(`switchyard_requests_total{route="chat_completions",status="400"}`, m.get("switchyard_requests_total", "route", "chat_completions", "status", "400"), 1)
			want(`switchyard_requests_total{route="chat_completions"}`, m.get("switchyard_requests_total", "route", "chat_completions"), float64(tl.responses))
			want(`switchyard_request_duration_seconds_count{route="chat_completions"}`, m.get("switchyard_request_duration_seconds_count", "route", "chat_completions"), float64(tl.responses))
			want(`switchyard_cache_requests_total{result="hit"}`, m.get("switchyard_cache_requests_total", "result", "hit"), float64(hits))
			want(`switchyard_cache_requests_total{result="miss"}`, m.get("switchyard_cache_requests_total", "result", "miss"), float64(misses))
			want(`switchyard_cache_requests_total{result="bypass"}`, m.get("switchyard_cache_requests_total", "result", "bypass"), float64(bypass))
			want(`switchyard_cache_requests_total{result="coalesced"}`, m.get("switchyard_cache_requests_total", "result", "coalesced"), 0)
			want(`switchyard_cache_requests_total{result="error"}`, m.get("switchyard_cache_requests_total", "result", "error"), 0)
			want(`switchyard_fallbacks_total`, m.get("switchyard_fallbacks_total"), 3)
			want(`switchyard_coalesced_requests_total`, m.get("switchyard_coalesced_requests_total"), 0)
			want(`switchyard_upstream_requests_total{upstream="a",outcome="error"}`, m.get("switchyard_upstream_requests_total", "upstream", "a", "outcome", "error"), 3)
			want(`switchyard_upstream_requests_total{upstream="a"}`, m.get("switchyard_upstream_requests_total", "upstream", "a"), 3)
			want(`switchyard_upstream_requests_total{upstream="b",outcome="ok"}`, m.get("switchyard_upstream_requests_total", "upstream", "b", "outcome", "ok"), float64(served))
			want(`switchyard_upstream_requests_total{upstream="b"}`, m.get("switchyard_upstream_requests_total", "upstream", "b"), float64(served))
			want(`switchyard_upstream_breaker_state{upstream="a"}`, m.get("switchyard_upstream_breaker_state", "upstream", "a"), 2)
			want(`switchyard_upstream_breaker_state{upstream="b"}`, m.get("switchyard_upstream_breaker_state", "upstream", "b"), 0)
			want(`switchyard_upstream_breaker_transitions_total{upstream="a",to="open"}`, m.get("switchyard_upstream_breaker_transitions_total", "upstream", "a", "to", "open"), 1)
			want(`switchyard_upstream_health{upstream="a"}`, m.get("switchyard_upstream_health", "upstream", "a"), 0)
			want(`switchyard_upstream_health{upstream="b"}`, m.get("switchyard_upstream_health", "upstream", "b"), 1)
			want(`switchyard_upstream_quota_used{upstream="b",unit="requests"}`, m.get("switchyard_upstream_quota_used", "upstream", "b", "unit", "requests"), float64(served))
			want(`switchyard_upstream_quota_limit{upstream="b",unit="requests"}`, m.get("switchyard_upstream_quota_limit", "upstream", "b", "unit", "requests"), 1000)
			want(`switchyard_tokens_total{upstream="b",kind="prompt"}`, m.get("switchyard_tokens_total", "upstream", "b", "kind", "prompt"), float64(12*served))
			want(`switchyard_tokens_total{upstream="b",kind="completion"}`, m.get("switchyard_tokens_total", "upstream", "b", "kind", "completion"), float64(5*served))
			want(`switchyard_tokens_total{upstream="a"}`, m.get("switchyard_tokens_total", "upstream", "a"), 0)
			want(`switchyard_upstream_duration_seconds_count{upstream="b"}`, m.get("switchyard_upstream_duration_seconds_count", "upstream", "b"), float64(served))
			want(`switchyard_upstream_time_to_first_byte_seconds_count{upstream="b"}`, m.get("switchyard_upstream_time_to_first_byte_seconds_count", "upstream", "b"), 1)
			want(`switchyard_requests_in_flight`, m.get("switchyard_requests_in_flight"), 0)
			if sa, sb := m.get("switchyard_upstream_score", "upstream", "a"), m.get("switchyard_upstream_score", "upstream", "b"); !(sa < sb) || sb <= 0 || sb > 1 {
				bad = append(bad, fmt.Sprintf("scores a=%v b=%v: want 0 <= a < b <= 1", sa, sb))
			}
			if m.has("switchyard_upstream_quota_used", "upstream", "a") {
				bad = append(bad, "quota gauges for a, which has no quota")
			}
			return bad
		})

		obsEventually(t, func() []string {
			st, _ := obsFetchStatus(t, p.Admin)
			var bad []string
			check := func(ok bool, format string, args ...any) {
				if !ok {
					bad = append(bad, fmt.Sprintf(format, args...))
				}
			}
			backend := "embedded"
			if top != "" {
				backend = "memcached"
			}
			check(st.Version != "" && st.UptimeSeconds > 0, "version %q uptime %v", st.Version, st.UptimeSeconds)
			check(st.Requests == int64(tl.responses), "requests %d, want %d", st.Requests, tl.responses)
			wantRate := float64(tl.responses-1) / float64(tl.responses)
			check(math.Abs(st.SuccessRate-wantRate) < 1e-9, "success_rate %v, want %v", st.SuccessRate, wantRate)
			check(st.Cache.Backend == backend, "cache.backend %q, want %q", st.Cache.Backend, backend)
			check(st.Cache.Hits == int64(hits) && st.Cache.Misses == int64(misses), "cache hits %d misses %d, want %d %d", st.Cache.Hits, st.Cache.Misses, hits, misses)
			wantHR := float64(hits) / float64(hits+misses)
			check(math.Abs(st.Cache.HitRate-wantHR) < 1e-9, "cache.hit_rate %v, want %v", st.Cache.HitRate, wantHR)
			ua, ub := st.upstream("a"), st.upstream("b")
			if ua == nil || ub == nil || len(st.Upstreams) != 2 {
				return append(bad, fmt.Sprintf("upstreams %+v", st.Upstreams))
			}
			check(ua.Provider == "openai" && ua.Priority == 1 && ua.Configured, "a: %+v", *ua)
			check(ua.Breaker == "open" && ua.Breakers["obs-model"] == "open" && ua.Breakers["(key)"] == "closed", "a breaker %q breakers %v", ua.Breaker, ua.Breakers)
			check(ua.Requests == 3 && ua.Failures == 3, "a requests %d failures %d, want 3 3", ua.Requests, ua.Failures)
			check(ua.LastError != nil && *ua.LastError == "HTTP 500 server_error", "a last_error %v", ua.LastError)
			check(ua.Components.Health == 0 && ua.Score < ub.Score, "a health %v score %v (b %v)", ua.Components.Health, ua.Score, ub.Score)
			check(ub.Breaker == "closed" && ub.Breakers["obs-model"] == "closed", "b breaker %q %v", ub.Breaker, ub.Breakers)
			check(ub.Requests == int64(served) && ub.Failures == 0, "b requests %d failures %d, want %d 0", ub.Requests, ub.Failures, served)
			check(ub.LatencyMS > 0 && ub.Components.Health == 1, "b latency_ms %v health %v", ub.LatencyMS, ub.Components.Health)
			check(ub.LastError != nil && *ub.LastError == "", "b last_error %v", ub.LastError)
			check(ub.Quota.Used == int64(served) && ub.Quota.Limit == 1000 && ub.Quota.Unit == "requests" && ub.Quota.ResetsAt != nil && ub.Quota.ResetsAt.After(time.Now()),
				"b quota %+v, want used %d of 1000 requests", ub.Quota, served)
			wantScore := 0.4*ub.Components.Health + 0.3*ub.Components.Quota + 0.3*ub.Components.Latency
			check(math.Abs(ub.Score-wantScore) < 1e-9, "b score %v != 0.4*%v + 0.3*%v + 0.3*%v", ub.Score, ub.Components.Health, ub.Components.Quota, ub.Components.Latency)
			return bad
		})

		// The HTML view of the same report.
		resp, page := obsGetStatus(t, p.Admin, obsBrowserAccept)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("HTML /status: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		for _, want := range []string{"<table", "<td>a</td>", "<td>b</td>", `class="open">open</span>`, "HTTP 500 server_error", "obs-model"} {
			if !strings.Contains(string(page), want) {
				t.Errorf("HTML /status lacks %q", want)
			}
		}
	})
}

// ---- secrets ----------------------------------------------------------------

// TestSecretsNeverExposed configures recognisable keys (upstream keys, one
// of them from the environment, and an inbound auth key), drives traffic
// with a rejected key, 500s, retries, a stream, a cut stream, all upstreams
// failing and a reload, then looks for the keys everywhere the proxy
// writes: logs, /metrics, /status (JSON and HTML), and every response's
// headers and body.
func TestSecretsNeverExposed(t *testing.T) {
	const (
		keyA    = "sk-test-SECRET-aaaa1111"
		keyHF   = "hf_SECRETbbbb2222"
		keyC    = "gsk_SECRETcccc3333"
		inbound = "client-SECRET-dddd4444"
	)
	secrets := []string{keyA, keyHF, keyC, inbound, "SECRET"}

	// OpenAI's own 401 masks the key like this.
	k1 := newFake(t, statusHandler(401, `{"error":{"message":"Incorrect API key provided: sk-test-****1111. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`))
	hf := newFake(t, statusHandler(500, `{"error":"Internal Server Error"}`))
	c := newFake(t, obsPlainOrStream("fine"))
	hfYAML := strings.Replace(upstreamYAML("hf", hf.BaseURL(), "${HF_TEST_KEY}", 2, "    retry: {attempts: 1, backoff: 10ms}\n"), "provider: openai", "provider: huggingface", 1)
	cfg := testConfig(fmt.Sprintf("auth:\n  keys: [%q]\n", inbound),
		upstreamYAML("k1", k1.BaseURL(), keyA, 1, ""), hfYAML, upstreamYAML("c", c.BaseURL(), keyC, 3, ""))
	p := startProxy(t, cfg, "HF_TEST_KEY="+keyHF)

	var seen bytes.Buffer // every response: status line, headers, body
	record := func(what string, r *http.Response, body []byte) {
		fmt.Fprintf(&seen, "== %s: %d\n", what, r.StatusCode)
		_ = r.Header.Write(&seen)
		seen.Write(body)
		seen.WriteByte('\n')
	}
	auth := []string{"Authorization", "Bearer " + inbound}
	send := func(what, body string, wantStatus int, hdr ...string) []byte {
		t.Helper()
		r := post(t, p.URL, body, append(append([]string{}, auth...), hdr...)...)
		b, _ := io.ReadAll(r.Body) // a cut stream ends with an error: keep what came
		r.Body.Close()
		record(what, r, b)
		if wantStatus != 0 && r.StatusCode != wantStatus {
			t.Errorf("%s: status %d, want %d: %s", what, r.StatusCode, wantStatus, b)
		}
		return b
	}

	send("plain, k1 401 and hf 500 fail over to c", obsBody("p1", false), 200)
	send("stream, failing over to c", obsBody("s1", true), 200)
	send("plain again: k1's key breaker opens", obsBody("p2", false), 200)
	c.SetHandler(sseHandler(streamScript{words: []string{"a", "b", "c"}, cutAfter: 2}))
	if b := send("stream cut after its first event", obsBody("s2", true), 200); !strings.Contains(string(b), `"error"`) {
		t.Errorf("cut stream without an in-band error: %q", b)
	}
	c.SetHandler(statusHandler(500, `{"error":{"message":"c failed too"}}`))
	if b := send("everything fails: c's own error relayed", obsBody("p3", false), 0); !strings.Contains(string(b), "c failed too") {
		t.Errorf("all failed: %s", b)
	}
	send("wrong inbound key", obsBody("p4", false), 401, "Authorization", "Bearer "+inbound+"-wrong")
	send("no inbound key", obsBody("p4", false), 401, "Authorization", "")
	c.SetHandler(obsPlainOrStream("fine"))
	send("repeat (a cache hit once stored)", obsBody("p1", false), 200)

	req, _ := http.NewRequest("GET", p.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+inbound)
	if r, err := httpClient.Do(req); err == nil {
		record("models", r, readAll(t, r))
	} else {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	if !p.WaitLog(`"msg":"reloaded"`) {
		t.Errorf("no reload logged")
	}
	send("after reload", obsBody("p6", false), 200)

	if k1.Calls() == 0 || hf.Calls() < 2 || c.Calls() == 0 {
		t.Fatalf("traffic did not reach every upstream: k1 %d hf %d c %d", k1.Calls(), hf.Calls(), c.Calls())
	}
	if got := hf.LastHeader().Get("Authorization"); got != "Bearer "+keyHF {
		t.Fatalf("hf's key from the environment did not reach it: %q", got)
	}

	// No admin_listen: /metrics and /status are on the API listener, and
	// need the inbound key.
	_, metricsText := getWith(t, p.URL, "/metrics", "Bearer "+inbound)
	_, statusJSON := getWith(t, p.URL, "/status", "Bearer "+inbound)
	_, statusHTML := getWith(t, p.URL, "/status?format=html", "Bearer "+inbound)
	if !strings.Contains(string(statusHTML), "<table") {
		t.Fatalf("no HTML /status: %.200s", statusHTML)
	}
	places := map[string]string{
		"logs":          p.Logs(),
		"/metrics":      string(metricsText),
		"/status JSON":  string(statusJSON),
		"/status HTML":  string(statusHTML),
		"API responses": seen.String(),
	}
	for where, text := range places {
		for _, s := range secrets {
			if i := strings.Index(text, s); i >= 0 {
				t.Errorf("%q appears in %s: ...%s...", s, where, text[max(i-200, 0):min(i+100, len(text))])
			}
		}
	}
	// The failures are visible, as the upstream's status, type and code:
	// never its message, which can quote a client's request.
	if !strings.Contains(string(statusJSON), `"last_error": "HTTP 401 invalid_request_error invalid_api_key"`) {
		t.Errorf("k1's last_error is not in /status: %s", statusJSON)
	}
	for _, msg := range []string{"Incorrect API key provided", "sk-test-****1111", "c failed too"} {
		if strings.Contains(string(statusJSON), msg) || strings.Contains(string(statusHTML), msg) {
			t.Errorf("/status quotes an upstream's message %q", msg)
		}
	}
}

// ---- admin_listen -------------------------------------------------------------

func TestAdminListenServesMetricsAndStatus(t *testing.T) {
	up := newFake(t, okJSON("x"))
	p := startProxy(t, testConfig(`admin_listen: "127.0.0.1:0"`+"\n", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	if p.Admin == p.URL || p.Admin == "" {
		t.Fatalf("admin address %q (main %q): admin_addr missing from the listening log line", p.Admin, p.URL)
	}
	r := post(t, p.URL, simpleBody)
	readAll(t, r)
	if r.StatusCode != 200 {
		t.Fatalf("API on the main listener: %d", r.StatusCode)
	}

	m, _ := obsMetrics(t, p.Admin)
	if got := m.get("switchyard_requests_total", "route", "chat_completions", "status", "200"); got != 1 {
		t.Errorf("admin /metrics: chat 200s = %v, want 1", got)
	}
	if !m.has("go_goroutines") || !m.has("process_resident_memory_bytes") {
		t.Error("admin /metrics lacks Go runtime or process metrics")
	}
	st, _ := obsFetchStatus(t, p.Admin)
	if st.Requests != 1 || st.upstream("one") == nil {
		t.Errorf("admin /status: %+v", st)
	}
	if resp, page := obsGetStatus(t, p.Admin, obsBrowserAccept); resp.StatusCode != 200 || !strings.Contains(string(page), "<td>one</td>") {
		t.Errorf("admin HTML /status: %d", resp.StatusCode)
	}
	get := func(url string) int {
		t.Helper()
		resp, err := httpClient.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		return resp.StatusCode
	}
	for _, path := range []string{"/metrics", "/status"} {
		if code := get(p.URL + path); code != 404 {
			t.Errorf("main listener %s: %d, want 404", path, code)
		}
	}
	if code := get(p.Admin + "/healthz"); code != 200 {
		t.Errorf("admin /healthz: %d", code)
	}
	if code := get(p.URL + "/healthz"); code != 200 {
		t.Errorf("main /healthz: %d", code)
	}
	// The admin listener serves no API.
	r = post(t, p.Admin, simpleBody)
	readAll(t, r)
	if r.StatusCode != 404 {
		t.Errorf("API on the admin listener: %d, want 404", r.StatusCode)
	}
	if get(p.Admin+"/v1/models") != 404 {
		t.Error("/v1/models on the admin listener")
	}
	if up.Calls() != 1 {
		t.Errorf("upstream calls %d, want 1", up.Calls())
	}
}

// ---- Grafana dashboard ----------------------------------------------------------

type obsDashPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	GridPos    map[string]int `json:"gridPos"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []obsDashPanel `json:"panels"`
}

var (
	obsPromString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	obsPromMatchers = regexp.MustCompile(`\{[^}]*\}`)
	obsPromRange    = regexp.MustCompile(`\[[^\]]*\]`)
	obsPromGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	obsPromNumber   = regexp.MustCompile(`\b[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\b`)
	obsPromIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	obsPromKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
)

// promExprMetrics returns the metric names a PromQL expression selects:
// identifiers outside strings, label matchers, ranges and grouping clauses
// that are not function calls or keywords.
func promExprMetrics(expr string) []string {
	e := obsPromString.ReplaceAllString(expr, `""`)
	e = obsPromMatchers.ReplaceAllString(e, " ")
	e = obsPromRange.ReplaceAllString(e, " ")
	e = obsPromGrouping.ReplaceAllString(e, " ")
	e = obsPromNumber.ReplaceAllString(e, " ")
	var out []string
	for _, m := range obsPromIdent.FindAllStringSubmatch(e, -1) {
		name := strings.TrimRight(strings.TrimSuffix(strings.TrimSpace(m[0]), "("), " ")
		if m[1] != "" || obsPromKeywords[name] {
			continue // a function or aggregation, or a keyword
		}
		out = append(out, name)
	}
	return out
}

func TestDashboardExprMetrics(t *testing.T) {
	got := promExprMetrics(`histogram_quantile(0.99, sum by (le, upstream) (rate(switchyard_x_bucket{upstream=~"$upstream", a="b{c}"}[5m]))) / on(upstream) group_left max(y_total) > 1e3 and bool z`)
	if strings.Join(got, ",") != "switchyard_x_bucket,y_total,z" {
		t.Errorf("got %v", got)
	}
}

// TestDashboardMetricsExist decodes examples/grafana-dashboard.json and
// checks that every panel's expressions name only series that a running
// switchyard exports after some traffic.
func TestDashboardMetricsExist(t *testing.T) {
	raw, err := readFile("../examples/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Inputs []struct {
			Name, Type, PluginID string
		} `json:"__inputs"`
		SchemaVersion int            `json:"schemaVersion"`
		Title         string         `json:"title"`
		UID           string         `json:"uid"`
		Panels        []obsDashPanel `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("the dashboard is not valid JSON: %v", err)
	}
	if dash.SchemaVersion < 36 || dash.Title == "" || dash.UID == "" {
		t.Errorf("schemaVersion %d title %q uid %q", dash.SchemaVersion, dash.Title, dash.UID)
	}
	if len(dash.Inputs) != 1 || dash.Inputs[0].Name != "DS_PROMETHEUS" || dash.Inputs[0].Type != "datasource" || dash.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs %+v: want one DS_PROMETHEUS datasource", dash.Inputs)
	}

	// A proxy with a quota (for the quota gauges) after plain, streamed and
	// cached requests.
	up := newFake(t, obsPlainOrStream("dash"))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "    quota: {limit: 100, unit: requests, period: day}\n")))
	readAll(t, post(t, p.URL, obsBody("d1", false)))
	readAll(t, post(t, p.URL, obsBody("d2", true)))
	waitHit(t, p.URL, obsBody("d1", false))
	m, _ := obsMetrics(t, p.Admin)
	exported := m.names()

	var all []obsDashPanel
	var walk func([]obsDashPanel)
	walk = func(ps []obsDashPanel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	ids := map[int]bool{}
	used := map[string]bool{}
	for _, p := range all {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos["w"] == 0 || p.GridPos["h"] == 0 {
			t.Errorf("panel %q has no size", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %+v, %d targets", p.Title, p.Datasource, len(p.Targets))
		}
		for _, tg := range p.Targets {
			names := promExprMetrics(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: %q selects no metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
				if !exported[n] {
					t.Errorf("panel %q: %q uses %s, which switchyard does not export", p.Title, tg.Expr, n)
				}
			}
		}
	}
	for _, v := range dash.Templating.List {
		for _, n := range promExprMetrics(strings.TrimPrefix(v.Definition, "label_values")) {
			if n != "upstream" && !exported[n] {
				t.Errorf("variable %s uses %s, which switchyard does not export", v.Name, n)
			}
		}
	}
	for _, want := range []string{
		"switchyard_requests_total", "switchyard_request_duration_seconds_bucket", "switchyard_cache_requests_total",
		"switchyard_upstream_duration_seconds_bucket", "switchyard_upstream_time_to_first_byte_seconds_bucket",
		"switchyard_upstream_breaker_state", "switchyard_upstream_score", "switchyard_upstream_quota_used",
		"switchyard_upstream_quota_limit", "switchyard_fallbacks_total", "switchyard_tokens_total",
	} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("dashboard metrics: %s", strings.Join(names, " "))
}
