package policy

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/budget"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"switchyard/config"
	"switchyard/verdict"
)

// Sentinel errors.
var (
	// ErrUnknownUpstream is returned by Do for a name that is not configured.
	ErrUnknownUpstream = errors.New("unknown upstream")
	// ErrBreakerOpen is returned (wrapped) by Do when a breaker of the
	// upstream refuses the call: its key breaker, or the breaker of the
	// (upstream, model) deployment.
	ErrBreakerOpen = errors.New("circuit breaker open")
	// ErrQuotaExhausted is returned by Do, wrapped in a *QuotaError, when
	// the attempt's reservation would take the upstream's quota group over
	// its limit: the upstream was not called.
	ErrQuotaExhausted = errors.New("quota exhausted")
)

// QuotaError is the error Do returns when it refuses an attempt because
// its reservation would exceed the quota. Skipped says so the way Rank
// would have: Reason ReasonQuotaExhausted, and when the quota is expected
// back. It unwraps to ErrQuotaExhausted.
type QuotaError struct {
	Skipped Skipped
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("upstream %q model %q: %s until %s", e.Skipped.Name, e.Skipped.Model, ErrQuotaExhausted,
		e.Skipped.Until.Format(time.RFC3339))
}

// Unwrap returns ErrQuotaExhausted.
func (e *QuotaError) Unwrap() error { return ErrQuotaExhausted }

// Defaults applied by New to zero-valued options.
const (
	// DefaultTieBand is the default Options.TieBand.
	DefaultTieBand = 0.05
	// DefaultLatencyPad is the default Options.LatencyPad.
	DefaultLatencyPad = 50 * time.Millisecond
	// DefaultCounterPrefix is the default Options.CounterPrefix.
	DefaultCounterPrefix = "switchyard:v1:quota"
	// DefaultFailureThreshold is the default config.Breaker.FailureThreshold.
	DefaultFailureThreshold = 5
	// DefaultSuccessThreshold is the default config.Breaker.SuccessThreshold.
	DefaultSuccessThreshold = 1
	// DefaultBreakerDelay is the default config.Breaker.Delay.
	DefaultBreakerDelay = 60 * time.Second
	// DefaultMaxTokens is the completion size reserved for a request that
	// sets neither max_tokens nor max_completion_tokens, when the quota's
	// DefaultMaxTokens is 0 (units tokens and chars).
	DefaultMaxTokens = 1024
	// RefreshInterval is how often the caller should call Refresh: the
	// age at which another replica's rate-limit news reaches this one.
	RefreshInterval = time.Second
)

// DefaultHealthHalfLife returns the default Options.HealthHalfLife for a
// breaker delay: half of it (30s at DefaultBreakerDelay).
func DefaultHealthHalfLife(breakerDelay time.Duration) time.Duration {
	return breakerDelay / 2
}

// DefaultWeights are used when all of Options.Weights are zero.
var DefaultWeights = config.Weights{Health: 0.4, Quota: 0.3, Latency: 0.3}

// Skipped.Reason values.
const (
	// ReasonBreakerOpen: the deployment's or the upstream's key breaker is open.
	ReasonBreakerOpen = "breaker open"
	// ReasonRateLimited: the upstream is cooling down after a rate limit.
	ReasonRateLimited = "rate limited"
	// ReasonQuotaExhausted: the quota is used up or the upstream answered 402.
	ReasonQuotaExhausted = "quota exhausted"
	// ReasonUnknownUpstream: the target names no configured upstream.
	ReasonUnknownUpstream = "unknown upstream"
)

const (
	maxRetryAfterHonoured = 2 * time.Second
	maxRetryDelay         = 2 * time.Second
	retryJitterFactor     = 0.25
)

// Counter is a shared quota counter (cache.Memcached, cache.Embedded).
// Implementations must be safe for concurrent use and should time out
// quickly; errors are tolerated (see the package doc, Quota).
type Counter interface {
	// IncrFrom adds delta to key and returns the new value. A missing key
	// is created as seed+delta, expiring at expireAt: the caller's last
	// known count carries over when the counter was lost.
	IncrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error)
	// DecrFrom subtracts delta from key, flooring at 0, and returns the
	// new value. A missing key is created as seed−delta (at least 0).
	DecrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error)
	// Lookup returns the value of key and whether it exists.
	Lookup(key string) (value uint64, found bool, err error)
}

// ViewStore shares what the upstreams' rate-limit headers, 429s and 402s
// said (per quota group) between replicas: cache.Memcached. Fetch returns
// an error, any, when the key is absent. Implementations must be safe for
// concurrent use and should time out quickly; errors are tolerated.
type ViewStore interface {
	Fetch(key string) ([]byte, error)
	Put(key string, value []byte, ttl time.Duration) error
}

// Estimate is what a request is expected to cost, for reserving a tokens
// or chars quota before the call (see the package doc, Quota). The caller
// reads it from the request body.
type Estimate struct {
	// PromptChars is the characters of the request's message contents.
	PromptChars int64
	// MaxTokens is the request's max_completion_tokens, else its
	// max_tokens; 0 when it sets neither.
	MaxTokens int64
}

// Options configure a Policy. The zero value is usable.
type Options struct {
	// Weights of the score; zero means DefaultWeights.
	Weights config.Weights
	// Breaker configures all circuit breakers.
	Breaker config.Breaker
	// Now is the clock for quotas, cooldowns, Skipped.Until and the age of
	// failures in the health score; default time.Now. Breakers always use
	// real time.
	Now func() time.Time
	// Counter is the shared quota counter; nil means an in-process one.
	Counter Counter
	// Views shares rate-limit views, cooldowns and 402 disablements of
	// quota groups with other replicas; nil keeps them in process.
	Views ViewStore
	// CounterPrefix starts every counter key; default DefaultCounterPrefix.
	CounterPrefix string
	// Logger receives breaker state changes (Info), quota warnings and
	// cooldowns (Warn/Info) and counter errors (Debug); nil discards.
	Logger *slog.Logger
	// TieBand is the score distance from the best candidate of a priority
	// within which candidates are ties; default DefaultTieBand.
	TieBand float64
	// LatencyPad is added to both sides of the latency ratio so that
	// sub-millisecond differences do not matter; default DefaultLatencyPad.
	LatencyPad time.Duration
	// HealthHalfLife is how fast a failure stops counting against an
	// upstream's health once it is older than Breaker.Delay: its weight
	// halves every HealthHalfLife, so health recovers toward 1 with time
	// alone and an upstream that failed gets traffic again without
	// needing attempts to prove itself (see the package doc). Zero means
	// DefaultHealthHalfLife(Breaker.Delay), 30s at the default delay. A
	// shorter half-life brings a failed upstream back sooner, and costs a
	// failover per return while it is still failing.
	HealthHalfLife time.Duration
	// RetryBudget is shared by the retry policies of all upstreams; nil
	// means budget.New() (or the previous Policy's on Reload). It must be
	// built by the failsafe-go budget package.
	RetryBudget budget.Budget
	// Metrics is the set the policy's counters are registered in; nil
	// means the default set that metrics.WritePrometheus writes, and then
	// the gauges (see Policy.Gauges) are registered for it too.
	Metrics *metrics.Set
}

// Target is one upstream that can serve the request, with the model name to
// send to it (model aliases can map one client model to different upstream
// models).
type Target struct {
	Name, Model string
}

// Candidate is a ranked target with its score and sub-scores (see the
// package doc).
type Candidate struct {
	Name     string
	Model    string
	Priority int
	Score    float64
	Health   float64
	Quota    float64
	Latency  float64
}

// Skipped is a target that Rank left out, with the reason (one of the
// Reason constants) and the time it is expected back (zero if unknown).
type Skipped struct {
	Name   string
	Model  string
	Reason string
	Until  time.Time
}

// env is what the shared per-upstream state needs from its Policy; it can
// change on Reload.
type env struct {
	now     func() time.Time
	log     *slog.Logger
	counter Counter
	views   ViewStore // nil: rate-limit views stay in process
	prefix  string
	set     *metrics.Set
	global  bool // set is the default set: the gauges are registered there too
}

// Policy decides which upstream serves a request. It is safe for
// concurrent use.
type Policy struct {
	env     *env
	weights config.Weights
	breaker config.Breaker
	tieBand float64
	pad     float64 // nanoseconds
	decay   decay   // of failures in the health score
	budget  budget.Budget
	ups     []*upstream
	byName  map[string]*upstream
	groups  map[string]*group
	// counters not bound to an upstream
	budgetExceeded *metrics.Counter
	gauges         *metrics.Set // p's own gauges, swapped on Reload (see bindGauges)
}

// upstream is one configured upstream in one Policy: its spec plus pointers
// to the state that survives Reload.
type upstream struct {
	spec  config.Upstream
	st    *upState
	grp   *group
	retry retrypolicy.RetryPolicy[Attempt] // nil without Retry.Attempts
}

// New validates specs and options and returns a Policy.
func New(specs []config.Upstream, o Options) (*Policy, error) {
	return build(specs, o, nil)
}

// Reload returns a new Policy for specs and o that carries over the state of
// upstreams whose name remains: breakers (unless Options.Breaker changed;
// then they start closed), health, latency, counters, last error,
// cooldowns, quota use and disablement (per quota group; the cached count
// only if unit and period are unchanged). A nil o.Counter, o.Views or
// o.RetryBudget keeps the old one. The receiver stays usable for requests in flight;
// both share the carried state. Metrics switch to the new Policy.
func (p *Policy) Reload(specs []config.Upstream, o Options) (*Policy, error) {
	return build(specs, o, p)
}

// budgetInternal mirrors failsafe-go's internal budget interface, which
// retrypolicy.WithBudget type-asserts.
type budgetInternal interface {
	budget.Budget
	RecordExecution()
	ReleaseExecution()
	TryAcquirePermit() bool
	ReleasePermit()
	OnBudgetExceeded(executionType budget.ExecutionType, info failsafe.ExecutionInfo)
}

func build(specs []config.Upstream, o Options, old *Policy) (*Policy, error) {
	if len(specs) == 0 {
		return nil, errors.New("policy: no upstreams")
	}
	e := &env{now: o.Now, log: o.Logger, counter: o.Counter, views: o.Views, prefix: o.CounterPrefix, set: o.Metrics}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.counter == nil {
		if old != nil {
			e.counter = old.env.counter
		} else {
			e.counter = newLocalCounter(e.now)
		}
	}
	if e.views == nil && old != nil {
		e.views = old.env.views
	}
	if e.prefix == "" {
		e.prefix = DefaultCounterPrefix
	}
	if e.set == nil {
		e.set, e.global = metrics.GetDefaultSet(), true
	}
	p := &Policy{env: e, byName: make(map[string]*upstream, len(specs)), groups: map[string]*group{}}

	w := o.Weights // valid: config.Validate
	if w == (config.Weights{}) {
		w = DefaultWeights
	}
	sum := w.Health + w.Quota + w.Latency
	p.weights = config.Weights{Health: w.Health / sum, Quota: w.Quota / sum, Latency: w.Latency / sum}

	b := o.Breaker // valid: config.Validate; zero fields take the defaults
	if b.FailureThreshold == 0 {
		b.FailureThreshold = DefaultFailureThreshold
	}
	if b.SuccessThreshold == 0 {
		b.SuccessThreshold = DefaultSuccessThreshold
	}
	if b.Delay == 0 {
		b.Delay = DefaultBreakerDelay
	}
	p.breaker = b

	switch {
	case o.TieBand < 0:
		return nil, fmt.Errorf("policy: tie band: must not be negative: %v", o.TieBand)
	case o.TieBand == 0:
		p.tieBand = DefaultTieBand
	default:
		p.tieBand = o.TieBand
	}
	switch {
	case o.LatencyPad < 0:
		return nil, fmt.Errorf("policy: latency pad: must not be negative: %v", o.LatencyPad)
	case o.LatencyPad == 0:
		p.pad = float64(DefaultLatencyPad)
	default:
		p.pad = float64(o.LatencyPad)
	}

	switch {
	case o.HealthHalfLife < 0:
		return nil, fmt.Errorf("policy: health half-life: must not be negative: %v", o.HealthHalfLife)
	case o.HealthHalfLife == 0:
		p.decay = decay{hold: int64(b.Delay), halfLife: float64(DefaultHealthHalfLife(b.Delay))}
	default:
		p.decay = decay{hold: int64(b.Delay), halfLife: float64(o.HealthHalfLife)}
	}
	p.decay.halfLife = max(p.decay.halfLife, 1)

	switch {
	case o.RetryBudget != nil:
		if _, ok := o.RetryBudget.(budgetInternal); !ok {
			return nil, errors.New("policy: retry budget: must be built by failsafe-go's budget package")
		}
		p.budget = o.RetryBudget
	case old != nil:
		p.budget = old.budget
	default:
		p.budget = budget.New()
	}
	p.budgetExceeded = e.set.GetOrCreateCounter(`switchyard_retry_budget_exceeded_total`)

	// Collect quota groups. The specs are valid (config.Validate): names
	// unique and safe as key parts and label values, members of a group
	// agree on its quota.
	type groupSpec struct {
		quota   config.Quota
		members []string
	}
	gspecs := map[string]*groupSpec{}
	var gorder []string
	norm := make([]config.Upstream, len(specs))
	for i, s := range specs {
		s.Quota = normQuota(s.Quota)
		norm[i] = s
		key := groupKey(s)
		gs := gspecs[key]
		if gs == nil {
			gs = &groupSpec{quota: s.Quota}
			gspecs[key] = gs
			gorder = append(gorder, key)
		}
		gs.members = append(gs.members, s.Name)
		if s.Quota.Limit > 0 {
			gs.quota = s.Quota // the member that counts sets the group's quota
		}
	}

	for _, key := range gorder {
		gs := gspecs[key]
		var og *group
		if old != nil {
			og = old.groups[key]
		}
		p.groups[key] = carryGroup(og, key, gs.quota, strings.Join(gs.members, ","), e.prefix)
	}

	for _, s := range norm {
		u := &upstream{spec: s, grp: p.groups[groupKey(s)]}
		var ost *upState
		if old != nil {
			if ou := old.byName[s.Name]; ou != nil {
				ost = ou.st
			}
		}
		switch {
		case ost != nil && ost.settings == p.breaker:
			u.st = ost
			u.st.env.Store(e)
		case ost != nil:
			u.st = newUpState(s.Name, p.breaker, e)
			u.st.copyFrom(ost)
		default:
			u.st = newUpState(s.Name, p.breaker, e)
		}
		if s.Retry.Attempts > 0 {
			u.retry = p.newRetryPolicy(s.Retry)
		}
		p.byName[s.Name] = u
		p.ups = append(p.ups, u)
	}

	p.bindGauges(old)
	return p, nil
}

func groupKey(s config.Upstream) string {
	if s.QuotaGroup != "" {
		return s.QuotaGroup
	}
	return s.Name
}

// normQuota fills a zero-valued quota's unit and period with config's
// defaults (requests per day), as config.Parse would have.
func normQuota(q config.Quota) config.Quota {
	if q.Unit == "" {
		q.Unit = config.UnitRequests
	}
	if q.Period == "" {
		q.Period = config.PeriodDay
	}
	return q
}

func (p *Policy) newRetryPolicy(r config.Retry) retrypolicy.RetryPolicy[Attempt] {
	return retrypolicy.NewBuilder[Attempt]().
		HandleIf(func(a Attempt, err error) bool {
			return !errors.Is(err, ErrBreakerOpen) && !errors.Is(err, ErrQuotaExhausted) && retryable(a, r)
		}).
		AbortOnErrors(ErrBreakerOpen, ErrQuotaExhausted).
		WithMaxRetries(r.Attempts).
		WithDelayFunc(func(ex failsafe.ExecutionAttempt[Attempt]) time.Duration {
			return retryDelay(r.Backoff, ex.Attempts(), ex.LastResult().RetryAfter, rand.Float64())
		}).
		WithBudget(p.budget).
		ReturnLastFailure().
		Build()
}

// retryable reports whether an attempt is tried again on the same
// upstream: a Failure that did not ask for a wait longer than 2s and is not
// a timeout (a silent upstream costs the caller its whole timeout again:
// failing over is faster), or a RateLimited answer whose wait is at most
// r.MaxRetryAfter.
func retryable(a Attempt, r config.Retry) bool {
	switch a.Outcome {
	case verdict.Failure:
		return !a.NoRetry && a.RetryAfter <= maxRetryAfterHonoured
	case verdict.RateLimited:
		return a.RetryAfter > 0 && a.RetryAfter <= r.MaxRetryAfter
	}
	return false
}

// retryDelay is the wait before the next attempt after attempt number n
// (1-based): the upstream's RetryAfter plus up to 25% (never less, so the
// upstream's wish is honoured), else backoff·2^(n-1) capped at 2s, ±25%.
// random is in [0,1).
func retryDelay(backoff time.Duration, n int, retryAfter time.Duration, random float64) time.Duration {
	if retryAfter > 0 {
		return retryAfter + time.Duration(float64(retryAfter)*retryJitterFactor*random)
	}
	d := backoff
	for i := 1; i < n && d < maxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, maxRetryDelay)
	return time.Duration(float64(d) * (1 + (2*random-1)*retryJitterFactor))
}
