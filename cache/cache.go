// Package cache stores complete chat-completion answers so that a repeated
// request is answered without calling an upstream.
//
// Three stores are provided:
//
//   - [Embedded], an in-process LRU bounded by bytes (the default). Each
//     sidecar replica has its own.
//   - [Memcached], one or more memcached servers shared by every sidecar
//     replica. Every operation goes through the circuit breaker of the
//     server that holds its key, so a dead server costs one short timeout
//     per operation on its keys until its breaker opens, and then nothing
//     until it is back; keys on the other servers are unaffected.
//   - [Tiered], a small Embedded (the near cache) in front of Memcached, so
//     that repeated hits skip the network round trip. An answer may be
//     served from the near cache for up to its near TTL after memcached
//     dropped or replaced it.
//
// Both stores hold opaque byte values. The proxy stores one [Entry] per
// cache key, encoded with [EncodeEntry]. The proxy converts between the
// streaming (SSE of chat.completion.chunk objects) and plain
// (chat.completion JSON) forms with openai.StreamToCompletion and
// openai.CompletionToStream, so one entry answers both kinds of request.
//
// Embedded and Memcached also implement a shared counter (Incr and Value)
// used for quota accounting. Counters in [Embedded] live apart from the LRU
// and are never evicted. Tiered has no counters: quotas stay on memcached,
// shared by every replica.
//
// Metrics (all package-level, summed over instances):
//
//	switchyard_cache_bytes                  bytes held by Embedded LRUs (keys, values, overhead);
//	                                        not the near caches of Tiered, which report below
//	switchyard_cache_items                  entries held by Embedded LRUs, likewise
//	switchyard_cache_evictions_total        Embedded entries evicted to make room, likewise
//	switchyard_cache_oversize_total         values refused as too large by Embedded or
//	                                        Memcached (for Tiered: by memcached)
//	switchyard_cache_near_hits_total        Tiered lookups answered by the near cache
//	switchyard_cache_near_misses_total      Tiered lookups passed on to memcached
//	switchyard_cache_near_bytes             bytes held by Tiered near caches
//	switchyard_cache_near_items             entries held by Tiered near caches
//	switchyard_cache_near_evictions_total   near-cache entries evicted to make room
//	switchyard_cache_near_oversize_total    values too large for the near cache (its
//	                                        near_max_bytes/16 shard share): kept in memcached only
//	switchyard_cache_errors_total{backend="memcached",op="get|set|incr"}
//	                                        failed memcached operations, including those
//	                                        refused by the open breaker; misses are not errors
//	switchyard_cache_breaker_state          the worst breaker over the servers of the latest
//	                                        Memcached: 0 all closed, 1 one half-open (none open),
//	                                        2 at least one open; a breaker turns half-open lazily,
//	                                        on the first operation on its keys after the delay,
//	                                        so 2 can outlast the delay
//	switchyard_cache_server_breaker_state{server="host:port"}
//	                                        the same, per server as configured
//	switchyard_cache_memcached_ops_total{op="get|set|add|delete|incr|decr|other"}
//	                                        requests sent to memcached servers, by command, as
//	                                        written on the wire: an Incr that creates its counter
//	                                        is an incr, an add and (if another client won the
//	                                        race) another incr; a retry on a stale connection is
//	                                        a second request
//	switchyard_cache_memcached_stale_retries_total
//	                                        operations sent again on a new connection after a
//	                                        pooled one turned out closed by the server
package cache

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

var (
	// ErrMiss is returned by Get when the key is absent or expired.
	ErrMiss = errors.New("cache: miss")
	// ErrTooLarge is returned by Set when the value cannot be stored
	// because of its size. Nothing is stored (an older value under the same
	// key may be dropped).
	ErrTooLarge = errors.New("cache: value too large")
	// ErrNotStored is returned by Add when the key is already present.
	ErrNotStored = errors.New("cache: not stored")
)

// Package-level metrics. metrics.NewX panics on duplicate registration, so
// they are created exactly once here and never per instance.
var (
	embeddedBytes atomic.Int64
	embeddedItems atomic.Int64

	_ = metrics.NewGauge(`switchyard_cache_bytes`, func() float64 { return float64(embeddedBytes.Load()) })
	_ = metrics.NewGauge(`switchyard_cache_items`, func() float64 { return float64(embeddedItems.Load()) })

	evictionsTotal = metrics.NewCounter(`switchyard_cache_evictions_total`)
	oversizeTotal  = metrics.NewCounter(`switchyard_cache_oversize_total`)

	nearBytes atomic.Int64
	nearItems atomic.Int64

	_ = metrics.NewGauge(`switchyard_cache_near_bytes`, func() float64 { return float64(nearBytes.Load()) })
	_ = metrics.NewGauge(`switchyard_cache_near_items`, func() float64 { return float64(nearItems.Load()) })

	nearHitsTotal      = metrics.NewCounter(`switchyard_cache_near_hits_total`)
	nearMissesTotal    = metrics.NewCounter(`switchyard_cache_near_misses_total`)
	nearEvictionsTotal = metrics.NewCounter(`switchyard_cache_near_evictions_total`)
	nearOversizeTotal  = metrics.NewCounter(`switchyard_cache_near_oversize_total`)

	// embeddedSeries is where an Embedded made by NewEmbedded reports;
	// nearSeries, where the near cache of a Tiered does.
	embeddedSeries = lruSeries{bytes: &embeddedBytes, items: &embeddedItems, evictions: evictionsTotal, oversize: oversizeTotal}
	nearSeries     = lruSeries{bytes: &nearBytes, items: &nearItems, evictions: nearEvictionsTotal, oversize: nearOversizeTotal}

	memcachedGetErrors  = metrics.NewCounter(`switchyard_cache_errors_total{backend="memcached",op="get"}`)
	memcachedSetErrors  = metrics.NewCounter(`switchyard_cache_errors_total{backend="memcached",op="set"}`)
	memcachedIncrErrors = metrics.NewCounter(`switchyard_cache_errors_total{backend="memcached",op="incr"}`)

	memcachedStaleRetries = metrics.NewCounter(`switchyard_cache_memcached_stale_retries_total`)

	// currentMemcached is the instance whose breakers the state gauges
	// report: the most recently created one that has not been closed. Its
	// per-server gauges are in its own metrics.Set, registered while it is
	// current; reportMu serializes the swaps.
	currentMemcached atomic.Pointer[Memcached]
	reportMu         sync.Mutex

	_ = metrics.NewGauge(`switchyard_cache_breaker_state`, func() float64 {
		m := currentMemcached.Load()
		if m == nil {
			return 0
		}
		return m.worstState()
	})
)

// lruSeries are the metrics one kind of Embedded reports to: the size
// gauges' sums and the eviction and oversize counters.
type lruSeries struct {
	bytes, items        *atomic.Int64
	evictions, oversize *metrics.Counter
}

// breakerStateValue maps failsafe-go's states (closed, open, half-open =
// 0, 1, 2) onto the exported gauge's scale, ordered by severity:
// 0 closed, 1 half-open, 2 open.
func breakerStateValue(s circuitbreaker.State) float64 {
	switch s {
	case circuitbreaker.HalfOpenState:
		return 1
	case circuitbreaker.OpenState:
		return 2
	default:
		return 0
	}
}
