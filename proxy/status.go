package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// statusReport is the /status JSON. Its field names are a public contract
// (issue 5): add fields, never rename or remove them.
type statusReport struct {
	Version       string           `json:"version"`
	UptimeSeconds float64          `json:"uptime_seconds"`
	Requests      int64            `json:"requests"`
	SuccessRate   float64          `json:"success_rate"`
	Cache         cacheStatus      `json:"cache"`
	Upstreams     []upstreamStatus `json:"upstreams"`
	// Providers are the registered providers, in config order.
	Providers []string `json:"providers"`
	// ByProvider sums the upstreams' counts per provider.
	ByProvider map[string]providerStatus `json:"by_provider"`
}

type cacheStatus struct {
	Backend string `json:"backend"`
	// Hits counts answers from the cache and from an identical request in
	// flight (coalesced); Misses the requests that went upstream for a
	// cacheable answer. Bypassed requests are neither.
	Hits    int64   `json:"hits"`
	Misses  int64   `json:"misses"`
	HitRate float64 `json:"hit_rate"`
}

type upstreamStatus struct {
	Name       string `json:"name"`
	Provider   string `json:"provider"`
	Priority   int    `json:"priority"`
	Configured bool   `json:"configured"`
	// Breaker is the worst state of the upstream's breakers; Breakers the
	// state per model (breakers are per model), with the API key's breaker
	// under "(key)".
	Breaker    string            `json:"breaker"`
	Breakers   map[string]string `json:"breakers,omitempty"`
	Score      float64           `json:"score"`
	Components scoreComponents   `json:"score_components"`
	LatencyMS  float64           `json:"latency_ms"`
	Quota      quotaStatus       `json:"quota"`
	Requests   int64             `json:"requests"`
	Failures   int64             `json:"failures"`
	// LastError is the last failed attempt's message, "" if none.
	LastError string `json:"last_error"`
	// CooldownUntil is when the longest rate-limit cooldown ends.
	CooldownUntil *time.Time `json:"cooldown_until,omitempty"`
	Disabled      string     `json:"disabled,omitempty"`
}

type scoreComponents struct {
	Health  float64 `json:"health"`
	Quota   float64 `json:"quota"`
	Latency float64 `json:"latency"`
}

type quotaStatus struct {
	Used     int64      `json:"used"`
	Limit    int64      `json:"limit"`
	Unit     string     `json:"unit"`
	ResetsAt *time.Time `json:"resets_at,omitempty"`
}

type providerStatus struct {
	Upstreams int   `json:"upstreams"`
	Requests  int64 `json:"requests"`
	Failures  int64 `json:"failures"`
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// statusReport gathers the report. It names upstreams, never their keys.
func (s *Server) statusReport() statusReport {
	st := s.st.Load()
	hits, misses := s.hits.Load(), s.misses.Load()
	reqs := s.requests.Load()
	rep := statusReport{
		Version:       s.version,
		UptimeSeconds: time.Since(s.started).Seconds(),
		Requests:      reqs,
		SuccessRate:   ratio(s.successes.Load(), reqs),
		Cache:         cacheStatus{Backend: s.backend, Hits: hits, Misses: misses, HitRate: ratio(hits, hits+misses)},
		Upstreams:     []upstreamStatus{},
		Providers:     []string{},
		ByProvider:    map[string]providerStatus{},
	}
	snap := st.policy.Snapshot()
	byName := make(map[string]int, len(snap))
	for i := range snap {
		byName[snap[i].Name] = i
	}
	for _, u := range st.upstreams {
		us := upstreamStatus{Name: u.Name, Provider: u.Provider, Priority: u.Priority, Configured: u.Configured(), Breaker: "closed"}
		if i, ok := byName[u.Name]; ok {
			p := snap[i]
			us.Breaker, us.Breakers = p.Breaker, p.Breakers
			us.Score = p.Score
			us.Components = scoreComponents{Health: p.Health, Quota: p.QuotaScore, Latency: p.LatencyScore}
			us.LatencyMS = p.LatencyMS
			us.Quota = quotaStatus{Used: p.Quota.Used, Limit: p.Quota.Limit, Unit: p.Quota.Unit}
			if !p.Quota.ResetsAt.IsZero() {
				t := p.Quota.ResetsAt
				us.Quota.ResetsAt = &t
			}
			if !p.CooldownUntil.IsZero() {
				t := p.CooldownUntil
				us.CooldownUntil = &t
			}
			us.Requests, us.Failures, us.Disabled = p.Requests, p.Failures, p.Disabled
			us.LastError = st.redact(p.LastError)
		}
		if !us.Configured {
			us.Disabled = "unconfigured: no api_key"
		}
		rep.Upstreams = append(rep.Upstreams, us)
		ps, seen := rep.ByProvider[u.Provider]
		if !seen {
			rep.Providers = append(rep.Providers, u.Provider)
		}
		ps.Upstreams++
		ps.Requests += us.Requests
		ps.Failures += us.Failures
		rep.ByProvider[u.Provider] = ps
	}
	return rep
}

func (s *Server) handleStatus(ctx *fasthttp.RequestCtx) {
	rep := s.statusReport()
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.Set("Vary", "Accept")
	if wantsHTML(ctx.Request.Header.Peek("Accept"), ctx.QueryArgs().Peek("format")) {
		var buf bytes.Buffer
		if err := statusPage.Execute(&buf, rep); err != nil {
			writeError(ctx, fasthttp.StatusInternalServerError, "status: "+err.Error(), typeServer, "", codeInternal)
			return
		}
		ctx.Response.Header.SetContentType("text/html; charset=utf-8")
		ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
		ctx.Response.Header.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		ctx.SetBody(buf.Bytes())
		return
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, "status: "+err.Error(), typeServer, "", codeInternal)
		return
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetBody(b)
}

// wantsHTML reports whether /status should answer with the HTML page: the
// query parameter format=html|json decides when present; else the Accept
// header must rank text/html strictly above application/json (RFC 9110
// content negotiation: the most specific matching range gives each type
// its q). JSON is the default, and wins ties such as "*/*".
func wantsHTML(accept, format []byte) bool {
	switch strings.ToLower(string(format)) {
	case "html":
		return true
	case "json":
		return false
	}
	if len(accept) == 0 {
		return false
	}
	qHTML := acceptQ(accept, "text", "html")
	return qHTML > 0 && qHTML > acceptQ(accept, "application", "json")
}

// acceptQ returns the quality the Accept header gives typ/sub: that of the
// most specific range matching it, 0 if none matches.
func acceptQ(accept []byte, typ, sub string) float64 {
	best, q := -1, 0.0
	for _, part := range strings.Split(string(accept), ",") {
		params := strings.Split(part, ";")
		mt := strings.ToLower(strings.TrimSpace(params[0]))
		t, st, ok := strings.Cut(mt, "/")
		if !ok {
			continue
		}
		spec := -1
		switch {
		case t == typ && st == sub:
			spec = 2
		case t == typ && st == "*":
			spec = 1
		case t == "*" && st == "*":
			spec = 0
		}
		if spec <= best {
			continue
		}
		pq := 1.0
		for _, p := range params[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(strings.TrimSpace(k), "q") {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil || math.IsNaN(f) {
					f = 0
				}
				pq = min(max(f, 0), 1)
			}
		}
		best, q = spec, pq
	}
	return q
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"pct": func(f float64) string { return strconv.FormatFloat(f*100, 'f', 1, 64) + "%" },
	"f3":  func(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) },
	"f1":  func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"uptime": func(sec float64) string {
		return (time.Duration(sec) * time.Second).Round(time.Second).String()
	},
	"ts": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"quota": func(q quotaStatus) string {
		if q.Limit == 0 && q.Used == 0 {
			return "—"
		}
		return fmt.Sprintf("%d / %d", q.Used, q.Limit)
	},
}).Parse(statusTemplate))

// statusTemplate is the HTML view of the report. html/template escapes
// every value (upstream names, error messages) for its context.
const statusTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchyard status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .6em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; margin: 0; }
dl.summary dt { font-weight: 600; }
dl.summary dd { margin: 0; }
.closed { color: #176f2c; }
.half-open { color: #a06000; font-weight: 600; }
.open { color: #b00020; font-weight: 600; }
.err { color: #b00020; max-width: 40em; word-break: break-word; }
ul.breakers { margin: 0; padding-left: 1.1em; }
small { color: #666; }
</style>
</head>
<body>
<h1>Switchyard status</h1>
<dl class="summary" id="summary">
<dt>Version</dt><dd>{{.Version}}</dd>
<dt>Uptime</dt><dd>{{uptime .UptimeSeconds}}</dd>
<dt>Requests</dt><dd>{{.Requests}}</dd>
<dt>Success rate</dt><dd>{{pct .SuccessRate}}</dd>
<dt>Cache backend</dt><dd>{{.Cache.Backend}}</dd>
<dt>Cache hits</dt><dd>{{.Cache.Hits}}</dd>
<dt>Cache misses</dt><dd>{{.Cache.Misses}}</dd>
<dt>Cache hit rate</dt><dd>{{pct .Cache.HitRate}}</dd>
</dl>
<h2>Upstreams</h2>
<table id="upstreams">
<thead>
<tr><th>Name</th><th>Provider</th><th>Priority</th><th>Configured</th><th>Breaker</th>
<th>Score</th><th>Health</th><th>Quota score</th><th>Latency score</th><th>Latency ms</th>
<th>Quota used / limit</th><th>Unit</th><th>Resets at</th><th>Requests</th><th>Failures</th>
<th>Last error</th><th>Disabled</th></tr>
</thead>
<tbody>
{{- range .Upstreams}}
<tr>
<td>{{.Name}}</td>
<td>{{.Provider}}</td>
<td class="num">{{.Priority}}</td>
<td>{{if .Configured}}yes{{else}}no{{end}}</td>
<td><span class="{{.Breaker}}">{{.Breaker}}</span>{{if .Breakers}}
<ul class="breakers">{{range $model, $state := .Breakers}}<li>{{$model}}: <span class="{{$state}}">{{$state}}</span></li>{{end}}</ul>{{end}}</td>
<td class="num">{{f3 .Score}}</td>
<td class="num">{{f3 .Components.Health}}</td>
<td class="num">{{f3 .Components.Quota}}</td>
<td class="num">{{f3 .Components.Latency}}</td>
<td class="num">{{f1 .LatencyMS}}</td>
<td class="num">{{quota .Quota}}</td>
<td>{{.Quota.Unit}}</td>
<td>{{ts .Quota.ResetsAt}}</td>
<td class="num">{{.Requests}}</td>
<td class="num">{{.Failures}}</td>
<td class="err">{{.LastError}}</td>
<td>{{.Disabled}}{{if .CooldownUntil}}{{if .Disabled}}<br>{{end}}cooling down until {{ts .CooldownUntil}}{{end}}</td>
</tr>
{{- end}}
</tbody>
</table>
<p><small>The same report as JSON: <a href="?format=json">/status?format=json</a> (the default without <code>Accept: text/html</code>). Metrics: <code>/metrics</code>.</small></p>
</body>
</html>
`
