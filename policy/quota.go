package policy

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"switchyard/config"
	"switchyard/verdict"
)

const (
	quotaRefresh    = 15 * time.Second // max age of the cached shared counter value seen by Rank
	counterGrace    = time.Hour        // counter keys expire this long after their period
	defaultCooldown = 10 * time.Second // verdict.RateLimited without any reset known
	maxCooldown     = 24 * time.Hour
	rlViewTTL       = time.Minute // how long rate-limit headers without reset are trusted
)

const (
	warned80 uint8 = 1 << iota
	warned90
	warnedExhausted
)

// group is the quota state shared by the upstreams of one quota group. It
// survives Reload.
type group struct {
	key     string
	quota   config.Quota // normalised; Limit 0 = no counting
	members string       // upstream names, for logs

	mu     sync.Mutex // period roll and warnings
	warned uint8

	period     atomic.Pointer[periodInfo]
	used       atomic.Int64
	lastSync   atomic.Int64 // Now() in unix ns of the last counter read or increment
	refreshing atomic.Bool

	disabledUntil atomic.Int64 // unix ns; 402 disablement

	rlMu sync.Mutex
	rl   atomic.Pointer[map[string]*rlState] // per upstream model; copy on write
}

// periodInfo is the current counting period.
type periodInfo struct {
	start, end int64 // unix ns
	key        string
}

// rlState is the rate-limit view and cooldown of one (group, model).
type rlState struct {
	view     atomic.Pointer[rlView]
	cooldown atomic.Int64 // unix ns
}

// rlView holds the last rate-limit headers seen, with absolute expiry.
type rlView struct {
	reqLimit, reqRemaining, reqUntil int64
	tokLimit, tokRemaining, tokUntil int64
}

func newGroup(key string, q config.Quota, members string) *group {
	g := &group{key: key, quota: q, members: members}
	m := map[string]*rlState{}
	g.rl.Store(&m)
	return g
}

// carryGroup returns the group for key, reusing or copying old state.
func carryGroup(old *group, key string, q config.Quota, members, prefix string) *group {
	if old != nil && old.quota == q && old.members == members {
		if pi := old.period.Load(); pi == nil || strings.HasPrefix(pi.key, prefix+":"+key+":") {
			return old
		}
	}
	g := newGroup(key, q, members)
	if old == nil {
		return g
	}
	g.rl.Store(old.rl.Load())
	g.disabledUntil.Store(old.disabledUntil.Load())
	if pi := old.period.Load(); pi != nil && old.quota.Unit == q.Unit && old.quota.Period == q.Period &&
		strings.HasPrefix(pi.key, prefix+":"+key+":") {
		old.mu.Lock()
		g.warned = old.warned
		old.mu.Unlock()
		g.period.Store(old.period.Load())
		g.used.Store(old.used.Load())
		g.lastSync.Store(old.lastSync.Load())
	}
	return g
}

// periodBounds returns the UTC day or month containing now.
func periodBounds(period string, now time.Time) (start, end time.Time) {
	t := now.UTC()
	if period == "month" {
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	start = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 0, 1)
}

// current returns the counting period containing now, rolling over (and
// resetting the cached count and warnings) when needed.
func (g *group) current(e *env, now time.Time) *periodInfo {
	n := now.UnixNano()
	if pi := g.period.Load(); pi != nil && n >= pi.start && n < pi.end {
		return pi
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if pi := g.period.Load(); pi != nil && n >= pi.start && n < pi.end {
		return pi
	}
	s, end := periodBounds(g.quota.Period, now)
	layout := "20060102"
	if g.quota.Period == "month" {
		layout = "200601"
	}
	pi := &periodInfo{
		start: s.UnixNano(),
		end:   end.UnixNano(),
		key:   e.prefix + ":" + g.key + ":" + g.quota.Unit + ":" + s.Format(layout),
	}
	g.used.Store(0)
	g.lastSync.Store(0)
	g.warned = 0
	g.period.Store(pi)
	return pi
}

// delta is how much an observation costs in the group's unit.
func (g *group) delta(ob *Observation) int64 {
	switch g.quota.Unit {
	case "tokens":
		return ob.Usage.PromptTokens + ob.Usage.CompletionTokens
	case "chars":
		return ob.Chars
	}
	return 1
}

// charge adds delta to the counter; on counter errors it counts in process.
func (g *group) charge(e *env, now time.Time, delta int64) {
	if delta <= 0 {
		return
	}
	pi := g.current(e, now)
	v, err := e.counter.Incr(pi.key, uint64(delta), time.Unix(0, pi.end).Add(counterGrace))
	if err != nil {
		e.log.Debug("quota counter unavailable; counting in process", "group", g.key, "err", err)
		g.used.Add(delta)
	} else if g.period.Load() == pi {
		storeMax(&g.used, clampInt64(v))
		g.lastSync.Store(now.UnixNano())
	}
	g.checkThresholds(e, pi)
}

// maybeRefresh re-reads the shared counter in the background when the cached
// value is older than quotaRefresh. It never blocks.
func (g *group) maybeRefresh(e *env, now time.Time, pi *periodInfo) {
	n := now.UnixNano()
	if last := g.lastSync.Load(); last != 0 && n >= last && n-last < int64(quotaRefresh) {
		return
	}
	if !g.refreshing.CompareAndSwap(false, true) {
		return
	}
	g.lastSync.Store(n)
	go func() {
		defer g.refreshing.Store(false)
		v, err := e.counter.Value(pi.key)
		if err != nil {
			e.log.Debug("quota counter unavailable; using the cached count", "group", g.key, "err", err)
			return
		}
		if g.period.Load() != pi {
			return
		}
		storeMax(&g.used, clampInt64(v))
		g.checkThresholds(e, pi)
	}()
}

// checkThresholds logs the 80%, 90% and 100% marks once per period each
// (only the highest newly crossed one).
func (g *group) checkThresholds(e *env, pi *periodInfo) {
	lim := g.quota.Limit
	used := g.used.Load()
	var level uint8
	switch {
	case used >= lim:
		level = warned80 | warned90 | warnedExhausted
	case used >= lim-lim/10: // 90%
		level = warned80 | warned90
	case used >= lim-lim/5: // 80%
		level = warned80
	default:
		return
	}
	g.mu.Lock()
	if g.period.Load() != pi {
		g.mu.Unlock()
		return
	}
	fresh := level &^ g.warned
	g.warned |= level
	g.mu.Unlock()
	if fresh == 0 {
		return
	}
	attrs := []any{"group", g.key, "upstreams", g.members, "used", used, "limit", lim,
		"unit", g.quota.Unit, "resets_at", time.Unix(0, pi.end).UTC()}
	switch {
	case fresh&warnedExhausted != 0:
		e.log.Warn("upstream quota exhausted; skipping it until the period ends", attrs...)
	case fresh&warned90 != 0:
		e.log.Warn("upstream quota at 90%", attrs...)
	default:
		e.log.Warn("upstream quota at 80%", attrs...)
	}
}

// localQuota returns the cached use for now's period and whether the
// limit is reached. It triggers a background refresh when due.
func (g *group) localQuota(e *env, now time.Time) (used int64, pi *periodInfo) {
	pi = g.current(e, now)
	g.maybeRefresh(e, now, pi)
	return g.used.Load(), pi
}

// rlLookup returns the rate-limit state for model, or nil.
func (g *group) rlLookup(model string) *rlState {
	m := *g.rl.Load()
	if r, ok := m[model]; ok {
		return r
	}
	if len(m) >= maxModels {
		return m[overflowModel]
	}
	return nil
}

// rlGet returns the rate-limit state for model, creating it.
func (g *group) rlGet(model string) *rlState {
	if r := g.rlLookup(model); r != nil {
		return r
	}
	g.rlMu.Lock()
	defer g.rlMu.Unlock()
	old := *g.rl.Load()
	if r, ok := old[model]; ok {
		return r
	}
	key := model
	if len(old) >= maxModels {
		key = overflowModel
		if r, ok := old[key]; ok {
			return r
		}
	}
	r := &rlState{}
	m := make(map[string]*rlState, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[key] = r
	g.rl.Store(&m)
	return r
}

// setView records the headers of one answer, keeping the other dimension of
// the previous view when this answer lacks it.
func (r *rlState) setView(now time.Time, rl *verdict.RateLimit) {
	n := now.UnixNano()
	v := &rlView{}
	if old := r.view.Load(); old != nil {
		*v = *old
	}
	changed := false
	if rl.LimitRequests > 0 {
		v.reqLimit, v.reqRemaining = rl.LimitRequests, rl.RemainingRequests
		v.reqUntil = n + int64(resetOr(rl.ResetRequests, rlViewTTL))
		changed = true
	}
	if rl.LimitTokens > 0 {
		v.tokLimit, v.tokRemaining = rl.LimitTokens, rl.RemainingTokens
		v.tokUntil = n + int64(resetOr(rl.ResetTokens, rlViewTTL))
		changed = true
	}
	if changed {
		r.view.Store(v)
	}
}

func resetOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return min(d, maxCooldown)
	}
	return def
}

// frac is the view's contribution to the quota score at n (unix ns).
func (v *rlView) frac(n int64) float64 {
	q := 1.0
	if v == nil {
		return q
	}
	if v.reqLimit > 0 && n < v.reqUntil {
		q = min(q, ratio(v.reqRemaining, v.reqLimit))
	}
	if v.tokLimit > 0 && n < v.tokUntil {
		q = min(q, ratio(v.tokRemaining, v.tokLimit))
	}
	return q
}

func ratio(remaining, limit int64) float64 {
	return clamp01(float64(remaining) / float64(limit))
}

func clamp01(x float64) float64 {
	if x != x || x < 0 { // NaN or negative
		return 0
	}
	return min(x, 1)
}

// quotaScore is the quota sub-score of (group, model) at now.
func (g *group) quotaScore(e *env, model string, now time.Time) float64 {
	q := 1.0
	if g.quota.Limit > 0 {
		used, _ := g.localQuota(e, now)
		q = ratio(g.quota.Limit-used, g.quota.Limit)
	}
	if r := g.rlLookup(model); r != nil {
		q = min(q, r.view.Load().frac(now.UnixNano()))
	}
	return q
}

// startCooldown extends the (group, model) cooldown to until and reports
// whether a new cooldown began (none was running at now).
func (r *rlState) startCooldown(now, until time.Time) bool {
	prev := storeMax(&r.cooldown, until.UnixNano())
	return prev <= now.UnixNano() && until.After(now)
}

// storeMax sets a to max(a, v) and returns the previous value.
func storeMax(a *atomic.Int64, v int64) int64 {
	for {
		old := a.Load()
		if v <= old {
			return old
		}
		if a.CompareAndSwap(old, v) {
			return old
		}
	}
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// localCounter is the in-process Counter used when Options.Counter is nil.
type localCounter struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]localEntry
}

type localEntry struct {
	v        uint64
	expireAt time.Time
}

func newLocalCounter(now func() time.Time) *localCounter {
	return &localCounter{now: now, m: map[string]localEntry{}}
}

// Incr implements Counter.
func (c *localCounter) Incr(key string, delta uint64, expireAt time.Time) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[key]
	e.v += delta
	e.expireAt = expireAt
	c.m[key] = e
	if len(c.m) > 64 { // prune keys of past periods
		now := c.now()
		for k, v := range c.m {
			if v.expireAt.Before(now) {
				delete(c.m, k)
			}
		}
	}
	return e.v, nil
}

// Value implements Counter.
func (c *localCounter) Value(key string) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key].v, nil
}

var _ Counter = (*localCounter)(nil)
