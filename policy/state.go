package policy

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"switchyard/config"
	"switchyard/verdict"
)

const (
	healthWindow  = 100
	ewmaAlpha     = 0.3
	maxModels     = 256
	overflowModel = "(other)"
	// KeyBreaker is the key under which UpstreamStatus.Breakers reports the
	// upstream's key breaker (the one that counts only KeyRejected).
	KeyBreaker = "(key)"
)

// pickSeq orders "last picked" marks across all Policies, so that marks
// carried over by Reload stay comparable.
var pickSeq atomic.Uint64

// upState is the mutable state of one upstream. It survives Reload.
type upState struct {
	name     string
	settings config.Breaker // the settings its breakers were built with
	env      atomic.Pointer[env]

	keyCB    circuitbreaker.CircuitBreaker[Attempt]
	depMu    sync.Mutex                             // serialises deployment creation
	deps     atomic.Pointer[map[string]*deployment] // copy on write
	halfOpen atomic.Int32                           // breakers currently half-open

	hmu       sync.Mutex
	ring      [healthWindow]bool  // true = failed
	failedAt  [healthWindow]int64 // when a failed entry was observed, Unix ns (Options.Now)
	ringLen   int
	ringPos   int
	ringFails int
	failing   atomic.Int32 // ringFails, readable without hmu

	ewma     atomic.Uint64 // float64 bits of nanoseconds over all models; 0 = no samples
	requests atomic.Int64
	failures atomic.Int64
	retries  *metrics.Counter
	lastErr  atomic.Pointer[string]

	transitions [3]*metrics.Counter // indexed by circuitbreaker.State
}

// deployment is one (upstream, model) pair.
type deployment struct {
	model string
	cb    circuitbreaker.CircuitBreaker[Attempt]
	ewma  atomic.Uint64 // float64 bits of nanoseconds; 0 = no samples
	// lastPick orders ties: the pickSeq value when this deployment was last
	// ranked first or run by Do.
	lastPick atomic.Uint64
}

func newUpState(name string, b config.Breaker, e *env) *upState {
	st := &upState{name: name, settings: b}
	st.env.Store(e)
	m := map[string]*deployment{}
	st.deps.Store(&m)
	for _, s := range []circuitbreaker.State{circuitbreaker.ClosedState, circuitbreaker.OpenState, circuitbreaker.HalfOpenState} {
		st.transitions[s] = e.set.GetOrCreateCounter(fmt.Sprintf(`switchyard_upstream_breaker_transitions_total{upstream=%q,to=%q}`, name, s.String()))
	}
	st.retries = e.set.GetOrCreateCounter(fmt.Sprintf(`switchyard_upstream_retries_total{upstream=%q}`, name))
	st.keyCB = st.newBreaker(KeyBreaker, func(a Attempt, _ error) bool { return a.Outcome == verdict.KeyRejected })
	return st
}

// copyFrom carries everything but the breakers over from o.
func (st *upState) copyFrom(o *upState) {
	o.hmu.Lock()
	st.ring, st.failedAt, st.ringLen, st.ringPos, st.ringFails = o.ring, o.failedAt, o.ringLen, o.ringPos, o.ringFails
	o.hmu.Unlock()
	st.failing.Store(int32(st.ringFails))
	st.ewma.Store(o.ewma.Load())
	st.requests.Store(o.requests.Load())
	st.failures.Store(o.failures.Load())
	st.lastErr.Store(o.lastErr.Load())
	for model, od := range *o.deps.Load() {
		d := st.dep(model)
		d.ewma.Store(od.ewma.Load())
		d.lastPick.Store(od.lastPick.Load())
	}
}

func (st *upState) newBreaker(model string, isFailure func(Attempt, error) bool) circuitbreaker.CircuitBreaker[Attempt] {
	s := st.settings
	return circuitbreaker.NewBuilder[Attempt]().
		HandleIf(isFailure).
		WithFailureThreshold(uint(s.FailureThreshold)).
		WithSuccessThreshold(uint(s.SuccessThreshold)).
		WithDelay(s.Delay).
		OnStateChanged(func(ev circuitbreaker.StateChangedEvent) { st.transition(model, ev.OldState, ev.NewState) }).
		Build()
}

func (st *upState) transition(model string, from, to circuitbreaker.State) {
	if to == circuitbreaker.HalfOpenState {
		st.halfOpen.Add(1)
	}
	if from == circuitbreaker.HalfOpenState {
		st.halfOpen.Add(-1)
	}
	if int(to) >= 0 && int(to) < len(st.transitions) {
		st.transitions[to].Inc()
	}
	st.env.Load().log.Info("upstream breaker state changed",
		"upstream", st.name, "model", model, "from", from.String(), "to", to.String())
}

// lookup returns the deployment for model without creating it, or nil.
func (st *upState) lookup(model string) *deployment {
	m := *st.deps.Load()
	if d, ok := m[model]; ok {
		return d
	}
	if len(m) >= maxModels {
		return m[overflowModel]
	}
	return nil
}

// dep returns the deployment for model, creating it on first use.
func (st *upState) dep(model string) *deployment {
	if d := st.lookup(model); d != nil {
		return d
	}
	st.depMu.Lock()
	defer st.depMu.Unlock()
	old := *st.deps.Load()
	if d, ok := old[model]; ok {
		return d
	}
	key := model
	if len(old) >= maxModels {
		key = overflowModel
		if d, ok := old[key]; ok {
			return d
		}
	}
	d := &deployment{model: key}
	d.cb = st.newBreaker(key, func(a Attempt, _ error) bool { return a.Outcome.IsBreakerFailure() })
	m := make(map[string]*deployment, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[key] = d
	st.deps.Store(&m)
	return d
}

// recordHealth adds one attempt, observed at now (Unix ns), to the health
// window.
func (st *upState) recordHealth(failed bool, now int64) {
	st.hmu.Lock()
	if st.ringLen == healthWindow {
		if st.ring[st.ringPos] {
			st.ringFails--
		}
	} else {
		st.ringLen++
	}
	st.ring[st.ringPos] = failed
	st.failedAt[st.ringPos] = 0
	if failed {
		st.ringFails++
		st.failedAt[st.ringPos] = now
	}
	st.ringPos = (st.ringPos + 1) % healthWindow
	st.failing.Store(int32(st.ringFails))
	st.hmu.Unlock()
}

// decay is how a failure's weight in the health score fades with age (see
// the package doc): 1 while the failure is at most hold old, then halving
// every halfLife.
type decay struct {
	hold     int64   // nanoseconds
	halfLife float64 // nanoseconds, > 0
}

func (d decay) weight(age int64) float64 {
	if age <= d.hold {
		return 1
	}
	return math.Exp2(-float64(age-d.hold) / d.halfLife)
}

// healthScore is the health sub-score at now (Unix ns): 1 − Σ weight(age)
// over the failed attempts in the window, divided by the attempts in the
// window; capped while a breaker is half-open.
func (st *upState) healthScore(now int64, d decay) float64 {
	h := 1.0
	if st.failing.Load() > 0 {
		st.hmu.Lock()
		w, left := 0.0, st.ringFails
		for i := 0; left > 0 && i < st.ringLen; i++ {
			if st.ring[i] {
				w += d.weight(now - st.failedAt[i])
				left--
			}
		}
		if st.ringLen > 0 {
			h = max(0, 1-w/float64(st.ringLen))
		}
		st.hmu.Unlock()
	}
	if st.halfOpen.Load() > 0 && h > 0.5 {
		h = 0.5
	}
	return h
}

func (st *upState) setLastErr(s string) {
	if len(s) > 256 {
		s = s[:256]
	}
	st.lastErr.Store(&s)
}

func (d *deployment) markPicked() {
	d.lastPick.Store(pickSeq.Add(1))
}

// updateEWMA folds sample (nanoseconds, > 0) into the average stored in a.
func updateEWMA(a *atomic.Uint64, sample float64) {
	sample = max(sample, 1)
	for {
		old := a.Load()
		v := sample
		if o := math.Float64frombits(old); o > 0 {
			v = ewmaAlpha*sample + (1-ewmaAlpha)*o
		}
		if a.CompareAndSwap(old, math.Float64bits(v)) {
			return
		}
	}
}

func loadFloat(a *atomic.Uint64) float64 { return math.Float64frombits(a.Load()) }

// openRemaining is how long cb still rejects calls; 0 when closed,
// half-open, or open with the delay passed (it half-opens on the next call).
func openRemaining(cb circuitbreaker.CircuitBreaker[Attempt]) int64 {
	return int64(cb.RemainingDelay())
}

// effectiveRank is cb's state as the next call would find it, ranked as
// stateRank does: failsafe-go moves an open breaker to half-open only when
// a call asks for a permit after the delay, so State alone would show open
// for as long as no traffic comes; an open breaker whose delay has passed
// is reported half-open.
func effectiveRank(cb circuitbreaker.CircuitBreaker[Attempt]) int {
	s := cb.State()
	if s == circuitbreaker.OpenState && cb.RemainingDelay() <= 0 {
		// Between the two reads the breaker may have half-opened (and
		// then RemainingDelay is 0 too) or reopened (a fresh delay): both
		// read right.
		s = circuitbreaker.HalfOpenState
	}
	return stateRank(s)
}

// stateRank orders breaker states from best to worst: closed 0, half-open 1,
// open 2 (the switchyard_upstream_breaker_state values).
func stateRank(s circuitbreaker.State) int {
	switch s {
	case circuitbreaker.OpenState:
		return 2
	case circuitbreaker.HalfOpenState:
		return 1
	}
	return 0
}

var rankNames = [...]string{"closed", "half-open", "open"}
