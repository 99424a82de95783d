package policy

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"
)

// Shared rate-limit views. What one replica learns of an upstream's limits
// — the remaining counts and resets of its rate-limit headers, a 429's
// cooldown, a 402's disablement, the reset of the counted allowance — is
// kept per quota group in one small JSON item of the ViewStore under
// "<prefix>:<group>:rl", so that the other replicas skip that upstream
// too instead of each paying its own 429. Requests never wait for it:
// Observe writes in the background when something new is learned, and
// Refresh (every RefreshInterval, from the caller) reads in the
// background. Without a ViewStore all of it stays in process.

const (
	// viewPublishEvery: headers that only update remaining counts are
	// written at most this often per group and replica; a cooldown, a
	// disablement or a window reported used up are written at once.
	viewPublishEvery = 10 * time.Second
	// maxViewTTL caps how long a shared view lives in the store.
	maxViewTTL = maxCooldown
)

// sharing is a group's bookkeeping for its shared view.
type sharing struct {
	viewRead   atomic.Int64 // unix ns (Options.Now) of the last read begun
	reading    atomic.Bool
	published  atomic.Int64 // unix ns of the last write begun
	publishing atomic.Bool
	dirty      atomic.Bool // something new to write
	mergeMu    sync.Mutex  // one merge at a time: logs say once that a shared cooldown began
}

// sharedView is the stored form of a group's view. Times are unix ns.
type sharedView struct {
	Disabled int64                  `json:"d,omitempty"`
	Stated   int64                  `json:"w,omitempty"`
	Models   map[string]sharedModel `json:"m,omitempty"`
}

// sharedModel is one model's rate-limit view and cooldown.
type sharedModel struct {
	At           int64 `json:"at,omitempty"`
	ReqLimit     int64 `json:"rl,omitempty"`
	ReqRemaining int64 `json:"rr,omitempty"`
	ReqUntil     int64 `json:"ru,omitempty"`
	TokLimit     int64 `json:"tl,omitempty"`
	TokRemaining int64 `json:"tr,omitempty"`
	TokUntil     int64 `json:"tu,omitempty"`
	Cooldown     int64 `json:"cd,omitempty"`
}

// publish writes the group's view to the store in the background: at
// once when urgent, else when the last write is viewPublishEvery old.
// Writes of one group never overlap; news that arrives during one is
// written by a further round.
func (g *group) publish(e *env, now time.Time, urgent bool) {
	if e.views == nil {
		return
	}
	if !urgent && now.UnixNano()-g.published.Load() < int64(viewPublishEvery) {
		return
	}
	g.dirty.Store(true)
	if !g.publishing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		for {
			for g.dirty.Swap(false) {
				g.writeView(e)
			}
			g.publishing.Store(false)
			// News that came after the last Swap but before the Store
			// found publishing set and left: take it, unless another
			// publish already did.
			if !g.dirty.Load() || !g.publishing.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

// writeView merges the stored view into ours (so that what other replicas
// wrote is not lost), then stores ours. Two replicas writing at the same
// moment can still lose one's news; the loser's next news writes it again.
func (g *group) writeView(e *env) {
	now := e.now()
	g.published.Store(now.UnixNano())
	if b, err := e.views.Fetch(g.viewKey); err == nil {
		g.mergeView(e, b, now)
	}
	b, ttl := g.encodeView(now.UnixNano())
	if b == nil {
		return
	}
	if err := e.views.Put(g.viewKey, b, ttl); err != nil {
		e.log.Debug("shared rate-limit view not written", "group", g.key, "err", err)
	}
}

// refreshView reads the stored view into ours in the background, at most
// once per RefreshInterval.
func (g *group) refreshView(e *env, now time.Time) {
	n := now.UnixNano()
	if e.views == nil || n-g.viewRead.Load() < int64(RefreshInterval)*9/10 || !g.reading.CompareAndSwap(false, true) {
		return
	}
	g.viewRead.Store(n)
	go func() {
		defer g.reading.Store(false)
		g.readView(e)
	}()
}

// readView reads the stored view into ours. An absent view, or a store
// that fails, teaches nothing.
func (g *group) readView(e *env) {
	if b, err := e.views.Fetch(g.viewKey); err == nil {
		g.mergeView(e, b, e.now())
	}
}

// encodeView returns the group's view as stored, without what has
// expired, and how long it stays useful; nil when nothing in it is.
func (g *group) encodeView(n int64) ([]byte, time.Duration) {
	var sv sharedView
	last := int64(0)
	keep := func(t int64) bool {
		if t > n {
			last = max(last, t)
			return true
		}
		return false
	}
	if d := g.disabledUntil.Load(); keep(d) {
		sv.Disabled = d
	}
	if w := g.statedReset.Load(); keep(w) {
		sv.Stated = w
	}
	for model, r := range *g.rl.Load() {
		var sm sharedModel
		if cd := r.cooldown.Load(); keep(cd) {
			sm.Cooldown = cd
		}
		if v := r.view.Load(); v != nil {
			if keep(v.reqUntil) {
				sm.ReqLimit, sm.ReqRemaining, sm.ReqUntil = v.reqLimit, v.reqRemaining, v.reqUntil
			}
			if keep(v.tokUntil) {
				sm.TokLimit, sm.TokRemaining, sm.TokUntil = v.tokLimit, v.tokRemaining, v.tokUntil
			}
			if sm.ReqUntil != 0 || sm.TokUntil != 0 {
				sm.At = v.at
			}
		}
		if sm != (sharedModel{}) {
			if sv.Models == nil {
				sv.Models = map[string]sharedModel{}
			}
			sv.Models[model] = sm
		}
	}
	if last == 0 {
		return nil, 0
	}
	b, err := json.Marshal(&sv)
	if err != nil {
		return nil, 0 // cannot happen: plain integers and strings
	}
	ttl := min(time.Duration(last-n)+time.Second, maxViewTTL)
	return b, ttl
}

// mergeView takes from a stored view what is newer than ours: the later
// cooldowns, disablement and stated reset, and per model the most
// recently seen headers. An unreadable item is ignored.
func (g *group) mergeView(e *env, b []byte, now time.Time) {
	var sv sharedView
	if json.Unmarshal(b, &sv) != nil {
		return
	}
	n := now.UnixNano()
	g.mergeMu.Lock()
	defer g.mergeMu.Unlock()
	if sv.Disabled > n && storeMax(&g.disabledUntil, sv.Disabled) <= n {
		e.log.Warn("upstream quota exhausted (402 seen by another replica); disabled", "group", g.key,
			"upstreams", g.members, "until", time.Unix(0, sv.Disabled).UTC())
	}
	if sv.Stated > n {
		storeMax(&g.statedReset, sv.Stated)
	}
	for model, sm := range sv.Models {
		if sm.Cooldown <= n && sm.ReqUntil <= n && sm.TokUntil <= n {
			continue
		}
		r := g.rlGet(model)
		if sm.Cooldown > n && r.startCooldown(now, time.Unix(0, sm.Cooldown)) {
			e.log.Info("upstream cooling down", "group", g.key, "model", model,
				"reason", "another replica was rate limited", "until", time.Unix(0, sm.Cooldown).UTC(),
				"wait", time.Duration(sm.Cooldown-n))
		}
		if sm.ReqUntil <= n && sm.TokUntil <= n {
			continue
		}
		v := &rlView{at: sm.At}
		if sm.ReqUntil > n {
			v.reqLimit, v.reqRemaining, v.reqUntil = sm.ReqLimit, sm.ReqRemaining, sm.ReqUntil
		}
		if sm.TokUntil > n {
			v.tokLimit, v.tokRemaining, v.tokUntil = sm.TokLimit, sm.TokRemaining, sm.TokUntil
		}
		for {
			old := r.view.Load()
			if old != nil && old.at >= v.at {
				break
			}
			if r.view.CompareAndSwap(old, v) {
				break
			}
		}
	}
}
