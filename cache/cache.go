// Package cache stores complete chat-completion answers so that a repeated
// request is answered without calling an upstream.
//
// Two stores are provided:
//
//   - [Embedded], an in-process LRU bounded by bytes (the default). Each
//     sidecar replica has its own.
//   - [Memcached], one or more memcached servers shared by every sidecar
//     replica. Every operation goes through a circuit breaker, so a dead
//     memcached costs one short timeout per operation until the breaker
//     opens, and then nothing until memcached is back.
//
// Both stores hold opaque byte values. The proxy stores one [Entry] per
// cache key, encoded with [EncodeEntry]. [StreamToCompletion] and
// [CompletionToStream] convert between the streaming (SSE of
// chat.completion.chunk objects) and plain (chat.completion JSON) forms, so
// one entry answers both kinds of request.
//
// Both stores also implement a shared counter (Incr and Value) used for
// quota accounting. Counters in [Embedded] live apart from the LRU and are
// never evicted.
//
// Metrics (all package-level, summed over instances):
//
//	switchyard_cache_bytes                  bytes held by Embedded LRUs (keys, values, overhead)
//	switchyard_cache_items                  entries held by Embedded LRUs
//	switchyard_cache_evictions_total        Embedded entries evicted to make room
//	switchyard_cache_oversize_total         values refused as too large, any backend
//	switchyard_cache_errors_total{backend="memcached",op="get|set|incr"}
//	                                        failed memcached operations, including those
//	                                        refused by the open breaker; misses are not errors
//	switchyard_cache_breaker_state          0 closed, 1 half-open, 2 open (latest Memcached);
//	                                        the breaker turns half-open lazily, on the first
//	                                        operation after the delay, so 2 can outlast the delay
package cache

import (
	"errors"
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

	memcachedGetErrors  = metrics.NewCounter(`switchyard_cache_errors_total{backend="memcached",op="get"}`)
	memcachedSetErrors  = metrics.NewCounter(`switchyard_cache_errors_total{backend="memcached",op="set"}`)
	memcachedIncrErrors = metrics.NewCounter(`switchyard_cache_errors_total{backend="memcached",op="incr"}`)

	// currentMemcached is the instance whose breaker the state gauge reports:
	// the most recently created one that has not been closed.
	currentMemcached atomic.Pointer[Memcached]

	_ = metrics.NewGauge(`switchyard_cache_breaker_state`, func() float64 {
		m := currentMemcached.Load()
		if m == nil {
			return 0
		}
		return breakerStateValue(m.breaker.State())
	})
)

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
