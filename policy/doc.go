// Package policy decides which upstream serves a request.
//
// The proxy asks [Policy.Rank] for an ordered list of candidates, runs one
// attempt per candidate through [Policy.Do] (circuit breakers and the
// optional same-upstream retry), classifies the answer into an [Outcome] and
// reports it with [Policy.Observe]. Policy keeps, per upstream, the state
// those decisions need: circuit breakers, a health window, latency averages,
// quota counters, rate-limit views and cooldowns. It does no I/O of its own
// except through the [Counter] it is given.
//
// # Breakers
//
// Every (upstream, model) pair — a deployment — has its own failsafe-go
// count-based circuit breaker, created on first use from
// [Options.Breaker]: it opens after FailureThreshold consecutive breaker
// failures ([Failure] and [KeyRejected]), stays open for Delay, then lets
// SuccessThreshold trial calls through (half-open); that many successes close
// it, a failure reopens it. Every upstream also has one "key" breaker that
// counts only [KeyRejected], so a rejected API key blocks all models of that
// upstream. A model beyond the first 256 seen on one upstream shares the
// deployment "(other)" so client input cannot grow state without bound.
// Breakers run on real time (failsafe-go has no injectable clock); everything
// else uses [Options.Now]. failsafe-go moves an open breaker to half-open
// only when a call asks it for a permit after the delay; [Policy.Snapshot]
// and the switchyard_upstream_breaker_state gauge report a breaker as that
// call would find it, so an open breaker whose delay has passed reads
// half-open even while no traffic comes.
//
// # Score
//
// Each candidate gets three sub-scores in [0,1]:
//
//	health  = 1 − Σ w(age of f) / n
//	          over the failed attempts f among the upstream's last n ≤ 100
//	          attempts (all models; only OK counts as ok, only Failure and
//	          KeyRejected as failed, other outcomes are ignored); 1 with no
//	          history; capped at 0.5 while any breaker of the upstream is
//	          half-open.
//	w(age)  = 1                                  while age ≤ Breaker.Delay,
//	          2^(−(age − Breaker.Delay) / HalfLife)  after that
//	          where HalfLife = Options.HealthHalfLife (default Breaker.Delay/2,
//	          30s at the default delay) and age is measured on Options.Now.
//
//	quota   = min( (limit − used) / limit              local/shared counter, current UTC period,
//	               remainingRequests / limitRequests  last rate-limit headers, until their reset,
//	               remainingTokens / limitTokens      last rate-limit headers, until their reset )
//	          clamped to [0,1]; a term that is not known is left out; 1 when
//	          nothing is known. Headers without a reset time are trusted for
//	          one minute.
//
//	latency = (minEWMA + pad) / (EWMA + pad)
//	          where EWMA is this deployment's latency average, minEWMA the
//	          smallest EWMA among the candidates of this Rank call that have
//	          samples, pad = Options.LatencyPad (default 50ms); 1 for a
//	          deployment without samples (so a new upstream gets tried).
//	          EWMA ← 0.3·sample + 0.7·EWMA (the first sample is taken as is);
//	          samples are Observation.Latency of OK attempts.
//
//	score   = wH·health + wQ·quota + wL·latency
//
// The weights are normalised to sum to 1 (default 0.4, 0.3, 0.3), so a score
// is in [0,1] and TieBand is a fraction of the best possible score.
//
// Health recovers with time alone: an upstream ranked below a healthy peer
// gets no attempts, so a health that changed only on attempts would never
// rise again. A failure counts in full for as long as the breaker would
// keep a failing deployment out (Breaker.Delay); after that the part of it
// that has faded counts as the "no history" value 1, so once all failures
// are past the delay the failed share of the window halves every
// half-life. An upstream with 2 failures among 100 attempts stays within
// the default tie band of a healthy peer throughout; one whose window
// holds only failures is back within it (health ≥ 0.875, since
// 0.4 × 0.125 = 0.05) the delay plus three half-lives after its last
// failure: 150s at the defaults, 2.5s with a 1s delay. From then on it
// takes its turns again; if it still fails, that request fails over at
// the cost of one attempt and its health drops again. The half-open cap
// applies to breakers a call has moved to half-open, not to open breakers
// that Snapshot reads as half-open (see Breakers).
//
// # Ranking
//
// Rank drops targets whose deployment or key breaker is open (an open breaker
// whose delay has passed counts as admissible, since failsafe-go half-opens
// lazily), that are cooling down after a rate limit, or whose quota is
// exhausted; those are returned as [Skipped] with the time they come back.
// The rest are ordered by priority (ascending), then score (descending).
// Within one priority, every candidate whose score is within TieBand (default
// 0.05) of the best one is a tie; ties are ordered least recently picked
// first, per deployment (the first candidate of every Rank and every
// deployment that Do runs count as picked). For a stable set of equal
// upstreams, such as several keys of one provider, that is a round robin
// per model; unlike one shared counter it cannot be phase-locked by
// interleaved requests for different models.
//
// # Quota
//
// An upstream with Quota.Limit > 0 is charged when the upstream answered:
// HTTP status 2xx, or 4xx other than 429 (5xx, 429 and connection failures
// are free). Unit "requests" counts 1, "tokens" the prompt and completion
// tokens of the usage, "chars" Observation.Chars. Upstreams with the same
// QuotaGroup share one counter and one rate-limit view. The counter key is
//
//	<prefix>:<group or name>:<unit>:<YYYYMMDD | YYYYMM>
//
// for the UTC day or calendar month that is being counted; it expires one
// hour after the period ends.
//
// The charge is reserved before the call: [Policy.Do] adds the attempt's
// units to the counter with one atomic increment ([Counter.IncrFrom]) and
// passes the [Reservation] to the call; if the new value is over the
// limit it subtracts them again and returns a [QuotaError] without
// calling. Requests reserve 1; tokens reserve the prompt's characters / 4
// plus the request's max tokens ([Estimate], else
// Quota.DefaultMaxTokens, else [DefaultMaxTokens]); chars reserve the
// prompt's characters plus 4 per completion token. [Policy.Observe]
// settles the reservation: a charged attempt is reconciled to its real
// cost (one more increment or decrement when it differs; a 2xx that
// reports no cost keeps the estimate), any other attempt gives it all
// back, as does a breaker that refuses the call after the reservation.
// Concurrent attempts on any number of replicas sharing the counter thus
// never pass a request limit; a token limit only by what answers in
// flight exceed their estimates.
//
// The last value read from or returned by the counter, plus what was
// counted in process, is cached; Rank skips a group whose cached count is
// at its limit and re-reads the counter in the background every 15s
// (every second while the count is at the limit, and soon after units
// were given back, since the cached value may still hold refused
// reservations), so Rank never waits for the network. A counter found missing
// although this replica has counted in the period (memcached restarted)
// is re-created from this replica's count, by the next increment,
// decrement or read (IncrFrom and DecrFrom take that seed). If the
// counter fails, the error is logged at debug level and counting continues
// in process; what was counted so is sent with the next operation that
// succeeds. [Policy.Sync] reads every counter and shared view, bounded,
// for a replica that starts. At 80% and 90% of the limit a warning is
// logged once per period; at 100% the group is skipped ("quota
// exhausted") until the period ends, or until the reset the upstream's
// headers state for the very allowance counted (same unit, stated limit
// equal to Quota.Limit: Groq's requests per day) when that comes first.
// After that reset the next reservation starts the count again from 0.
//
// With a [ViewStore] the rate-limit views, cooldowns, 402 disablements
// and stated resets of each quota group are shared with other replicas:
// written in the background when this replica learns something new,
// read in the background by [Policy.Refresh].
//
// # Cooldowns
//
// [RateLimited] puts the (group, model) into cooldown until
// now + max(RetryAfter, requests reset if no requests remain, tokens reset if
// no tokens remain), 10s when none is known. Rate-limit headers of any
// answer that report zero remaining requests or tokens start the same
// cooldown ahead of the 429. [QuotaExhausted] (HF 402) disables the whole
// group until RetryAfter or the requests reset if given, else until the end
// of its quota period if one is configured, else for one hour. Cooldowns are
// capped at 24h.
//
// # Retry
//
// An upstream with Retry.Attempts > 0 retries [Failure] outcomes on the same
// upstream up to that many extra times, waiting Retry.Backoff·2^(n−1)
// (at most 2s, ±25% jitter) before retry n, or Attempt.RetryAfter plus up to
// 25% when the upstream sent one of at most 2s; a longer RetryAfter ends the
// retries so the caller fails over instead. Retries stop as soon as a
// breaker opens.
// All upstreams share one failsafe-go budget (default: retries may be at most
// 20% of executions in flight, and at least 3), so retries cannot multiply
// load during an incident.
package policy
