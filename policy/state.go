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
	ring      [healthWindow]bool // true = failed
	ringLen   int
	ringPos   int
	ringFails int
	health    atomic.Uint64 // float64 bits

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
	st.health.Store(math.Float64bits(1))
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
	st.ring, st.ringLen, st.ringPos, st.ringFails = o.ring, o.ringLen, o.ringPos, o.ringFails
	o.hmu.Unlock()
	st.health.Store(o.health.Load())
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

// recordHealth adds one attempt to the health window.
func (st *upState) recordHealth(failed bool) {
	st.hmu.Lock()
	if st.ringLen == healthWindow {
		if st.ring[st.ringPos] {
			st.ringFails--
		}
	} else {
		st.ringLen++
	}
	st.ring[st.ringPos] = failed
	if failed {
		st.ringFails++
	}
	st.ringPos = (st.ringPos + 1) % healthWindow
	h := float64(st.ringLen-st.ringFails) / float64(st.ringLen)
	st.health.Store(math.Float64bits(h))
	st.hmu.Unlock()
}

// healthScore is the health sub-score, capped while a breaker is half-open.
func (st *upState) healthScore() float64 {
	h := math.Float64frombits(st.health.Load())
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
