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
	charsPerToken   = 4           // a token is about 4 characters of English text
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
	viewKey string       // the shared view's key (see shared.go)

	mu     sync.Mutex // period roll and warnings
	warned uint8

	period atomic.Pointer[periodInfo]

	// used is this replica's knowledge of the count of the current
	// period: the value that the latest counter operation (in start
	// order) returned or read, plus pending, what was counted in process
	// while the counter failed and has not reached it yet.
	umu        sync.Mutex // orders the updates of used by counter operations; a period roll holds it
	usedSeq    uint64     // guarded by umu: the opSeq of the operation whose value used holds
	opSeq      atomic.Uint64
	used       atomic.Int64
	pending    atomic.Int64
	lastSync   atomic.Int64 // Now() in unix ns of the last counter read or update
	refreshing atomic.Bool
	// stale counts the times used was marked as possibly too high (see
	// readSoon); readStale is the mark the last read began after.
	stale, readStale atomic.Uint64

	// statedReset is when the upstream last said the allowance the quota
	// counts resets (see statedWindow), unix ns; renewed is the stated
	// reset at which the count last started again.
	statedReset atomic.Int64
	renewed     atomic.Int64
	renewing    atomic.Bool
	// exhaustedSince is when this replica first saw the count at its
	// limit (unix ns), 0 while it is not: a stated reset from before then
	// had passed already and renews nothing.
	exhaustedSince atomic.Int64

	disabledUntil atomic.Int64 // unix ns; 402 disablement

	rlMu sync.Mutex
	rl   atomic.Pointer[map[string]*rlState] // per upstream model; copy on write

	sharing
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

// rlView holds the last rate-limit headers seen, with absolute expiry, and
// when they were seen (unix ns; the newer of two views wins a merge).
type rlView struct {
	at                               int64
	reqLimit, reqRemaining, reqUntil int64
	tokLimit, tokRemaining, tokUntil int64
}

func newGroup(key string, q config.Quota, members, prefix string) *group {
	g := &group{key: key, quota: q, members: members, viewKey: prefix + ":" + key + ":rl"}
	m := map[string]*rlState{}
	g.rl.Store(&m)
	return g
}

// carryGroup returns the group for key, reusing or copying old state.
func carryGroup(old *group, key string, q config.Quota, members, prefix string) *group {
	if old != nil && old.quota == q && old.members == members && old.viewKey == prefix+":"+key+":rl" {
		if pi := old.period.Load(); pi == nil || strings.HasPrefix(pi.key, prefix+":"+key+":") {
			return old
		}
	}
	g := newGroup(key, q, members, prefix)
	if old == nil {
		return g
	}
	g.rl.Store(old.rl.Load())
	g.disabledUntil.Store(old.disabledUntil.Load())
	g.statedReset.Store(old.statedReset.Load())
	g.renewed.Store(old.renewed.Load())
	g.exhaustedSince.Store(old.exhaustedSince.Load())
	if pi := old.period.Load(); pi != nil && old.quota.Unit == q.Unit && old.quota.Period == q.Period &&
		strings.HasPrefix(pi.key, prefix+":"+key+":") {
		old.mu.Lock()
		g.warned = old.warned
		old.mu.Unlock()
		g.period.Store(old.period.Load())
		g.used.Store(old.used.Load())
		g.pending.Store(old.pending.Load())
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
	g.umu.Lock()
	g.used.Store(0)
	g.pending.Store(0) // in-process counts of a period that is over
	g.period.Store(pi)
	g.umu.Unlock()
	g.lastSync.Store(0)
	g.exhaustedSince.Store(0)
	g.warned = 0
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

// charge adds delta, the cost of an attempt that held no reservation, to
// the count.
func (g *group) charge(e *env, now time.Time, delta int64) {
	if delta <= 0 {
		return
	}
	pi := g.current(e, now)
	g.applyOrLocal(e, pi, delta, now)
	g.checkThresholds(e, pi, now)
}

// apply adds d (which may be negative) to the shared counter of the
// current period pi, together with the pending in-process count, and
// returns the counter's new value. The operation re-seeds a counter that
// has gone missing (a memcached restart) with this replica's count
// before d. With nothing to send and !always it does no I/O and returns
// the count in process. On error nothing changes.
func (g *group) apply(e *env, pi *periodInfo, d int64, now time.Time, always bool) (int64, error) {
	p := g.pending.Swap(0)
	total := d + p
	if total == 0 && !always {
		return g.used.Add(d), nil
	}
	seed := uint64(max(g.used.Load()-p, 0)) // what the counter held before d, as far as we know
	exp := time.Unix(0, pi.end).Add(counterGrace)
	seq := g.opSeq.Add(1)
	var v uint64
	var err error
	if total >= 0 {
		v, err = e.counter.IncrFrom(pi.key, uint64(total), seed, exp)
	} else {
		v, err = e.counter.DecrFrom(pi.key, uint64(-total), seed, exp)
	}
	if err != nil {
		g.pending.Add(p)
		return 0, err
	}
	g.setUsed(pi, seq, clampInt64(v)+g.pending.Load())
	g.lastSync.Store(now.UnixNano())
	return clampInt64(v), nil
}

// applyOrLocal is apply, counting d in process (to be sent with a later
// operation) when the counter fails.
func (g *group) applyOrLocal(e *env, pi *periodInfo, d int64, now time.Time) {
	if _, err := g.apply(e, pi, d, now, false); err != nil {
		g.addLocal(pi, d)
		e.log.Debug("quota counter unavailable; counting in process", "group", g.key, "err", err)
	}
}

// addLocal counts d in process, for the counter to get with the next
// operation that reaches it.
func (g *group) addLocal(pi *periodInfo, d int64) {
	g.umu.Lock()
	if g.period.Load() == pi {
		g.used.Add(d)
		g.pending.Add(d)
	}
	g.umu.Unlock()
}

// setUsed stores v, the count an operation started as number seq saw,
// unless the period rolled or an operation started later stored its own.
func (g *group) setUsed(pi *periodInfo, seq uint64, v int64) {
	g.umu.Lock()
	if g.period.Load() == pi && seq > g.usedSeq {
		g.usedSeq = seq
		g.used.Store(v)
	}
	g.umu.Unlock()
}

// maybeRefresh re-reads the shared counter in the background when the cached
// value is older than quotaRefresh, or than RefreshInterval while it is
// at the limit (this replica then makes no counter operation of its own,
// and other replicas giving units back, or renewing the count, free
// room), or when readSoon asked. It never blocks.
func (g *group) maybeRefresh(e *env, now time.Time, pi *periodInfo) {
	n := now.UnixNano()
	every := int64(quotaRefresh)
	if g.used.Load() >= g.quota.Limit {
		every = int64(RefreshInterval)
	}
	if last := g.lastSync.Load(); last != 0 && n >= last && n-last < every && g.stale.Load() == g.readStale.Load() {
		return
	}
	if !g.refreshing.CompareAndSwap(false, true) {
		return
	}
	g.lastSync.Store(n)
	go func() {
		defer g.refreshing.Store(false)
		if err := g.readCount(e, pi, now); err != nil {
			e.log.Debug("quota counter unavailable; using the cached count", "group", g.key, "err", err)
		}
	}()
}

// readSoon has the next Rank (or Refresh) re-read the shared counter in
// the background. After units were given back, or once the count reached
// the limit, the count this replica holds can be too high: it is the
// value of the operation started last, and concurrent reservations that
// were refused and given back after it (a burst over the limit) are
// still in it.
func (g *group) readSoon() {
	g.stale.Add(1)
}

// readCount reads the shared counter of pi into used. What was counted in
// process while the counter failed is sent first. A counter that is
// missing although this replica has counted in this period (memcached
// restarted, or evicted it) is re-created from this replica's count.
func (g *group) readCount(e *env, pi *periodInfo, now time.Time) error {
	mark := g.stale.Load()
	if g.pending.Load() != 0 {
		if _, err := g.apply(e, pi, 0, now, false); err != nil {
			return err
		}
	}
	seq := g.opSeq.Add(1)
	v, found, err := e.counter.Lookup(pi.key)
	if err != nil {
		return err
	}
	if g.period.Load() != pi {
		return nil
	}
	if !found && g.used.Load() > 0 {
		if _, err := g.apply(e, pi, 0, now, true); err != nil {
			return err
		}
		e.log.Info("quota counter was missing; re-created from this replica's count", "group", g.key,
			"used", g.used.Load(), "unit", g.quota.Unit)
	} else {
		g.setUsed(pi, seq, clampInt64(v)+g.pending.Load())
	}
	g.lastSync.Store(now.UnixNano())
	g.readStale.Store(mark)
	g.checkThresholds(e, pi, now)
	return nil
}

// checkThresholds logs the 80%, 90% and 100% marks once per period each
// (only the highest newly crossed one).
func (g *group) checkThresholds(e *env, pi *periodInfo, now time.Time) {
	lim := g.quota.Limit
	used := g.used.Load()
	if used >= lim {
		g.exhaustedSince.CompareAndSwap(0, now.UnixNano())
	} else {
		g.exhaustedSince.Store(0)
	}
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
		"unit", g.quota.Unit, "resets_at", time.Unix(0, g.resetsAt(pi, now.UnixNano())).UTC()}
	switch {
	case fresh&warnedExhausted != 0:
		e.log.Warn("upstream quota exhausted; skipping it until it resets", attrs...)
	case fresh&warned90 != 0:
		e.log.Warn("upstream quota at 90%", attrs...)
	default:
		e.log.Warn("upstream quota at 80%", attrs...)
	}
}

// noteStated records the reset the upstream states, in rl, for the
// allowance the group's quota counts (see statedWindow).
func (g *group) noteStated(now time.Time, rl *verdict.RateLimit) bool {
	if reset, ok := g.statedWindow(rl); ok {
		return storeMax(&g.statedReset, now.Add(reset).UnixNano()) < now.Add(reset).UnixNano()
	}
	return false
}

// statedWindow returns the reset the headers state for the very
// allowance the quota counts: the window of the quota's unit (requests,
// or tokens) whose stated limit equals the configured one. Groq's
// requests window is a rolling day (x-ratelimit-limit-requests is the
// RPD); a window of another size (OpenAI's requests per minute, Groq's
// tokens per minute against a daily tokens quota) says nothing of the
// configured allowance.
func (g *group) statedWindow(rl *verdict.RateLimit) (time.Duration, bool) {
	q := g.quota
	switch {
	case q.Limit <= 0:
	case q.Unit == config.UnitRequests && rl.LimitRequests == q.Limit && rl.ResetRequests > 0:
		return min(rl.ResetRequests, maxCooldown), true
	case q.Unit == config.UnitTokens && rl.LimitTokens == q.Limit && rl.ResetTokens > 0:
		return min(rl.ResetTokens, maxCooldown), true
	}
	return 0, false
}

// pendingReset returns the upstream-stated reset of the counted
// allowance that still applies to pi: inside the period and not yet
// used to start the count again; 0 when there is none.
func (g *group) pendingReset(pi *periodInfo) int64 {
	r := g.statedReset.Load()
	if r > pi.start && r < pi.end && r > g.renewed.Load() && r >= g.exhaustedSince.Load() {
		return r
	}
	return 0
}

// resetsAt is when the quota of period pi is next renewed, seen at n:
// for a used-up quota the upstream-stated reset when one applies and is
// still ahead, else the end of the period.
func (g *group) resetsAt(pi *periodInfo, n int64) int64 {
	if r := g.pendingReset(pi); r > n && g.used.Load() >= g.quota.Limit {
		return r
	}
	return pi.end
}

// exhaustedUntil is how long a used-up quota keeps the group out, seen at
// n: until the period ends, or until the upstream-stated reset when that
// comes first; 0 when that reset has passed (the next reservation starts
// the count again, see renew).
func (g *group) exhaustedUntil(pi *periodInfo, n int64) int64 {
	if r := g.pendingReset(pi); r != 0 {
		if r <= n {
			return 0
		}
		return r
	}
	return pi.end
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
	v.at = n
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

// IncrFrom implements Counter.
func (c *localCounter) IncrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error) {
	return c.update(key, func(v uint64) uint64 { return v + delta }, seed+delta, expireAt), nil
}

// DecrFrom implements Counter.
func (c *localCounter) DecrFrom(key string, delta, seed uint64, expireAt time.Time) (uint64, error) {
	floor := func(v uint64) uint64 { return v - min(v, delta) }
	return c.update(key, floor, floor(seed), expireAt), nil
}

// update sets key to next(value), or creates it as created.
func (c *localCounter) update(key string, next func(uint64) uint64, created uint64, expireAt time.Time) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if ok {
		e.v = next(e.v)
	} else {
		e = localEntry{v: created, expireAt: expireAt}
	}
	c.m[key] = e
	if len(c.m) > 64 { // prune keys of past periods
		now := c.now()
		for k, v := range c.m {
			if v.expireAt.Before(now) {
				delete(c.m, k)
			}
		}
	}
	return e.v
}

// Lookup implements Counter.
func (c *localCounter) Lookup(key string) (uint64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	return e.v, ok, nil
}

var _ Counter = (*localCounter)(nil)
