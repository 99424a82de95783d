package policy

import (
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// UpstreamStatus is the state of one upstream for /status.
type UpstreamStatus struct {
	Name     string
	Priority int
	// Score, Health, QuotaScore and LatencyScore are as in the package doc,
	// with the latency compared against all upstreams' averages (over all
	// their models) and the quota the worst of the upstream's models.
	Score, Health, QuotaScore, LatencyScore float64
	// LatencyMS is the latency average over all models; 0 without samples.
	LatencyMS float64
	// Breaker is the worst state of its breakers: closed, half-open or open.
	// A breaker is reported as the next call would find it: an open one
	// whose delay has passed is half-open, even before a call has moved
	// it there (failsafe-go half-opens lazily).
	Breaker string
	// Breakers maps each model seen to its breaker state, read the same
	// way; the key breaker is under KeyBreaker.
	Breakers map[string]string
	// Quota is the configured quota, or else the rate-limit headers' daily
	// requests of the most used model.
	Quota QuotaStatus
	// Requests and Failures count observed attempts and breaker failures
	// since start (carried over by Reload).
	Requests, Failures int64
	// LastError is the last non-OK observation's message.
	LastError string
	// CooldownUntil is the end of the longest running rate-limit cooldown
	// of its quota group's models; zero if none.
	CooldownUntil time.Time
	// Disabled is ReasonQuotaExhausted while the group is out of quota,
	// else "".
	Disabled string
}

// QuotaStatus is the use of a quota in its current period.
type QuotaStatus struct {
	// Used is this replica's knowledge of the count: the shared counter
	// as last read or updated (reservations of attempts in flight
	// included).
	Used, Limit int64
	Unit        string
	// ResetsAt is when the count starts again: the period's end, or the
	// upstream-stated reset of the same allowance when that comes first.
	ResetsAt time.Time
}

// Snapshot returns the state of every upstream, in spec order.
func (p *Policy) Snapshot() []UpstreamStatus {
	now := p.env.now()
	minLat := p.minUpstreamLatency()
	out := make([]UpstreamStatus, len(p.ups))
	for i, u := range p.ups {
		out[i] = p.status(u, now, minLat)
	}
	return out
}

func (p *Policy) minUpstreamLatency() float64 {
	m := 0.0
	for _, u := range p.ups {
		if l := loadFloat(&u.st.ewma); l > 0 && (m == 0 || l < m) {
			m = l
		}
	}
	return m
}

func (p *Policy) status(u *upstream, now time.Time, minLat float64) UpstreamStatus {
	st, g := u.st, u.grp
	n := now.UnixNano()
	s := UpstreamStatus{
		Name:         u.spec.Name,
		Priority:     u.spec.Priority,
		Health:       st.healthScore(n, p.decay),
		Requests:     st.requests.Load(),
		Failures:     st.failures.Load(),
		LatencyScore: 1,
		QuotaScore:   1,
	}
	if l := loadFloat(&st.ewma); l > 0 {
		s.LatencyMS = l / float64(time.Millisecond)
		s.LatencyScore = (minLat + p.pad) / (l + p.pad)
	}
	if le := st.lastErr.Load(); le != nil {
		s.LastError = *le
	}

	// Breakers.
	worst := effectiveRank(st.keyCB)
	deps := *st.deps.Load()
	s.Breakers = make(map[string]string, len(deps)+1)
	s.Breakers[KeyBreaker] = rankNames[worst]
	for model, d := range deps {
		r := effectiveRank(d.cb)
		s.Breakers[model] = rankNames[r]
		worst = max(worst, r)
	}
	s.Breaker = rankNames[worst]

	// Quota.
	if g.quota.Limit > 0 {
		used, pi := g.localQuota(p.env, now)
		s.QuotaScore = ratio(g.quota.Limit-used, g.quota.Limit)
		s.Quota = QuotaStatus{Used: used, Limit: g.quota.Limit, Unit: g.quota.Unit, ResetsAt: time.Unix(0, g.resetsAt(pi, n)).UTC()}
		if used >= g.quota.Limit {
			s.Disabled = ReasonQuotaExhausted
		}
	}
	var cooldown int64
	worstReq := 2.0
	for _, r := range *g.rl.Load() {
		v := r.view.Load()
		s.QuotaScore = min(s.QuotaScore, v.frac(n))
		if v != nil && g.quota.Limit == 0 && v.reqLimit > 0 && n < v.reqUntil {
			if f := ratio(v.reqRemaining, v.reqLimit); f < worstReq {
				worstReq = f
				s.Quota = QuotaStatus{Used: max(v.reqLimit-v.reqRemaining, 0), Limit: v.reqLimit, Unit: "requests", ResetsAt: time.Unix(0, v.reqUntil).UTC()}
			}
		}
		if cd := r.cooldown.Load(); cd > n && cd > cooldown {
			cooldown = cd
		}
	}
	if cooldown > 0 {
		s.CooldownUntil = time.Unix(0, cooldown).UTC()
	}
	if g.disabledUntil.Load() > n {
		s.Disabled = ReasonQuotaExhausted
	}
	s.Score = p.weights.Health*s.Health + p.weights.Quota*s.QuotaScore + p.weights.Latency*s.LatencyScore
	return s
}

// Gauges. VictoriaMetrics gauges take a callback that cannot be replaced,
// and a Reload builds a new Policy: so each Policy registers its gauges in
// a set of its own, reading that Policy, and a Reload swaps the sets
// (metrics.UnregisterSet, metrics.RegisterSet). An upstream the reload
// removed loses its series with the old set.

// bindGauges builds p's gauge set and, when p reports to the default
// metrics (Options.Metrics nil), swaps it for old's.
func (p *Policy) bindGauges(old *Policy) {
	p.gauges = metrics.NewSet()
	now := p.env.now
	for _, u := range p.ups {
		name := u.spec.Name
		read := func(f func(UpstreamStatus) float64) func() float64 {
			return func() float64 { return f(p.status(u, now(), p.minUpstreamLatency())) }
		}
		p.gauges.NewGauge(fmt.Sprintf(`switchyard_upstream_breaker_state{upstream=%q}`, name), read(func(st UpstreamStatus) float64 {
			switch st.Breaker {
			case "open":
				return 2
			case "half-open":
				return 1
			}
			return 0
		}))
		p.gauges.NewGauge(fmt.Sprintf(`switchyard_upstream_score{upstream=%q}`, name), read(func(st UpstreamStatus) float64 { return st.Score }))
		p.gauges.NewGauge(fmt.Sprintf(`switchyard_upstream_health{upstream=%q}`, name), read(func(st UpstreamStatus) float64 { return st.Health }))
		if q := u.grp.quota; q.Limit > 0 {
			p.gauges.NewGauge(fmt.Sprintf(`switchyard_upstream_quota_used{upstream=%q,unit=%q}`, name, q.Unit), read(func(st UpstreamStatus) float64 { return float64(st.Quota.Used) }))
			p.gauges.NewGauge(fmt.Sprintf(`switchyard_upstream_quota_limit{upstream=%q,unit=%q}`, name, q.Unit), read(func(st UpstreamStatus) float64 { return float64(st.Quota.Limit) }))
		}
	}
	if !p.env.global {
		return
	}
	if old != nil {
		metrics.UnregisterSet(old.gauges, true)
	}
	metrics.RegisterSet(p.gauges)
}

// Gauges returns the set of p's gauges (breaker state, score, health,
// quota use and limit per upstream). It is registered for
// metrics.WritePrometheus when Options.Metrics is nil; otherwise the
// caller writes it.
func (p *Policy) Gauges() *metrics.Set { return p.gauges }
