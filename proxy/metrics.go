package proxy

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// Route labels: a fixed set, never request data.
const (
	routeChat        = "chat_completions"
	routeCompletions = "completions"
	routeResponses   = "responses"
	// routeStoredResponses: operations on a stored response (stored.go).
	routeStoredResponses = "responses_stored"
	routeEmbeddings      = "embeddings"
	routeTranscriptions  = "audio_transcriptions"
	routeTranslations    = "audio_translations"
	routeModels          = "models"
	routeHealthz         = "healthz"
	routeMetrics         = "metrics"
	routeStatus          = "status"
	routeOther           = "other"
)

// Cache results, the values of switchyard_cache_requests_total{result}.
const (
	cacheHit       = "HIT"
	cacheMiss      = "MISS"
	cacheBypass    = "BYPASS"
	cacheCoalesced = "COALESCED"
)

// durationBuckets fit LLM latencies: sub-millisecond cache hits to
// multi-minute generations.
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320}

var (
	fallbacksTotal  = metrics.NewCounter(`switchyard_fallbacks_total`)
	coalescedTotal  = metrics.NewCounter(`switchyard_coalesced_requests_total`)
	invalidSSETotal = metrics.NewCounter(`switchyard_sse_invalid_events_total`)
	panicsTotal     = metrics.NewCounter(`switchyard_panics_total`)
	cacheStoreDrops = metrics.NewCounter(`switchyard_cache_store_dropped_total`)
	// secretEchoTotal counts 2xx answers (plain bodies, stream events)
	// in which a configured key was found and replaced with [redacted].
	secretEchoTotal = metrics.NewCounter(`switchyard_secret_echo_total`)
	inflight        = metrics.NewGauge(`switchyard_requests_in_flight`, nil)

	cacheResults = map[string]*metrics.Counter{
		cacheHit:       metrics.NewCounter(`switchyard_cache_requests_total{result="hit"}`),
		cacheMiss:      metrics.NewCounter(`switchyard_cache_requests_total{result="miss"}`),
		cacheBypass:    metrics.NewCounter(`switchyard_cache_requests_total{result="bypass"}`),
		cacheCoalesced: metrics.NewCounter(`switchyard_cache_requests_total{result="coalesced"}`),
		"error":        metrics.NewCounter(`switchyard_cache_requests_total{result="error"}`),
	}

	routeDurations = map[string]*metrics.PrometheusHistogram{}
)

func init() {
	for _, r := range []string{routeChat, routeCompletions, routeResponses, routeStoredResponses, routeEmbeddings, routeTranscriptions, routeTranslations,
		routeModels, routeHealthz, routeMetrics, routeStatus, routeOther} {
		routeDurations[r] = metrics.NewPrometheusHistogramExt(fmt.Sprintf(`switchyard_request_duration_seconds{route=%q}`, r), durationBuckets)
	}
}

// requestCounters caches switchyard_requests_total{route,status} per route
// and status code, so the hot path neither builds a name nor takes the
// metrics set's lock.
var requestCounters sync.Map // requestKey -> *metrics.Counter

type requestKey struct {
	route  string
	status int
}

// requestsCounter returns switchyard_requests_total{route,status}. status is
// an HTTP status code Switchyard answered with: a small, bounded set.
func requestsCounter(route string, status int) *metrics.Counter {
	k := requestKey{route, status}
	if c, ok := requestCounters.Load(k); ok {
		return c.(*metrics.Counter)
	}
	c := metrics.GetOrCreateCounter(`switchyard_requests_total{route="` + route + `",status="` + strconv.Itoa(status) + `"}`)
	requestCounters.Store(k, c)
	return c
}

// upstreamMetrics are one upstream's series; label values come from config.
type upstreamMetrics struct {
	outcomes         map[string]*metrics.Counter
	duration         *metrics.PrometheusHistogram
	ttfb             *metrics.PrometheusHistogram
	promptTokens     *metrics.Counter
	completionTokens *metrics.Counter
}

var (
	upstreamMetricsMu sync.Mutex
	upstreamMetricsBy = map[string]*upstreamMetrics{}
)

// outcome labels of switchyard_upstream_requests_total.
var outcomeLabels = []string{"ok", "error", "timeout", "rate_limited", "client_error"}

// metricsFor returns (creating once) the series of the named upstream.
func metricsFor(name string) *upstreamMetrics {
	upstreamMetricsMu.Lock()
	defer upstreamMetricsMu.Unlock()
	if m, ok := upstreamMetricsBy[name]; ok {
		return m
	}
	m := &upstreamMetrics{outcomes: map[string]*metrics.Counter{}}
	for _, o := range outcomeLabels {
		m.outcomes[o] = metrics.GetOrCreateCounter(fmt.Sprintf(`switchyard_upstream_requests_total{upstream=%q,outcome=%q}`, name, o))
	}
	m.duration = metrics.GetOrCreatePrometheusHistogramExt(fmt.Sprintf(`switchyard_upstream_duration_seconds{upstream=%q}`, name), durationBuckets)
	m.ttfb = metrics.GetOrCreatePrometheusHistogramExt(fmt.Sprintf(`switchyard_upstream_time_to_first_byte_seconds{upstream=%q}`, name), durationBuckets)
	m.promptTokens = metrics.GetOrCreateCounter(fmt.Sprintf(`switchyard_tokens_total{upstream=%q,kind="prompt"}`, name))
	m.completionTokens = metrics.GetOrCreateCounter(fmt.Sprintf(`switchyard_tokens_total{upstream=%q,kind="completion"}`, name))
	upstreamMetricsBy[name] = m
	return m
}
