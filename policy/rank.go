package policy

import (
	"cmp"
	"slices"
	"time"
)

// Rank orders targets (the upstreams that serve the requested model and have
// a key, each with its upstream model name) best first and returns the ones
// it left out with the reason and the time they are expected back. It does
// not block: it reads in-process state only (a due refresh of a shared quota
// counter runs in the background). The first candidate is marked as picked
// for tie-breaking; see the package doc.
func (p *Policy) Rank(targets []Target) (ranked []Candidate, skipped []Skipped) {
	e := p.env
	now := e.now()
	ranked = make([]Candidate, 0, len(targets))
	minLat := 0.0
	for _, t := range targets {
		u := p.byName[t.Name]
		if u == nil {
			skipped = append(skipped, Skipped{Name: t.Name, Model: t.Model, Reason: ReasonUnknownUpstream})
			continue
		}
		d := u.st.lookup(t.Model)
		if reason, until := p.blocked(u, d, t.Model, now); reason != "" {
			skipped = append(skipped, Skipped{Name: t.Name, Model: t.Model, Reason: reason, Until: until})
			continue
		}
		c := Candidate{
			Name:     t.Name,
			Model:    t.Model,
			Priority: u.spec.Priority,
			Health:   u.st.healthScore(now.UnixNano(), p.decay),
			Quota:    u.grp.quotaScore(e, t.Model, now),
		}
		if d != nil {
			c.Latency = loadFloat(&d.ewma) // raw EWMA for now; 0 = no samples
			if c.Latency > 0 && (minLat == 0 || c.Latency < minLat) {
				minLat = c.Latency
			}
		}
		ranked = append(ranked, c)
	}
	for i := range ranked {
		c := &ranked[i]
		if c.Latency > 0 {
			c.Latency = (minLat + p.pad) / (c.Latency + p.pad)
		} else {
			c.Latency = 1
		}
		c.Score = p.weights.Health*c.Health + p.weights.Quota*c.Quota + p.weights.Latency*c.Latency
	}
	slices.SortStableFunc(ranked, func(a, b Candidate) int {
		if a.Priority != b.Priority {
			return cmp.Compare(a.Priority, b.Priority)
		}
		return cmp.Compare(b.Score, a.Score)
	})
	p.spreadTies(ranked)
	if len(ranked) > 0 {
		p.byName[ranked[0].Name].st.dep(ranked[0].Model).markPicked()
	}
	return ranked, skipped
}

// Skipped returns the targets Rank would leave out now, with the reason and
// when each is expected back, without ranking the rest or marking any as
// picked (so asking does not shift the tie order).
func (p *Policy) Skipped(targets []Target) []Skipped {
	now := p.env.now()
	var skipped []Skipped
	for _, t := range targets {
		u := p.byName[t.Name]
		if u == nil {
			skipped = append(skipped, Skipped{Name: t.Name, Model: t.Model, Reason: ReasonUnknownUpstream})
			continue
		}
		if reason, until := p.blocked(u, u.st.lookup(t.Model), t.Model, now); reason != "" {
			skipped = append(skipped, Skipped{Name: t.Name, Model: t.Model, Reason: reason, Until: until})
		}
	}
	return skipped
}

// KeyBreakerOpen reports whether the named upstream's key breaker is open
// (its key was refused or it failed across models), and until when: what
// stops calls that concern no model, such as operations on a stored
// response. An unknown name is not open.
func (p *Policy) KeyBreakerOpen(name string) (until time.Time, open bool) {
	u := p.byName[name]
	if u == nil {
		return time.Time{}, false
	}
	rem := openRemaining(u.st.keyCB)
	if rem <= 0 {
		return time.Time{}, false
	}
	return p.env.now().Add(time.Duration(rem)).UTC(), true
}

// spreadTies reorders, within each priority, the candidates whose score is
// within tieBand of the best so that the least recently picked comes first.
func (p *Policy) spreadTies(ranked []Candidate) {
	for i := 0; i < len(ranked); {
		prio, best := ranked[i].Priority, ranked[i].Score
		j := i + 1
		for j < len(ranked) && ranked[j].Priority == prio && ranked[j].Score >= best-p.tieBand {
			j++
		}
		if j-i > 1 {
			// Insertion sort by last pick; stable, no allocation, n is small.
			ties := ranked[i:j]
			for a := 1; a < len(ties); a++ {
				for b := a; b > 0 && p.lastPick(&ties[b]) < p.lastPick(&ties[b-1]); b-- {
					ties[b], ties[b-1] = ties[b-1], ties[b]
				}
			}
		}
		for j < len(ranked) && ranked[j].Priority == prio {
			j++
		}
		i = j
	}
}

func (p *Policy) lastPick(c *Candidate) uint64 {
	if d := p.byName[c.Name].st.lookup(c.Model); d != nil {
		return d.lastPick.Load()
	}
	return 0
}

// blocked returns why (u, model) cannot take a request now and until when;
// when several reasons apply, the one lasting longest.
func (p *Policy) blocked(u *upstream, d *deployment, model string, now time.Time) (reason string, until time.Time) {
	n := now.UnixNano()
	var untilNS int64
	consider := func(r string, t int64) {
		if reason == "" || t > untilNS {
			reason, untilNS = r, t
		}
	}
	g := u.grp
	if du := g.disabledUntil.Load(); du > n {
		consider(ReasonQuotaExhausted, du)
	}
	if g.quota.Limit > 0 {
		// A used-up quota keeps the group out until it resets: the period
		// end, or the upstream's own stated reset when that is earlier.
		// Once that has passed the group is admitted again, and its next
		// reservation starts the count anew (or is refused, exactly).
		if used, pi := g.localQuota(p.env, now); used >= g.quota.Limit {
			if until := g.exhaustedUntil(pi, n); until != 0 {
				consider(ReasonQuotaExhausted, until)
			}
		}
	}
	if r := g.rlLookup(model); r != nil {
		if cd := r.cooldown.Load(); cd > n {
			consider(ReasonRateLimited, cd)
		}
	}
	if rem := openRemaining(u.st.keyCB); rem > 0 {
		consider(ReasonBreakerOpen, n+rem)
	}
	if d != nil {
		if rem := openRemaining(d.cb); rem > 0 {
			consider(ReasonBreakerOpen, n+rem)
		}
	}
	if reason == "" {
		return "", time.Time{}
	}
	return reason, time.Unix(0, untilNS).UTC()
}
