package proxy

import (
	"bytes"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/cache"
	"switchyard/cachekey"
	"switchyard/openai"
	"switchyard/sse"
)

// coalesceWait bounds how long a request waits for an identical one in
// flight before going upstream itself.
const coalesceWait = 120 * time.Second

// cacheControl is what the handler reads of a request's Cache-Control.
type cacheControl struct {
	noCache      bool // skip the lookup, store the fresh answer
	noStore      bool // neither read nor write
	maxAge       time.Duration
	hasMaxAge    bool // max-age=N: entries older than N are misses; N is the TTL
	onlyIfCached bool // answer from the cache or 504, never upstream
}

func parseCacheControl(h []byte) cacheControl {
	var cc cacheControl
	for len(h) > 0 {
		var part []byte
		if i := bytes.IndexByte(h, ','); i >= 0 {
			part, h = h[:i], h[i+1:]
		} else {
			part, h = h, nil
		}
		name, val, _ := bytes.Cut(bytes.TrimSpace(part), []byte("="))
		switch {
		case bytes.EqualFold(name, []byte("no-cache")):
			cc.noCache = true
		case bytes.EqualFold(name, []byte("no-store")):
			cc.noStore = true
		case bytes.EqualFold(name, []byte("only-if-cached")):
			cc.onlyIfCached = true
		case bytes.EqualFold(name, []byte("max-age")):
			if n, err := strconv.ParseInt(string(bytes.Trim(val, `"`)), 10, 64); err == nil && n >= 0 && n < 1<<31 {
				cc.maxAge, cc.hasMaxAge = time.Duration(n)*time.Second, true
			}
		}
	}
	return cc
}

// freshness returns the TTL an answer is stored with and the age past which
// a cached entry is a miss (0: no limit): cache.ttl, or the client's
// max-age when it asks for less. The operator's TTL caps every client's
// request, on the way in and on the way out, so neither a large max-age
// nor an entry stored before a reload shortened cache.ttl outlives it.
// A ttl of 0 stores nothing.
func freshness(cc cacheControl, ttl time.Duration) (storeTTL, maxAge time.Duration) {
	storeTTL, maxAge = ttl, ttl
	if cc.hasMaxAge && cc.maxAge < ttl {
		storeTTL, maxAge = cc.maxAge, cc.maxAge
	}
	return storeTTL, maxAge
}

// scopedKey puts a client's scope (the id of its inbound key, see keyID)
// into a cache key made with namespace ns, after the namespace:
// "<ns>:<scope>:v1:<hash>". Coalescing follows, since flights are keyed
// by the cache key. An empty scope (no auth.keys) or key returns key as it
// is. The scope is hex, so a scoped key never equals an unscoped one, nor
// a quota counter ("<ns>:v1:quota:…").
func scopedKey(key, ns, scope string) string {
	if scope == "" || len(key) <= len(ns) || key[:len(ns)] != ns {
		return key
	}
	return ns + ":" + scope + key[len(ns):]
}

// taggedKey puts an endpoint's tag into a cache key made with namespace
// ns, after the namespace: "<ns>:<tag>:v1:<hash>", so the same body sent
// to two endpoints (an embeddings and a responses request can be the same
// JSON) never shares an entry. An empty tag (chat) returns key as it is.
// A tag is a word, never hex nor "v1", so a tagged key never equals a
// scoped one (see scopedKey) nor a quota counter.
func taggedKey(key, ns, tag string) string {
	if tag == "" || len(key) <= len(ns) || key[:len(ns)] != ns {
		return key
	}
	return ns + ":" + tag + key[len(ns):]
}

// serveFromCache derives the request's cache key and answers from the cache
// or from an identical request in flight. It returns false when the request
// must go upstream; c.key is then set when the answer is to be stored, and
// c.flight when this request leads a coalesced miss.
func (s *Server) serveFromCache(ctx *fasthttp.RequestCtx, c *call) bool {
	if s.cache == nil || !c.route.cache || (c.req.Endpoint == openai.Responses && !c.req.Stateless()) {
		s.countCache(c, cacheBypass)
		return false
	}
	cc := parseCacheControl(ctx.Request.Header.Peek("Cache-Control"))
	if cc.noStore {
		s.countCache(c, cacheBypass)
		return false
	}
	ns := c.st.cfg.Cache.Namespace
	if custom := ctx.Request.Header.Peek("X-Cache-Key"); len(custom) > 0 {
		// A name is the client's own, even when bodies are shared: another
		// client must not read or overwrite it.
		c.key = scopedKey(taggedKey(cachekey.FromText(ns, string(custom)), ns, c.route.keyTag), ns, c.scope)
	} else {
		key, err := s.keys.Derive(ns, c.body)
		if err != nil { // encoding/json accepted what the canonicalizer refuses: duplicate keys, invalid UTF-8, lone surrogates, depth
			s.countCache(c, cacheBypass)
			return false
		}
		key = taggedKey(key, ns, c.route.keyTag)
		if !c.st.cfg.Cache.SharedAcrossKeys {
			key = scopedKey(key, ns, c.scope)
		}
		c.key = key
	}
	c.ttl, c.maxAge = freshness(cc, c.st.cfg.Cache.TTL)
	if cc.noCache || (cc.hasMaxAge && cc.maxAge == 0) {
		s.countCache(c, cacheBypass)
		return false
	}
	if raw, err := s.cache.Get(c.key); err == nil {
		if s.serveEntry(ctx, c, raw, cacheHit) {
			return true
		}
	} else if !s.isMiss(err) {
		cacheResults["error"].Inc()
	}
	if cc.onlyIfCached {
		s.countCache(c, cacheMiss)
		writeError(ctx, fasthttp.StatusGatewayTimeout, "no cached answer for this request (Cache-Control: only-if-cached)", typeInvalidRequest, "", codeCacheMiss)
		return true
	}
	f, leader := s.flights.join(c.key, s.leases != nil)
	if leader {
		c.flight = f
		if s.leases != nil && c.ttl > 0 && s.awaitLease(ctx, c, f) {
			return true // another replica's answer
		}
		s.countCache(c, cacheMiss)
		return false
	}
	if s.follow(ctx, c, f) {
		return true
	}
	s.countCache(c, cacheMiss)
	return false
}

// follow waits for the identical request leading flight f, and answers
// with its result: its entry, or for a stream request (first_event
// commit) its stream as it goes (see liveStream). false: the leader got
// no answer to share (or took longer than coalesceWait), and the request
// goes upstream itself.
func (s *Server) follow(ctx *fasthttp.RequestCtx, c *call, f *flight) bool {
	var live <-chan struct{}
	if c.req.Stream && !c.complete {
		live = s.flights.liveChan(f)
	}
	t := time.NewTimer(coalesceWait)
	defer t.Stop()
	calling := f.calling // nil without leases: never ready
	for {
		select {
		case <-calling:
			// The leader waited on another replica's lease, and now calls
			// the upstream itself: wait for that call as long again.
			calling = nil
			t.Reset(coalesceWait)
		case <-f.done:
			if f.entry != nil && s.serveEntry(ctx, c, f.entry, cacheCoalesced) {
				coalescedTotal.Inc()
				return true
			}
			return false
		case <-live:
			if s.followLive(ctx, c, f.share) {
				return true
			}
			live = nil // not from its start (past the log's bound, or failed): wait for the flight's end
		case <-t.C:
			return false
		}
	}
}

func (s *Server) countCache(c *call, result string) {
	c.xcache = result
	cacheResults[result].Inc()
	switch result {
	case cacheHit, cacheCoalesced:
		s.hits.Add(1)
	case cacheMiss:
		s.misses.Add(1)
	}
}

// serveEntry answers from an encoded cache entry, converting between a
// stored stream and a plain answer as the request needs. It returns false
// (a miss) for an entry it cannot use: corrupt, or older than max-age.
func (s *Server) serveEntry(ctx *fasthttp.RequestCtx, c *call, raw []byte, result string) bool {
	e, err := cache.DecodeEntry(raw)
	if err != nil {
		cacheResults["error"].Inc()
		return false
	}
	age := max(time.Since(e.StoredAt), 0)
	if c.maxAge > 0 && age > c.maxAge {
		return false
	}
	body, contentType := e.Body, e.ContentType
	if !entryConverts(c.req.Endpoint, e.Stream, c.req.Stream) {
		return false // a miss: see entryConverts
	}
	switch {
	case c.req.Stream && e.Stream:
		if !c.req.IncludeUsage && c.req.Endpoint != openai.Responses {
			body = stripUsage(body)
		}
	case c.req.Stream && !e.Stream:
		body, err = openai.CompletionToStream(e.Body, c.req.IncludeUsage)
		contentType = "text/event-stream"
	case !c.req.Stream && e.Stream:
		body, err = plainFromStream(c.req.Endpoint, e.Body)
		contentType = "application/json"
	}
	if err != nil {
		cacheResults["error"].Inc()
		return false
	}
	s.countCache(c, result)
	s.successes.Add(1)
	if contentType == "" {
		contentType = "application/json"
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType(contentType)
	ctx.Response.Header.Set("X-Cache", result)
	ctx.Response.Header.Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
	if c.req.Stream {
		ctx.Response.Header.Set("Cache-Control", "no-cache")
	}
	ctx.SetBody(body)
	return true
}

// stripUsage takes out of a stored stream the usage a client did not ask
// for, wherever the upstream put it (see clientChunk).
func stripUsage(stream []byte) []byte {
	if !bytes.Contains(stream, []byte(`"usage"`)) {
		return stream
	}
	out := make([]byte, 0, len(stream))
	r := sse.NewReader(bytes.NewReader(stream), 0)
	for {
		raw, err := r.Next()
		if err != nil {
			return out
		}
		ev := openai.ReadEvent(raw)
		out = append(out, clientChunk(raw, &ev, false)...)
	}
}

// store encodes a complete answer and writes it to the cache off the request
// path; followers of a coalesced miss get the entry at once.
func (s *Server) store(c *call, stream bool, body []byte, contentType, upstreamName string) {
	if c.key == "" || c.ttl <= 0 {
		return
	}
	e := cache.EncodeEntry(nil, cache.Entry{
		Stream: stream, Body: body, ContentType: contentType,
		Upstream: upstreamName, StoredAt: time.Now(),
	})
	var l lease
	if c.flight != nil {
		l, c.flight.lease = c.flight.lease, lease{} // released once the entry is stored, for the waiting replicas
	}
	s.finishFlight(c, e)
	select {
	case s.storeSem <- struct{}{}:
		go func(key string, ttl time.Duration) {
			defer func() { <-s.storeSem }()
			if err := s.cache.Set(key, e, ttl); err != nil {
				cacheResults["error"].Inc()
				s.log.Debug("cache store", "err", err)
			}
			s.releaseLease(l)
		}(c.key, c.ttl)
	default:
		cacheStoreDrops.Inc() // the backend is slower than the traffic: skip, don't queue
		if l.held() {
			go s.releaseLease(l)
		}
	}
}

// flight is one request's upstream call that identical requests wait for.
type flight struct {
	done  chan struct{}
	entry []byte // the encoded entry; nil when the leader got no cacheable answer
	// share is the leader's stream as followers see it (see liveStream),
	// once published: its response started. live, made by the first
	// follower that waits for it, is closed then. Both are guarded by
	// flights.mu.
	share     *liveStream
	published bool
	live      chan struct{}
	lease     lease // the cross-replica lease the leader holds, if any (see awaitLease)
	// calling, with leases on, is closed when the leader, having waited on
	// another replica's lease, goes upstream itself (see follow).
	calling chan struct{}
}

// liveChan returns a channel closed once f's stream can be followed (at
// once if it can now).
func (f *flights) liveChan(fl *flight) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl.live == nil {
		fl.live = make(chan struct{})
		if fl.published {
			close(fl.live)
		}
	}
	return fl.live
}

// publish makes fl's stream one its followers can follow.
func (f *flights) publish(fl *flight) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl.published = true
	if fl.live != nil {
		close(fl.live)
	}
}

// join returns the flight of key, and true when the caller starts it and
// leads it. withLeases: the leader may wait on another replica's lease
// (its flight has a calling channel).
func (f *flights) join(key string, withLeases bool) (*flight, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.m[key]; ok {
		return fl, false
	}
	fl := &flight{done: make(chan struct{})}
	if withLeases {
		fl.calling = make(chan struct{})
	}
	f.m[key] = fl
	return fl, true
}

// finishFlight ends the request's flight, if it leads one, handing entry to
// the waiting requests (nil: they go upstream themselves).
func (s *Server) finishFlight(c *call, entry []byte) {
	fl := c.flight
	if fl == nil {
		return
	}
	c.flight = nil
	s.flights.mu.Lock()
	if s.flights.m[c.key] == fl {
		delete(s.flights.m, c.key)
	}
	s.flights.mu.Unlock()
	fl.entry = entry
	close(fl.done)
	if fl.lease.held() { // no entry: the waiting replicas go upstream at once
		go s.releaseLease(fl.lease)
	}
}
