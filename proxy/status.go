package proxy

import (
	"encoding/json"
	"time"

	"github.com/valyala/fasthttp"
)

// statusReport is the /status JSON.
type statusReport struct {
	Version       string           `json:"version"`
	UptimeSeconds float64          `json:"uptime_seconds"`
	Requests      int64            `json:"requests"`
	SuccessRate   float64          `json:"success_rate"`
	Cache         cacheStatus      `json:"cache"`
	Upstreams     []upstreamStatus `json:"upstreams"`
	Providers     []string         `json:"providers"`
}

type cacheStatus struct {
	Backend string  `json:"backend"`
	Hits    int64   `json:"hits"`
	Misses  int64   `json:"misses"`
	HitRate float64 `json:"hit_rate"`
}

type upstreamStatus struct {
	Name       string            `json:"name"`
	Provider   string            `json:"provider"`
	Priority   int               `json:"priority"`
	Configured bool              `json:"configured"`
	Breaker    string            `json:"breaker"`
	Breakers   map[string]string `json:"breakers,omitempty"`
	Score      float64           `json:"score"`
	Components scoreComponents   `json:"score_components"`
	LatencyMS  float64           `json:"latency_ms"`
	Quota      quotaStatus       `json:"quota"`
	Requests   int64             `json:"requests"`
	Failures   int64             `json:"failures"`
	LastError  string            `json:"last_error,omitempty"`
	Disabled   string            `json:"disabled,omitempty"`
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
	}
	snap := st.policy.Snapshot()
	byName := make(map[string]int, len(snap))
	for i := range snap {
		byName[snap[i].Name] = i
	}
	seen := map[string]bool{}
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
			us.Requests, us.Failures, us.LastError, us.Disabled = p.Requests, p.Failures, p.LastError, p.Disabled
		}
		if !us.Configured {
			us.Disabled = "unconfigured: no api_key"
		}
		rep.Upstreams = append(rep.Upstreams, us)
		if !seen[u.Provider] {
			seen[u.Provider] = true
			rep.Providers = append(rep.Providers, u.Provider)
		}
	}
	return rep
}

func (s *Server) handleStatus(ctx *fasthttp.RequestCtx) {
	rep := s.statusReport()
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, "status: "+err.Error(), typeServer, "", codeInternal)
		return
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBody(b)
}
