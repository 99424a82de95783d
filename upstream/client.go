// Package upstream is Switchyard's client side: one Client per configured
// upstream (an OpenAI-compatible server and one API key) that builds the
// outgoing request, sends it over pooled fasthttp connections, and returns
// the answer either buffered (plain calls and every error) or as an open
// event stream guarded by first-token and idle watchdogs. It also parses the
// rate-limit headers; what an answer means is the verdict package's call.
//
// The outgoing request carries the upstream's static headers and the
// client headers it forwards (config's headers and forward_headers), and
// asks for no compression; an answer compressed anyway (gzip, deflate, br
// when buffered) is decoded under the same size caps.
//
// Only this package speaks the fasthttp client.
package upstream

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/config"
	"switchyard/openai"
	"switchyard/verdict"
)

// Sentinel errors of an attempt. Each is wrapped with the upstream's name,
// and each wraps its class in the failure table (verdict.ErrTimeout,
// verdict.ErrBusy).
var (
	// ErrFirstTokenTimeout: a stream sent no event within first_token_timeout.
	ErrFirstTokenTimeout = fmt.Errorf("no first event within the first-token timeout (%w)", verdict.ErrTimeout)
	// ErrIdleTimeout: a stream went silent for longer than idle_timeout.
	ErrIdleTimeout = fmt.Errorf("stream idle for longer than the idle timeout (%w)", verdict.ErrTimeout)
	// ErrTimeout: a plain call got no complete answer within timeout.
	ErrTimeout = fmt.Errorf("no answer within the timeout (%w)", verdict.ErrTimeout)
	// ErrBusy: every pooled connection to the upstream is in use, and none
	// freed up in time. It is our own limit, not the upstream's failure.
	ErrBusy = fmt.Errorf("connection pool to the upstream exhausted (%w)", verdict.ErrBusy)
	// ErrContentEncoding: a 2xx answer came in a Content-Encoding the
	// client cannot decode (anything but gzip, deflate and, for buffered
	// answers, br). We ask for none, so it is the upstream's fault.
	ErrContentEncoding = errors.New("unsupported Content-Encoding")
)

// maxErrorBody caps how much of a non-2xx body is read: error bodies are
// small, and a huge one must not cost memory.
const maxErrorBody = 64 << 10

// MaxPlainBody is the default cap on a plain (non-streaming) answer
// (Request.MaxBody, the max_response_bytes setting). An answer over it is an
// upstream failure, not something to relay.
const MaxPlainBody = 32 << 20

// Client calls one upstream. It is safe for concurrent use.
type Client struct {
	// Name is the upstream's configured name.
	Name string
	// Provider is groq, huggingface or openai.
	Provider string
	// Priority is the configured priority (lower first).
	Priority int

	cfg        config.Upstream
	uris       map[openai.Endpoint]string // the endpoints this upstream serves, by endpoint
	modelsURI  string
	host       string
	authHeader string
	static     []staticHeader       // headers with a value, sorted by name
	forward    []string             // forward_headers, minus those static sets
	plain      *fasthttp.HostClient // buffered answers, whole-response deadline
	stream     *fasthttp.HostClient // streamed answers, idle-extending read deadline
	upload     *fasthttp.HostClient // streamed request bodies (uploads): no per-write cap
	conns      connTable            // the stream client's open connections
}

// staticHeader is one of upstreams[].headers.
type staticHeader struct{ key, value string }

// New builds the client for u. It dials nothing yet.
func New(u config.Upstream) (*Client, error) {
	pu, err := url.Parse(u.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: base_url: %w", u.Name, err)
	}
	isTLS := pu.Scheme == "https"
	addr := pu.Host
	if pu.Port() == "" {
		if isTLS {
			addr = net.JoinHostPort(pu.Hostname(), "443")
		} else {
			addr = net.JoinHostPort(pu.Hostname(), "80")
		}
	}
	base := strings.TrimRight(u.BaseURL, "/")
	c := &Client{
		Name:      u.Name,
		Provider:  u.Provider,
		Priority:  u.Priority,
		cfg:       u,
		uris:      map[openai.Endpoint]string{},
		modelsURI: base + "/models",
		host:      pu.Host,
	}
	eps := u.Endpoints
	if eps == nil { // a config that never went through Parse: the provider's
		eps = config.DefaultEndpoints[u.Provider]
		if eps == nil {
			eps = []string{string(openai.Chat)}
		}
	}
	for _, e := range eps {
		c.uris[openai.Endpoint(e)] = base + "/" + e
	}
	if u.APIKey != "" {
		c.authHeader = "Bearer " + u.APIKey
	}
	if err := c.initHeaders(); err != nil {
		return nil, err
	}
	maxBody := u.MaxResponseBytes // max_response_bytes: fasthttp's own cap on a buffered body
	if maxBody <= 0 {
		maxBody = MaxPlainBody
	}
	newHC := func(maxConns int, dial fasthttp.DialFunc) *fasthttp.HostClient {
		return &fasthttp.HostClient{
			Addr:                      addr,
			Name:                      "",
			NoDefaultUserAgentHeader:  true,
			IsTLS:                     isTLS,
			TLSConfig:                 &tls.Config{MinVersion: tls.VersionTLS12, ServerName: pu.Hostname()},
			Dial:                      dial,
			MaxConns:                  maxConns,
			MaxConnWaitTimeout:        2 * time.Second,
			MaxIdleConnDuration:       30 * time.Second,
			MaxIdemponentCallAttempts: 1, // retries belong to the policy
			WriteTimeout:              10 * time.Second,
			MaxResponseBodySize:       maxBody,
			DisablePathNormalizing:    true,
			SecureErrorLogMessage:     true,
		}
	}
	c.plain = newHC(2048, func(a string) (net.Conn, error) { return fasthttp.DialTimeout(a, 5*time.Second) })
	// An upload's body (up to max_upload_bytes) is written within the
	// request's timeout rather than the 10 s a JSON body gets: a slow
	// uplink must not cut it. Its own pool keeps those long writes off the
	// connections JSON calls wait for.
	c.upload = newHC(1024, func(a string) (net.Conn, error) { return fasthttp.DialTimeout(a, 5*time.Second) })
	c.upload.WriteTimeout = 0
	c.upload.WriteBufferSize = 64 << 10
	// Streams hold a connection for their whole length: allow many.
	c.stream = newHC(16384, func(a string) (net.Conn, error) {
		conn, err := fasthttp.DialTimeout(a, 5*time.Second)
		if err != nil {
			return nil, err
		}
		ic := &idleConn{Conn: conn, idle: max(u.IdleTimeout, u.FirstTokenTimeout), conns: &c.conns,
			key: connKey(conn.LocalAddr(), conn.RemoteAddr())}
		c.conns.add(ic)
		return ic, nil
	})
	return c, nil
}

// initHeaders precomputes the static and forwarded headers, so Do only
// sets them. Config.Validate has checked them; the checks here keep a
// hand-built config.Upstream from forwarding the client's Authorization or
// injecting a header line. Nil lists are the provider defaults, as after
// config.Parse, and c.cfg is left holding the effective lists.
func (c *Client) initHeaders() error {
	u := &c.cfg
	bad := func(what, name string) error {
		return fmt.Errorf("upstream %s: %s: %q cannot be sent (set by the proxy, hop-by-hop, or not a header name)", u.Name, what, name)
	}
	names := make([]string, 0, len(u.Headers))
	for k := range u.Headers {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		v := u.Headers[k]
		if config.ReservedHeader(k) || !validHeaderText(k) || k == "" || !validHeaderText(v) {
			return bad("headers", k)
		}
		if v != "" { // an unset ${VAR}: not sent
			c.static = append(c.static, staticHeader{k, v})
		}
	}
	// Our own copies, never nil (as after config.Parse).
	if u.ForwardHeaders == nil {
		u.ForwardHeaders = config.DefaultForwardHeaders[u.Provider]
	}
	u.ForwardHeaders = append([]string{}, u.ForwardHeaders...)
	for _, k := range u.ForwardHeaders {
		if config.ReservedHeader(k) || !validHeaderText(k) || k == "" {
			return bad("forward_headers", k)
		}
		if !slices.ContainsFunc(c.static, func(h staticHeader) bool { return strings.EqualFold(h.key, k) }) {
			c.forward = append(c.forward, k)
		}
	}
	if u.UnsupportedParams == nil {
		u.UnsupportedParams = config.DefaultUnsupportedParams[u.Provider]
	}
	u.UnsupportedParams = append([]string{}, u.UnsupportedParams...)
	return nil
}

// validHeaderText reports whether s can go in a header line as it is: no
// CR, LF or NUL.
func validHeaderText[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return true
}

// Serves reports whether this upstream serves endpoint e (its endpoints).
func (c *Client) Serves(e openai.Endpoint) bool {
	_, ok := c.uris[e]
	return ok
}

// Configured reports whether the upstream has an API key.
func (c *Client) Configured() bool { return c.authHeader != "" }

// UnsupportedParams returns the top-level request parameters this upstream
// answers 400 to: upstreams[].unsupported_params, or the provider's
// default when the config left it out. The slice is shared: callers must
// not modify it.
func (c *Client) UnsupportedParams() []string { return c.cfg.UnsupportedParams }

// DropParams reports whether a request using UnsupportedParams is sent
// without them (true) or skips this upstream (false, the default):
// upstreams[].drop_params.
func (c *Client) DropParams() bool { return c.cfg.DropParams }

// MaxRetryAfter returns the longest 429 retry-after this upstream waits
// out before retrying itself instead of failing over:
// upstreams[].retry.max_retry_after. 0 (the default) means never wait.
func (c *Client) MaxRetryAfter() time.Duration { return c.cfg.Retry.MaxRetryAfter }

// Timeout is the upstream's whole-answer deadline for plain calls (its
// timeout setting).
func (c *Client) Timeout() time.Duration { return c.cfg.Timeout }

// Model returns the model name to send upstream for the client's alias, and
// whether this upstream serves it: with a models map exactly its aliases,
// without one every model, unchanged.
func (c *Client) Model(alias string) (string, bool) {
	if len(c.cfg.Models) == 0 {
		return alias, alias != ""
	}
	m, ok := c.cfg.Models[alias]
	return m, ok
}

// Aliases returns the aliases of the models map (nil for a pass-through
// upstream).
func (c *Client) Aliases() []string {
	out := make([]string, 0, len(c.cfg.Models))
	for a := range c.cfg.Models {
		out = append(out, a)
	}
	return out
}

// ConnsCount returns the number of open connections, for tests and status.
func (c *Client) ConnsCount() int {
	return c.plain.ConnsCount() + c.stream.ConnsCount() + c.upload.ConnsCount()
}

// idleConn pushes the read deadline forward after every read of a streamed
// response body that returned data, so a stream never waits on a silent
// upstream longer than idle. fasthttp sets one read deadline per request;
// on the stream client that deadline (the first-token timeout) bounds the
// response headers, and is not pushed while they arrive: an upstream that
// dribbles its headers a byte at a time is cut off at the first-token
// timeout, not kept alive by each byte. Do switches a connection to body
// mode once the headers are in (startBody); the next request's
// SetWriteDeadline switches it back.
//
// With TLS, idleConn is the TCP connection under the TLS one: it sees
// records, not HTTP, which is why the switch comes from Do and not from
// the bytes.
type idleConn struct {
	net.Conn
	idle  time.Duration
	body  atomic.Bool // this response's headers are in: reads push the deadline
	key   connID      // in the client's conns
	conns *connTable
}

// SetWriteDeadline is called by fasthttp at the start of every request on
// the connection (the client has a WriteTimeout): the next bytes read are
// a new response's headers.
func (c *idleConn) SetWriteDeadline(t time.Time) error {
	c.body.Store(false)
	return c.Conn.SetWriteDeadline(t)
}

// startBody is called once the response headers are read: from now on,
// every read pushes the deadline idle ahead, starting now.
func (c *idleConn) startBody() {
	c.body.Store(true)
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
}

func (c *idleConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	// A connection Do cannot find (no TCP addresses, never expected) pushes
	// on every read, headers included.
	if n > 0 && err == nil && (c.body.Load() || c.key == (connID{})) {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	return n, err
}

func (c *idleConn) Close() error {
	c.conns.remove(c)
	return c.Conn.Close()
}

// connID names a TCP connection by both ends (a local port can serve two
// remote addresses).
type connID struct{ local, remote netip.AddrPort }

func connKey(local, remote net.Addr) connID {
	l, _ := local.(*net.TCPAddr)
	r, _ := remote.(*net.TCPAddr)
	if l == nil || r == nil {
		return connID{}
	}
	return connID{l.AddrPort(), r.AddrPort()}
}

// connTable is the stream client's open connections, by connID.
type connTable struct {
	mu sync.Mutex
	m  map[connID]*idleConn
}

func (t *connTable) add(c *idleConn) {
	if c.key == (connID{}) {
		return // not findable: see idleConn.Read
	}
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[connID]*idleConn)
	}
	t.m[c.key] = c
	t.mu.Unlock()
}

func (t *connTable) remove(c *idleConn) {
	t.mu.Lock()
	if t.m[c.key] == c {
		delete(t.m, c.key)
	}
	t.mu.Unlock()
}

func (t *connTable) get(id connID) *idleConn {
	if id == (connID{}) {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[id]
}

// Request is one attempt's input.
type Request struct {
	// Endpoint is where the body goes (base_url + "/" + endpoint); the zero
	// value means chat completions. It must be one the upstream serves.
	Endpoint openai.Endpoint
	// Method is the HTTP method; "" means POST. A GET or DELETE carries no
	// body and no Content-Type.
	Method string
	// Path, when set, is appended to the endpoint's URL: a resource under
	// it and its query ("/resp_1/input_items?limit=20"), already escaped.
	Path string
	// ContentType is the body's Content-Type; "" means application/json.
	ContentType string
	// Body is the body to send, model already rewritten. It must stay
	// unchanged until Do returns (and, for streams, until the stream is
	// closed).
	Body []byte
	// BodyStream, when set, is sent instead of Body: exactly BodySize
	// bytes read from it while the request is written (an upload replayed
	// from its spool; ContentType then names it, with its boundary). Do
	// reads it once: each attempt needs a new one. Such a request goes
	// over its own connection pool, its write bounded by the upstream's
	// timeout only. A streamed answer to it (Stream: a transcript stream)
	// gets first_token_timeout for its first event once the headers are
	// in, idle_timeout between events, and the upstream's timeout for the
	// whole exchange.
	BodyStream io.Reader
	// BodySize is BodyStream's length in bytes.
	BodySize int64
	// Stream asks for an event stream answer.
	Stream bool
	// RequestID is forwarded as X-Request-Id.
	RequestID string
	// MaxBody caps a buffered 2xx answer (max_response_bytes); an answer
	// over it is an error. 0 means MaxPlainBody.
	MaxBody int
	// ClientHeaders are the client's request headers (a
	// *fasthttp.RequestHeader fits): Do peeks, before sending, at each of
	// the upstream's forward_headers and sends the non-empty values; a
	// value holding CR, LF or NUL is not sent. It is not used after Do
	// returns. Nil: no client header is forwarded.
	ClientHeaders HeaderPeeker
}

// HeaderPeeker reads request headers by name (nil or empty when absent).
type HeaderPeeker interface {
	Peek(name string) []byte
}

// Header is one response header kept for the client.
type Header struct{ Key, Value string }

// Response is an attempt's answer. For a 2xx stream, Stream is open and the
// caller must Close it; otherwise Body holds the whole (capped) body.
type Response struct {
	Status    int
	Headers   []Header
	Body      []byte
	Stream    *Stream
	RateLimit verdict.RateLimit
	// Latency is the time to the whole answer (plain) or to the response
	// headers (stream; the stream measures time to first event).
	Latency time.Duration
}

// Header returns the value of the named kept header ("" when absent).
func (r *Response) Header(key string) string {
	for _, h := range r.Headers {
		if strings.EqualFold(h.Key, key) {
			return h.Value
		}
	}
	return ""
}

// Do sends one attempt. A transport failure (dial, reset, timeout, body too
// large) is an error; any HTTP answer is a Response.
func (c *Client) Do(r *Request) (*Response, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	method := r.Method
	if method == "" {
		method = fasthttp.MethodPost
	}
	req.Header.SetMethod(method)
	e := r.Endpoint
	if e == "" {
		e = openai.Chat
	}
	uri, served := c.uris[e]
	if !served {
		return nil, fmt.Errorf("upstream %s: does not serve %s (endpoints)", c.Name, e)
	}
	if r.Path != "" {
		uri += r.Path
	}
	req.SetRequestURI(uri)
	c.setHeaders(&req.Header, r.ClientHeaders)
	switch {
	case method == fasthttp.MethodGet || method == fasthttp.MethodDelete:
		req.Header.SetNoDefaultContentType(true) // no body, so no Content-Type
	case r.ContentType != "":
		req.Header.SetContentType(r.ContentType)
	default:
		req.Header.SetContentType("application/json")
	}
	if r.Stream {
		req.Header.Set("Accept", "text/event-stream")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	if r.RequestID != "" {
		req.Header.Set("X-Request-Id", r.RequestID)
	}
	hc := c.plain
	upload := r.BodyStream != nil
	if upload {
		req.SetBodyStream(r.BodyStream, int(r.BodySize))
		hc = c.upload
	} else {
		req.SetBodyRaw(r.Body)
	}

	start := time.Now()
	resp := fasthttp.AcquireResponse()
	var err error
	switch {
	case r.Stream && upload:
		// The upload's write is not the model's first token: the whole
		// exchange gets the timeout, the stream's own timers the rest.
		resp.StreamBody = true
		err = hc.DoDeadline(req, resp, start.Add(c.cfg.Timeout))
	case r.Stream:
		resp.StreamBody = true
		err = c.stream.DoDeadline(req, resp, start.Add(c.cfg.FirstTokenTimeout))
	default:
		err = hc.DoDeadline(req, resp, start.Add(c.cfg.Timeout))
	}
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		return nil, c.wrapErr(err, r.Stream && !upload) // an upload's deadline is the timeout, not the first token's
	}
	if r.Stream && !upload {
		// The headers are in: the body's reads push the deadline. A
		// connection not found (never expected) keeps the first-token
		// deadline for its body, which the stream then cannot outlive.
		if ic := c.conns.get(connKey(resp.LocalAddr(), resp.RemoteAddr())); ic != nil {
			ic.startBody()
		}
	}
	out := &Response{Status: resp.StatusCode(), Latency: time.Since(start)}
	out.Headers = keptHeaders(&resp.Header)
	out.RateLimit = ParseRateLimit(&resp.Header, time.Now())

	// We ask for no encoding (Accept-Encoding: identity), but a server or
	// CDN may compress anyway: decode rather than take gzip for bad JSON.
	// Content-Encoding itself is never relayed (see keptHeaders).
	enc := contentEncoding(&resp.Header)
	var encName string // for an error naming an encoding we cannot decode
	if enc == encOther {
		encName = string(resp.Header.ContentEncoding())
	}
	ok := out.Status/100 == 2
	if r.Stream && ok && resp.BodyStream() != nil && isEventStream(out.Header("Content-Type")) {
		if enc == encBrotli || enc == encOther {
			if encName == "" {
				encName = enc.String()
			}
			err := fmt.Errorf("upstream %s: %w %q on an event stream", c.Name, ErrContentEncoding, encName)
			closeBody(resp, err)
			fasthttp.ReleaseResponse(resp)
			return nil, err
		}
		first := c.cfg.FirstTokenTimeout - out.Latency
		if upload {
			first = c.cfg.FirstTokenTimeout // the latency was the upload's
		}
		out.Stream = newStream(c.Name, resp, enc, first, c.cfg.IdleTimeout)
		return out, nil
	}
	// Buffered: plain answers, errors, and a "stream" that came back as JSON.
	limit := r.MaxBody
	if limit <= 0 {
		limit = MaxPlainBody
	}
	if !ok {
		limit = maxErrorBody
	}
	body, err := readCapped(resp, limit)
	fasthttp.ReleaseResponse(resp)
	// An error body cut at the cap still says why.
	if err != nil && (ok || !errors.Is(err, errBodyCapped)) {
		return nil, c.wrapErr(err, r.Stream)
	}
	if enc != encIdentity && len(body) > 0 {
		// Decoded under the same cap: a small compressed body must not
		// become a large allocation.
		decoded, err := decodeCapped(enc, body, limit)
		switch {
		case err == nil:
		case !ok:
			// The status says what happened; keep whatever decoded
			// (a body cut at the cap ends in a truncated stream).
		case enc == encOther:
			return nil, fmt.Errorf("upstream %s: %w %q", c.Name, ErrContentEncoding, encName)
		default:
			return nil, fmt.Errorf("upstream %s: decoding %s body: %w", c.Name, enc, err)
		}
		body = decoded
	}
	out.Body = body
	if !r.Stream {
		out.Latency = time.Since(start)
	}
	return out, nil
}

// setHeaders sets the headers every request to this upstream carries: the
// static headers, the client's forwarded ones, Host, Authorization and
// Accept-Encoding. The proxy's own are set last, so they win even over a
// hand-built config that Validate never saw.
func (c *Client) setHeaders(h *fasthttp.RequestHeader, client HeaderPeeker) {
	for i := range c.static {
		h.Set(c.static[i].key, c.static[i].value)
	}
	if client != nil {
		for _, k := range c.forward {
			if v := client.Peek(k); len(v) > 0 && validHeaderText(v) {
				h.SetBytesV(k, v)
			}
		}
	}
	h.SetHost(c.host)
	h.Set("Authorization", c.authHeader)
	// Without Accept-Encoding any coding is acceptable (RFC 9110 12.5.3).
	h.Set("Accept-Encoding", "identity")
}

func (c *Client) wrapErr(err error, stream bool) error {
	if errors.Is(err, fasthttp.ErrNoFreeConns) {
		return fmt.Errorf("upstream %s: %w", c.Name, ErrBusy)
	}
	var ne net.Error
	if errors.Is(err, fasthttp.ErrTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		if stream {
			err = ErrFirstTokenTimeout
		} else {
			err = ErrTimeout
		}
	}
	return fmt.Errorf("upstream %s: %w", c.Name, err)
}

var errBodyCapped = errors.New("body over the size limit")

// readCapped returns a copy of the response body, at most limit bytes, and
// releases the body stream if there is one.
func readCapped(resp *fasthttp.Response, limit int) ([]byte, error) {
	s := resp.BodyStream()
	if s == nil {
		if len(resp.Body()) > limit {
			return append([]byte(nil), resp.Body()[:limit]...), errBodyCapped
		}
		// Take fasthttp's buffer rather than copy it: a large answer is
		// then held once, not twice (the response goes back to its pool
		// without it).
		return resp.SwapBody(nil), nil
	}
	var buf []byte
	var err error
	if n := resp.Header.ContentLength(); n >= 0 && n <= limit {
		// The size is known: one buffer of it, read once.
		buf = make([]byte, n)
		var got int
		got, err = io.ReadFull(s, buf)
		buf = buf[:got]
	} else {
		// Unknown (chunked) or over the cap: grow by doubling up to it.
		w := cappedWriter{limit: limit}
		_, err = io.Copy(&w, s)
		buf = w.b
	}
	switch {
	case errors.Is(err, errBodyCapped):
		closeBody(resp, errBodyCapped)
		return buf, errBodyCapped
	case err != nil:
		closeBody(resp, err)
		return buf, err
	}
	closeBody(resp, nil)
	return buf, nil
}

// closeBody releases resp's body stream: a nil err after the body was read
// to its end lets the connection be reused, any other err closes it.
func closeBody(resp *fasthttp.Response, err error) {
	if rc, ok := resp.BodyStream().(fasthttp.ReadCloserWithError); ok {
		_ = rc.CloseWithError(err)
	} else {
		_ = resp.CloseBodyStream()
	}
}

// encoding is a response's Content-Encoding, as far as we can decode it.
type encoding uint8

const (
	encIdentity encoding = iota // none
	encGzip                     // gzip, x-gzip
	encDeflate                  // deflate: zlib (RFC 1950) data, as RFC 9110 defines it
	encBrotli                   // br: decoded for buffered answers only
	encOther                    // anything else, including a list of codings
)

func (e encoding) String() string {
	switch e {
	case encIdentity:
		return "identity"
	case encGzip:
		return "gzip"
	case encDeflate:
		return "deflate"
	case encBrotli:
		return "br"
	}
	return "unsupported"
}

func contentEncoding(h *fasthttp.ResponseHeader) encoding {
	v := bytes.TrimSpace(h.ContentEncoding())
	switch {
	case len(v) == 0 || equalFold(v, "identity"):
		return encIdentity
	case equalFold(v, "gzip") || equalFold(v, "x-gzip"):
		return encGzip
	case equalFold(v, "deflate"):
		return encDeflate
	case equalFold(v, "br"):
		return encBrotli
	}
	return encOther
}

// decodeCapped decodes a whole buffered body, keeping at most limit bytes:
// past that it returns the first limit bytes and errBodyCapped, having
// decompressed at most one chunk more, so a zip bomb costs no more than
// about twice limit in allocations. On a decoding error it returns what
// was decoded before it. fasthttp's decoders are pooled.
func decodeCapped(enc encoding, raw []byte, limit int) ([]byte, error) {
	w := cappedWriter{limit: limit}
	var err error
	switch enc {
	case encIdentity:
		return raw, nil
	case encGzip:
		_, err = fasthttp.WriteGunzip(&w, raw)
	case encDeflate:
		_, err = fasthttp.WriteInflate(&w, raw)
	case encBrotli:
		_, err = fasthttp.WriteUnbrotli(&w, raw)
	default:
		return nil, ErrContentEncoding
	}
	return w.b, err
}

// cappedWriter keeps what is written up to limit bytes and fails the write
// that would exceed it, which stops the decoder writing into it. It grows
// its buffer by doubling, up to limit: append grows large slices by only
// 1.25x, which would allocate five times the body on the way to a 32 MiB
// cap; doubling allocates at most twice the cap.
type cappedWriter struct {
	b     []byte
	limit int
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	n := min(len(p), w.limit-len(w.b))
	if need := len(w.b) + n; need > cap(w.b) {
		nb := make([]byte, len(w.b), min(w.limit, max(2*cap(w.b), need, 4096)))
		copy(nb, w.b)
		w.b = nb
	}
	w.b = append(w.b, p[:n]...)
	if n < len(p) {
		return n, errBodyCapped
	}
	return n, nil
}

func isEventStream(ct string) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "text/event-stream")
}

// keptHeaders returns the response headers relayed to the client:
// Content-Type, x-ratelimit-*, retry-after, retry-after-ms, and the
// upstream's x-request-id (relayed as X-Upstream-Request-Id by the proxy).
// Only kept headers are copied, all into one string.
func keptHeaders(h *fasthttp.ResponseHeader) []Header {
	var spanStack [16][3]int // offsets in buf: key start, value start, value end
	var bufStack [512]byte
	spans, buf := spanStack[:0], bufStack[:0]
	add := func(k, v []byte) {
		ks := len(buf)
		buf = append(buf, k...)
		vs := len(buf)
		buf = append(buf, v...)
		spans = append(spans, [3]int{ks, vs, len(buf)})
	}
	if ct := h.ContentType(); len(ct) > 0 {
		add([]byte("Content-Type"), ct)
	}
	for k, v := range h.All() {
		if hasPrefixFold(k, "x-ratelimit-") || equalFold(k, "retry-after") || equalFold(k, "retry-after-ms") || equalFold(k, "x-request-id") {
			add(k, v)
		}
	}
	all := string(buf)
	out := make([]Header, len(spans))
	for i, sp := range spans {
		out[i] = Header{all[sp[0]:sp[1]], all[sp[1]:sp[2]]}
	}
	return out
}

// equalFold compares an ASCII header name with a lower-case one.
func equalFold(b []byte, lower string) bool {
	return len(b) == len(lower) && hasPrefixFold(b, lower)
}

func hasPrefixFold(b []byte, lower string) bool {
	if len(b) < len(lower) {
		return false
	}
	for i := 0; i < len(lower); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
