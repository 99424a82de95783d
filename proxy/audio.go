package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"switchyard/config"
	"switchyard/openai"
	"switchyard/policy"
	"switchyard/upload"
	"switchyard/upstream"
	"switchyard/verdict"
)

// Audio uploads: POST /v1/audio/transcriptions and /translations, a
// multipart form with the audio file and its fields. The body is read
// once, as it arrives, into a spool (package upload: memory, then an
// unlinked temp file) while the form is parsed from it, so the model
// field is found wherever it is, and each attempt replays the spool to
// its upstream: failover works as for chat. The model alias is the one
// edit (of the model part's bytes); everything else goes byte for byte.
// The upstream's answer (json, verbose_json, text, srt, vtt) is relayed
// whole with its Content-Type; the transcript stream stream=true asks for
// is relayed event by event, as typed events (see responses.go).
// Cache keys hash the file and the other fields (openai.AudioCacheDocument).

// uploadRoutes are the upload endpoints, by their path under /v1.
var uploadRoutes = map[string]*apiRoute{
	string(openai.Transcriptions): {ep: openai.Transcriptions, label: routeTranscriptions, cache: true, keyTag: "transcriptions"},
	string(openai.Translations):   {ep: openai.Translations, label: routeTranslations, cache: true, keyTag: "translations"},
}

// uploadRouteOf returns the upload route of a request path (with Groq's
// /openai/v1 alias), nil for any other path.
func uploadRouteOf(path []byte) *apiRoute {
	if bytes.HasPrefix(path, []byte("/openai/v1/")) {
		path = path[len("/openai"):]
	}
	return uploadRoutes[string(apiPath(path))]
}

// spoolUploads is how many full-size uploads (max_upload_bytes) all
// spools may hold at once, memory and files together; past it an upload
// gets 503 and the SDK retries.
const spoolUploads = 16

var (
	// uploadSpoolBytes is the bytes all uploads' spools hold now, in
	// memory and in files (the upload pool reports each change).
	uploadSpoolBytes = metrics.NewGauge(`switchyard_upload_spool_bytes`, nil)
	// uploadSpills counts uploads that outgrew their memory for a file.
	uploadSpills = metrics.NewCounter(`switchyard_upload_spills_total`)
	// uploadSpoolFull counts uploads refused (503) at the spools' bound.
	uploadSpoolFull = metrics.NewCounter(`switchyard_upload_spool_full_total`)
)

// Codes of the proxy's own answers to uploads.
const (
	codeUploadBusy  = "upload_spool_full"
	codeUploadSpool = "upload_spool_error"
)

// uploadCall is what a call carries for an upload.
type uploadCall struct {
	form        *upload.Form
	contentType string // the client's, its boundary included: sent as is
	modelPart   int    // the model field's part: rewritten for an upstream that calls the model otherwise
}

// handleUpload serves an audio upload: admission (auth, Content-Type,
// max_upload_bytes), the spool and the form, then the cache and the
// upstreams that serve the endpoint and the model, as handleAPI does for
// JSON.
func (s *Server) handleUpload(ctx *fasthttp.RequestCtx, start time.Time, r *apiRoute) {
	c := s.admit(ctx, start, r)
	st := c.st
	in := &clientBody{r: ctx.Request.BodyStream()}
	if in.r == nil { // a server that read the body whole
		in.r = bytes.NewReader(ctx.Request.Body())
	}
	defer in.settle(ctx, &st.cfg)
	defer s.leave(ctx, c)

	scope, ok := s.authorized(ctx, st)
	if !ok {
		return
	}
	c.scope = scope
	boundary, ok := multipartBoundary(ctx)
	if !ok {
		return
	}
	size := int64(declaredLength(&ctx.Request.Header))
	if size < 0 {
		size = -1 // chunked
	}
	form, err := s.uploads.Read(in, upload.Options{Boundary: boundary, Size: size, Max: int64(st.cfg.MaxUploadBytes),
		FileFields: []string{openai.AudioFileField}})
	if err != nil {
		s.answerUploadError(ctx, c, err)
		return
	}
	defer form.Close() // on every way out, a panic included: the memory, the file, the pool's share
	if form.Spilled() {
		uploadSpills.Inc()
	}
	parts := make([]openai.AudioPart, len(form.Parts))
	for i, p := range form.Parts {
		parts[i] = openai.AudioPart{Name: p.Name, File: p.File, Value: p.Value, SHA256: p.SHA256, Size: p.Size}
	}
	af, err := openai.ParseAudioForm(r.ep, parts)
	if err != nil {
		e := err.(*openai.RequestError)
		writeError(ctx, fasthttp.StatusBadRequest, e.Message, typeInvalidRequest, e.Param, e.Code)
		return
	}
	c.req = af.Request
	c.req.Stream = af.Stream
	if af.Stream {
		c.complete = commitComplete(st, &ctx.Request.Header)
	}
	// The cache sees the upload as its canonical document: the key, the
	// coalescing and X-Cache-Key work as for a JSON body.
	c.body = openai.AudioCacheDocument(parts)
	c.upload = &uploadCall{form: form, contentType: string(ctx.Request.Header.ContentType()), modelPart: af.ModelPart}
	c.header = &ctx.Request.Header

	var buf [8]policy.Target
	targets, excluded := s.targets(st, c, buf[:0])
	if len(targets) == 0 {
		s.answerNoTarget(ctx, c, excluded)
		return
	}
	if af.Stream {
		s.countCache(c, cacheBypass) // an event stream is not an answer to keep
	} else if s.serveFromCache(ctx, c) {
		return
	}
	// A transcript stream (stream=true) is relayed event by event like a
	// Responses stream (typed events, see readResponsesToCommit); any
	// other answer, whatever its format, is relayed whole. The upload has
	// been sent whole before an answer starts, so the spool can go when
	// the handler returns.
	c.handedOff = s.forward(ctx, c, targets)
}

// multipartBoundary returns the boundary of the request's multipart/form-data
// Content-Type, or answers 415 (another type) or 400 (no boundary).
func multipartBoundary(ctx *fasthttp.RequestCtx) (string, bool) {
	mt, params, err := mime.ParseMediaType(string(ctx.Request.Header.ContentType()))
	if err != nil || mt != "multipart/form-data" {
		writeError(ctx, fasthttp.StatusUnsupportedMediaType, "Content-Type must be multipart/form-data (the audio file and its fields)", typeInvalidRequest, "", codeContentType)
		return "", false
	}
	b := params["boundary"]
	if b == "" || len(b) > 70 {
		writeError(ctx, fasthttp.StatusBadRequest, "Content-Type multipart/form-data needs a boundary parameter of 1 to 70 characters", typeInvalidRequest, "", openai.CodeInvalidMultipart)
		return "", false
	}
	return b, true
}

// answerUploadError answers an upload that could not be read into its
// spool.
func (s *Server) answerUploadError(ctx *fasthttp.RequestCtx, c *call, err error) {
	var (
		fe *upload.FormError
		re *upload.ReadError
	)
	switch {
	case errors.Is(err, upload.ErrTooLarge):
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge,
			fmt.Sprintf("the upload is larger than max_upload_bytes (%d bytes)", c.st.cfg.MaxUploadBytes), typeInvalidRequest, "file", codeBodyTooLarge)
	case errors.As(err, &fe):
		writeError(ctx, fasthttp.StatusBadRequest, fe.Error(), typeInvalidRequest, "", openai.CodeInvalidMultipart)
	case errors.As(err, &re):
		// The client went away, was too slow or cut its body short: it
		// may not read this, but the log and the metrics do.
		r := classifyRejection(re.Err)
		writeError(ctx, r.status, r.message, typeInvalidRequest, "", r.code)
	case errors.Is(err, upload.ErrFull):
		uploadSpoolFull.Inc()
		setRetryHeaders(ctx, time.Second, false)
		writeError(ctx, fasthttp.StatusServiceUnavailable, "too many uploads in progress; retry shortly", typeServer, "", codeUploadBusy)
	default: // the spool's file: the machine's fault, not the client's
		s.log.Warn("upload spool", "request_id", c.rid, "err", err)
		writeError(ctx, fasthttp.StatusInternalServerError, "the proxy could not hold the upload (its spool directory; see the proxy's log)", typeServer, "", codeUploadSpool)
	}
}

// tryUpload is tryOnce for an upload: one HTTP exchange, the spool
// replayed as the body (the model part rewritten for this upstream),
// classified. A 2xx answer is used as it is, in whatever format it came;
// only one that says it is JSON must be valid JSON without an error.
func (s *Server) tryUpload(c *call, u *upstream.Client, model string) *attemptResult {
	r := &attemptResult{u: u, model: model, start: time.Now()}
	up := c.upload
	i := -1
	if model != c.req.Model {
		i = up.modelPart
	}
	body, size := up.form.Body(i, model)
	req := upstream.Request{Endpoint: c.req.Endpoint, ContentType: up.contentType, BodyStream: body, BodySize: size, Stream: c.req.Stream}
	answer, ok := c.exchange(r, &req)
	if !ok {
		return r
	}
	resp := r.resp
	r.ttft = resp.Latency
	switch {
	case resp.Status/100 != 2:
	case resp.Stream != nil: // a transcript stream: read to its commit point
		s.readToCommit(c, r)
		return r
	case isJSONType([]byte(resp.Header("Content-Type"))):
		r.takePlain(&answer, openai.ReadAnswer(resp.Body))
	}
	r.v = verdict.Classify(answer)
	return r
}

// uploadMaxBytes is the bound on the bytes all spools hold at once.
func uploadMaxBytes(cfg *config.Config) int64 {
	return spoolUploads * int64(cfg.MaxUploadBytes)
}
