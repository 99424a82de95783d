package policy

import (
	"errors"
	"fmt"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/budget"

	"switchyard/verdict"
)

// Do runs one attempt on upstream name for upstream model model: call runs
// inside the upstream's retry policy (if configured), its key breaker
// (counts KeyRejected) and the (name, model) breaker (counts Failure and
// KeyRejected), in that order from the outside in.
//
// Before each call, Do reserves the call's quota when the upstream's quota
// group has a limit (one shared counter increment; see the package doc,
// Quota): one request, or for tokens and chars what est returns (est may
// be nil; it is called only for those units). The reservation is passed to
// call (nil without a limit) and must be handed to Observe in the
// attempt's Observation, which settles it. When it would take the count
// over the limit, Do gives it back and returns a *QuotaError (wrapping
// ErrQuotaExhausted) without calling call; a breaker that refuses the call
// after the reservation gives it back too.
//
// When a breaker is open, Do returns an error wrapping ErrBreakerOpen and a
// zero Attempt without calling call. Otherwise it returns what the last
// call returned (an error with Outcome OK is treated as Failure); a retry
// that the budget, an opening breaker or the quota stops also ends with
// the last call's result. Do records nothing in health or latency: report
// every attempt, retried ones included, with Observe (for example from
// inside call).
func (p *Policy) Do(name, model string, est func() Estimate, call func(*Reservation) (Attempt, error)) (Attempt, error) {
	u := p.byName[name]
	if u == nil {
		return Attempt{}, fmt.Errorf("upstream %q: %w", name, ErrUnknownUpstream)
	}
	d := u.st.dep(model)
	// Check first, so that an inner open breaker does not record a success
	// on the outer key breaker.
	if openRemaining(u.st.keyCB) > 0 || openRemaining(d.cb) > 0 {
		return Attempt{}, fmt.Errorf("upstream %q model %q: %w", name, model, ErrBreakerOpen)
	}
	d.markPicked()
	if u.retry == nil {
		return p.once(u, d, model, est, call)
	}
	var (
		last    Attempt
		lastErr error
		refused error // why the first try did not run
		ran     int
	)
	_, err := failsafe.With[Attempt](u.retry).Get(func() (Attempt, error) {
		a, err := p.once(u, d, model, est, call)
		if errors.Is(err, ErrBreakerOpen) || errors.Is(err, ErrQuotaExhausted) {
			if ran == 0 {
				refused = err
			}
			return a, err // the retry aborts on it; the last call's result stands
		}
		if ran > 0 {
			u.st.retries.Inc()
		}
		ran++
		last, lastErr = a, err
		return a, err
	})
	if ran == 0 {
		if refused == nil {
			refused = fmt.Errorf("upstream %q model %q: %w", name, model, ErrBreakerOpen)
		}
		return Attempt{}, refused
	}
	if errors.Is(err, budget.ErrExceeded) {
		p.budgetExceeded.Inc()
		p.env.log.Debug("retry budget exceeded; not retrying", "upstream", name, "model", model)
	}
	return last, lastErr
}

// once is one call through the two breakers, used directly as their
// executor would use them (permit, call, record inner then outer) but
// without an execution per call, and with one difference: an attempt that
// comes back Pending (a committed stream) keeps its permits, and its
// record waits for StreamDone or StreamFailed, with or without a retry
// policy around it. The quota is reserved first: failsafe-go's breakers
// cannot hand a permit back unused, a reservation can be.
func (p *Policy) once(u *upstream, d *deployment, model string, est func() Estimate, call func(*Reservation) (Attempt, error)) (Attempt, error) {
	st, name := u.st, u.spec.Name
	res, err := p.reserve(u, model, est)
	if err != nil {
		return Attempt{}, err
	}
	if !st.keyCB.TryAcquirePermit() {
		u.grp.release(p.env, res)
		return Attempt{}, fmt.Errorf("upstream %q model %q: %w", name, model, ErrBreakerOpen)
	}
	if !d.cb.TryAcquirePermit() {
		st.keyCB.RecordSuccess() // release the permit; the executor records an inner refusal the same way
		u.grp.release(p.env, res)
		return Attempt{}, fmt.Errorf("upstream %q model %q: %w", name, model, ErrBreakerOpen)
	}
	a, err := call(res)
	if err != nil && a.Outcome == verdict.OK {
		a.Outcome = verdict.Failure
	}
	if a.Pending && a.Outcome == verdict.OK && err == nil {
		a.Deferred = true // recorded by StreamDone or StreamFailed
		return a, nil
	}
	d.cb.RecordResult(a)
	st.keyCB.RecordResult(a)
	return a, err
}

// Observe records what an attempt produced: the health window, the latency
// average, the quota (settling ob.Reservation, which costs one counter
// round trip when the real cost differs from the reservation, or none),
// the rate-limit view, cooldowns and the last error. Call it once per
// attempt that Do ran (not when Do returned an error without calling),
// including those whose call never reached the upstream; for a stream,
// once when it ends, with Latency the time to the first token.
func (p *Policy) Observe(name, model string, ob Observation) {
	u := p.byName[name]
	if u == nil {
		return
	}
	e := p.env
	now := e.now()
	st, g := u.st, u.grp
	st.requests.Add(1)
	switch ob.Outcome {
	case verdict.OK:
		st.recordHealth(false, now.UnixNano())
		if ob.Latency > 0 {
			updateEWMA(&st.dep(model).ewma, float64(ob.Latency))
			updateEWMA(&st.ewma, float64(ob.Latency))
		}
	case verdict.Failure, verdict.KeyRejected:
		st.failures.Add(1)
		st.recordHealth(true, now.UnixNano())
	}
	if ob.Outcome != verdict.OK {
		msg := ob.Err
		if msg == "" {
			msg = ob.Outcome.String()
			if ob.Status != 0 {
				msg = fmt.Sprintf("%s (status %d)", msg, ob.Status)
			}
		}
		st.setLastErr(msg)
	}

	switch {
	case ob.Reservation != nil:
		ob.Reservation.g.settle(e, ob.Reservation, &ob, now)
	case g.quota.Limit > 0 && charged(ob.Status, ob.Outcome):
		g.charge(e, now, g.delta(&ob))
	}

	rl := &ob.RateLimit
	if rl.Known && (rl.LimitRequests > 0 || rl.LimitTokens > 0) {
		g.rlGet(model).setView(now, rl)
		stated := g.noteStated(now, rl)
		// A window used up is news for every replica; remaining counts
		// and a moved reset are worth a write now and then.
		g.publish(e, now, rl.Exhausted() > 0 || (rl.LimitRequests > 0 && rl.RemainingRequests <= 0) ||
			(rl.LimitTokens > 0 && rl.RemainingTokens <= 0) || stated && g.used.Load() >= g.quota.Limit)
	}
	switch {
	case ob.Outcome == verdict.QuotaExhausted:
		p.disable(u, now, rl)
		g.publish(e, now, true)
	case ob.Cooldown > 0:
		why := "rate limited"
		if ob.Outcome != verdict.RateLimited {
			why = "rate limit headers report nothing remaining" // they predict the next 429
		}
		p.cooldown(u, model, now, ob.Cooldown, why)
		g.publish(e, now, true)
	}
}

func (p *Policy) cooldown(u *upstream, model string, now time.Time, wait time.Duration, why string) {
	wait = min(wait, maxCooldown)
	until := now.Add(wait)
	if u.grp.rlGet(model).startCooldown(now, until) {
		p.env.log.Info("upstream cooling down", "upstream", u.spec.Name, "group", u.grp.key,
			"model", model, "reason", why, "until", until.UTC(), "wait", wait)
	}
}

// disable takes the whole quota group out after a 402.
func (p *Policy) disable(u *upstream, now time.Time, rl *verdict.RateLimit) {
	g := u.grp
	var until time.Time
	switch {
	case rl.RetryAfter > 0:
		until = now.Add(min(rl.RetryAfter, maxCooldown))
	case rl.ResetRequests > 0:
		until = now.Add(min(rl.ResetRequests, maxCooldown))
	default:
		_, until = periodBounds(g.quota.Period, now)
	}
	prev := storeMax(&g.disabledUntil, until.UnixNano())
	if prev <= now.UnixNano() {
		p.env.log.Warn("upstream quota exhausted (402); disabled", "upstream", u.spec.Name,
			"group", g.key, "upstreams", g.members, "until", until.UTC())
	}
}

// StreamDone records that a committed stream ended well (or that its
// client left while the upstream was fine). deferred is Attempt.Deferred
// from Do: when set, the breakers record the success now, releasing the
// permits Do left taken (a half-open breaker's trial is the whole stream).
// The caller also observes the attempt with Observe.
func (p *Policy) StreamDone(name, model string, deferred bool) {
	u := p.byName[name]
	if u == nil || !deferred {
		return
	}
	a := Attempt{Outcome: verdict.OK}
	u.st.dep(model).cb.RecordResult(a)
	u.st.keyCB.RecordResult(a)
}

// StreamFailed records a stream that failed after it was committed to the
// client. deferred is Attempt.Deferred from Do: when set the breakers record
// the failure now (the attempt's only record, so an upstream that always
// dies after its first token still opens its breaker); otherwise they had
// recorded a success at the commit point and this adds a failure. Then the
// attempt is observed as a Failure (health, the request and failure counts,
// the last error, and the quota when ob.Status says the upstream answered —
// it did, and charged). ob.Err must contain no secrets.
func (p *Policy) StreamFailed(name, model string, deferred bool, ob Observation) {
	u := p.byName[name]
	if u == nil {
		return
	}
	d := u.st.dep(model)
	if deferred {
		a := Attempt{Outcome: verdict.Failure}
		d.cb.RecordResult(a)
		u.st.keyCB.RecordResult(a)
	} else {
		d.cb.RecordFailure()
	}
	ob.Outcome = verdict.Failure
	if ob.Err == "" {
		ob.Err = "stream failed after commit"
	}
	p.Observe(name, model, ob)
}
