package policy

import (
	"sync/atomic"
	"time"

	"switchyard/config"
)

// Reservation is the quota one attempt holds while it runs: Do takes it
// from the shared counter before the call, and Observe settles it once
// the answer is known (see Observation.Reservation). A nil *Reservation
// is valid: the upstream has no quota limit.
type Reservation struct {
	g      *group
	pi     *periodInfo
	amount int64 // in the group's unit
	done   atomic.Bool
}

// Amount returns what was reserved, in the quota's unit; 0 for nil.
func (r *Reservation) Amount() int64 {
	if r == nil {
		return 0
	}
	return r.amount
}

// reserve takes the quota an attempt on u needs before it is sent: one
// request, or the estimated tokens or characters. It is one atomic
// increment of the shared counter (which also re-creates a counter lost
// with memcached). When the new count is over the limit it gives the
// units back at once and refuses with a *QuotaError. When the counter
// fails it counts in process against what this replica knows.
func (p *Policy) reserve(u *upstream, model string, est func() Estimate) (*Reservation, error) {
	g := u.grp
	if g.quota.Limit <= 0 {
		return nil, nil
	}
	e := p.env
	now := e.now()
	pi := g.current(e, now)
	g.renew(e, pi, now)
	amount := g.estimate(est)
	v, err := g.apply(e, pi, amount, now, false)
	switch {
	case err != nil:
		e.log.Debug("quota counter unavailable; counting in process", "group", g.key, "err", err)
		if !g.tryAddLocal(pi, amount) {
			g.checkThresholds(e, pi, now)
			return nil, g.refusal(u, model, pi, now)
		}
	case v > g.quota.Limit:
		g.applyOrLocal(e, pi, -amount, now)
		g.readSoon()
		g.checkThresholds(e, pi, now)
		return nil, g.refusal(u, model, pi, now)
	case v == g.quota.Limit:
		// The last unit: the count may include reservations being given
		// back at this moment (see readSoon).
		g.readSoon()
	}
	g.checkThresholds(e, pi, now)
	return &Reservation{g: g, pi: pi, amount: amount}, nil
}

// tryAddLocal counts amount in process (see addLocal) if it fits under
// the limit, and reports whether it did.
func (g *group) tryAddLocal(pi *periodInfo, amount int64) bool {
	g.umu.Lock()
	defer g.umu.Unlock()
	if g.period.Load() != pi || g.used.Load()+amount > g.quota.Limit {
		return false
	}
	g.used.Add(amount)
	g.pending.Add(amount)
	return true
}

// refusal is the error of a reservation that did not fit.
func (g *group) refusal(u *upstream, model string, pi *periodInfo, now time.Time) error {
	until := g.exhaustedUntil(pi, now.UnixNano())
	if until == 0 {
		until = pi.end // the stated reset passed and the count has not started again
	}
	return &QuotaError{Skipped: Skipped{Name: u.spec.Name, Model: model, Reason: ReasonQuotaExhausted,
		Until: time.Unix(0, until).UTC()}}
}

// estimate is what an attempt reserves: 1 request; for tokens, the
// prompt's characters divided by 4 plus the completion's maximum (the
// request's max tokens, else the quota's default_max_tokens, else
// DefaultMaxTokens); for chars, the prompt's characters plus 4 per
// completion token.
func (g *group) estimate(est func() Estimate) int64 {
	if g.quota.Unit != config.UnitTokens && g.quota.Unit != config.UnitChars {
		return 1
	}
	var x Estimate
	if est != nil {
		x = est()
	}
	completion := x.MaxTokens
	if completion <= 0 {
		completion = g.quota.DefaultMaxTokens
	}
	if completion <= 0 {
		completion = DefaultMaxTokens
	}
	prompt := max(x.PromptChars, 0)
	if g.quota.Unit == config.UnitChars {
		return max(prompt+charsPerToken*completion, 1)
	}
	return max((prompt+charsPerToken-1)/charsPerToken+completion, 1)
}

// settle ends reservation r with what the attempt cost: a charged attempt
// (see charged) is reconciled to the cost ob reports, reserving the
// difference or giving the excess back; a 2xx that reports no cost (a
// stream cut before its usage) keeps the estimate. Any other attempt gives
// all of it back. Only the first call counts; a reservation of a period
// that has ended is left as it is.
func (g *group) settle(e *env, r *Reservation, ob *Observation, now time.Time) {
	if !r.done.CompareAndSwap(false, true) || g.period.Load() != r.pi {
		return
	}
	d := -r.amount
	if charged(ob.Status, ob.Outcome) {
		cost := g.delta(ob)
		if cost <= 0 && ob.Status >= 200 && ob.Status < 300 {
			cost = r.amount
		}
		d = cost - r.amount
	}
	if d != 0 {
		g.applyOrLocal(e, r.pi, d, now)
	}
	if d < 0 {
		g.readSoon()
	}
	g.checkThresholds(e, r.pi, now)
}

// release gives an unused reservation back (its call never ran).
func (g *group) release(e *env, r *Reservation) {
	if r == nil || !r.done.CompareAndSwap(false, true) || g.period.Load() != r.pi {
		return
	}
	now := e.now()
	g.applyOrLocal(e, r.pi, -r.amount, now)
	g.readSoon()
	g.checkThresholds(e, r.pi, now)
}

// renew starts the count again when the reset the upstream stated for the
// counted allowance (see statedWindow) has passed while the count is at
// its limit: the shared counter is read afresh and, if it is still at the
// limit, brought down to 0 (two round trips, once per stated reset and
// replica; a replica that finds it already renewed by another only reads
// it). Charges another replica makes between the read and the decrement
// are lost with the old window.
func (g *group) renew(e *env, pi *periodInfo, now time.Time) {
	n := now.UnixNano()
	r := g.pendingReset(pi)
	if r == 0 || r > n || g.used.Load() < g.quota.Limit || !g.renewing.CompareAndSwap(false, true) {
		return
	}
	defer g.renewing.Store(false)
	seq := g.opSeq.Add(1)
	v, found, err := e.counter.Lookup(pi.key)
	if err == nil && found && clampInt64(v) >= g.quota.Limit {
		seq = g.opSeq.Add(1)
		v, err = e.counter.DecrFrom(pi.key, v, 0, time.Unix(0, pi.end).Add(counterGrace))
	}
	if err != nil {
		e.log.Debug("quota counter unavailable; the count starts again later", "group", g.key, "err", err)
		return
	}
	g.setUsed(pi, seq, clampInt64(v)+g.pending.Load())
	storeMax(&g.renewed, r)
	g.mu.Lock()
	if g.period.Load() == pi {
		g.warned = 0
	}
	g.mu.Unlock()
	g.checkThresholds(e, pi, now)
	e.log.Info("upstream-stated reset passed; the quota count starts again", "group", g.key,
		"upstreams", g.members, "reset", time.Unix(0, r).UTC(), "used", g.used.Load(), "limit", g.quota.Limit,
		"unit", g.quota.Unit)
}
