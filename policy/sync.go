package policy

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sync reads every quota group's shared counter and shared rate-limit
// view into this Policy, and waits for the reads up to timeout. Call it
// before serving (a replica that starts, or restarts after a crash,
// would otherwise rank from a count of 0 until its first background
// read): bound timeout by the store's own timeout so that a dead
// memcached delays the start by that much, not more. Reads still running
// at the timeout land in the background. It returns an error naming the
// groups whose counter it could not read; their counts start from what
// the next successful operation returns (reservations are exact either
// way).
func (p *Policy) Sync(timeout time.Duration) error {
	e := p.env
	now := e.now()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []error
	)
	for _, g := range p.groups {
		if g.quota.Limit > 0 {
			pi := g.current(e, now)
			wg.Go(func() {
				if err := g.readCount(e, pi, now); err != nil {
					mu.Lock()
					failed = append(failed, fmt.Errorf("quota group %s: %w", g.key, err))
					mu.Unlock()
				}
			})
		}
		if e.views != nil {
			g.viewRead.Store(now.UnixNano())
			wg.Go(func() { g.readView(e) })
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		return fmt.Errorf("quota sync: not done within %v", timeout)
	}
	if len(failed) > 0 {
		return fmt.Errorf("quota sync: %w", errors.Join(failed...))
	}
	return nil
}

// Refresh starts background reads of what other replicas changed: the
// shared rate-limit views of every quota group (at most once per
// RefreshInterval) and the quota counters whose cached value is older
// than 15s (a counter lost with memcached is re-created then, even
// without traffic). It does not block; call it every RefreshInterval.
func (p *Policy) Refresh() {
	e := p.env
	now := e.now()
	for _, g := range p.groups {
		if g.quota.Limit > 0 {
			g.maybeRefresh(e, now, g.current(e, now))
		}
		g.refreshView(e, now)
	}
}
