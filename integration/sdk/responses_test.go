package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// The fake's /v1/responses, as Groq serves it: "fully compatible with
// OpenAI's Responses API" (https://console.groq.com/docs/responses-api),
// so shaped by OpenAI's reference
// (https://platform.openai.com/docs/api-reference/responses and
// .../responses-streaming): a plain answer is a response object; a stream
// is "event: <type>" + data events, response.created first and
// response.completed (the whole response, usage included) last, no
// [DONE]. An input containing cutWord gets a stream that breaks off after
// its first delta.
func init() { fakeRoutes["/v1/responses"] = responsesLike }

// storedResponses holds id → model of every response the fake created and
// has not deleted, for the operations on stored responses (storedResponse).
var storedResponses sync.Map

// responseObject is a response object as OpenAI's reference shows it.
func responseObject(id, model, status, text string) string {
	output, usage := "[]", "null"
	if status == "completed" {
		output = fmt.Sprintf(`[{"type":"message","id":"msg_%s","status":"completed","role":"assistant","content":[{"type":"output_text","text":%q,"annotations":[]}]}]`, id, text)
		usage = `{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":21}`
	}
	return fmt.Sprintf(`{"id":%q,"object":"response","created_at":1741476542,"status":%q,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":%q,"output":%s,"parallel_tool_calls":true,"previous_response_id":null,"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":%s,"metadata":{}}`,
		id, status, model, output, usage)
}

// storedResponse answers GET and DELETE /v1/responses/{id} as OpenAI's
// reference shows them (https://platform.openai.com/docs/api-reference/
// responses/get and .../delete): the response object, or
// {"id","object":"response","deleted":true}; an id it does not hold gets
// a 404 with OpenAI's error object.
func storedResponse(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+upstreamKey {
		writeErr(w, 401, "Invalid API Key", "invalid_request_error", "invalid_api_key")
		return
	}
	id := strings.TrimPrefix(r.URL.Path, "/v1/responses/")
	model, ok := storedResponses.Load(id)
	if !ok {
		writeErr(w, 404, fmt.Sprintf("Response with id '%s' not found.", id), "invalid_request_error", "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch r.Method {
	case http.MethodGet:
		io.WriteString(w, responseObject(id, model.(string), "completed", plainAnswer))
	case http.MethodDelete:
		storedResponses.Delete(id)
		fmt.Fprintf(w, `{"id":%q,"object":"response","deleted":true}`, id)
	default:
		writeErr(w, 405, "Method not allowed.", "invalid_request_error", "")
	}
}

const cutWord = "CUT-THE-STREAM"

func responsesLike(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+upstreamKey {
		writeErr(w, 401, "Invalid API Key", "invalid_request_error", "invalid_api_key")
		return
	}
	var req struct {
		Model  string          `json:"model"`
		Stream bool            `json:"stream"`
		Input  json.RawMessage `json:"input"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, 400, "We could not parse the JSON body of your request.", "invalid_request_error", "")
		return
	}
	groqHeaders(w)
	id := fmt.Sprintf("resp_%d", time.Now().UnixNano())
	object := func(status, text string) string { return responseObject(id, req.Model, status, text) }
	storedResponses.Store(id, req.Model)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, object("completed", plainAnswer))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	fl := w.(http.Flusher)
	fl.Flush()
	var evs []string
	add := func(typ, members string) {
		evs = append(evs, fmt.Sprintf("event: %s\ndata: {\"type\":%q,\"sequence_number\":%d,%s}\n\n", typ, typ, len(evs), members))
	}
	msg := "msg_" + id
	text := strings.Join(streamWords, "")
	add("response.created", `"response":`+object("in_progress", ""))
	add("response.in_progress", `"response":`+object("in_progress", ""))
	add("response.output_item.added", fmt.Sprintf(`"output_index":0,"item":{"type":"message","id":%q,"status":"in_progress","role":"assistant","content":[]}`, msg))
	add("response.content_part.added", fmt.Sprintf(`"item_id":%q,"output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}`, msg))
	for _, word := range streamWords {
		add("response.output_text.delta", fmt.Sprintf(`"item_id":%q,"output_index":0,"content_index":0,"delta":%q`, msg, word))
	}
	add("response.output_text.done", fmt.Sprintf(`"item_id":%q,"output_index":0,"content_index":0,"text":%q`, msg, text))
	add("response.content_part.done", fmt.Sprintf(`"item_id":%q,"output_index":0,"content_index":0,"part":{"type":"output_text","text":%q,"annotations":[]}`, msg, text))
	add("response.output_item.done", fmt.Sprintf(`"output_index":0,"item":{"type":"message","id":%q,"status":"completed","role":"assistant","content":[{"type":"output_text","text":%q,"annotations":[]}]}`, msg, text))
	add("response.completed", `"response":`+object("completed", text))
	if strings.Contains(string(req.Input), cutWord) {
		evs = evs[:5] // the preamble, the item, the part, one delta: then the body ends
	}
	for _, ev := range evs {
		select {
		case <-time.After(streamDelay):
		case <-r.Context().Done():
			return
		}
		if _, err := io.WriteString(w, ev); err != nil {
			return
		}
		fl.Flush()
	}
}

func TestGoSDKResponses(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	var raw *http.Response
	resp, err := client.Responses.New(ctx(t), responses.ResponseNewParams{
		Model: modelAlias,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hi (go responses plain)")},
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("Responses.New: %v", err)
	}
	if got := resp.OutputText(); got != plainAnswer {
		t.Errorf("output_text = %q, want %q", got, plainAnswer)
	}
	if resp.Status != responses.ResponseStatusCompleted || !strings.HasPrefix(resp.ID, "resp_") {
		t.Errorf("status %q id %q", resp.Status, resp.ID)
	}
	if resp.Model != upstreamModel {
		t.Errorf("model = %q, want the upstream's %q", resp.Model, upstreamModel)
	}
	if u := resp.Usage; u.InputTokens != 12 || u.OutputTokens != 9 || u.TotalTokens != 21 {
		t.Errorf("usage = %d/%d/%d, want 12/9/21", u.InputTokens, u.OutputTokens, u.TotalTokens)
	}
	if raw.Header.Get("X-Upstream") != upstreamName {
		t.Errorf("X-Upstream = %q", raw.Header.Get("X-Upstream"))
	}
}

// TestGoSDKResponsesRetrieveAndDelete: client.Responses.Get and Delete
// reach the upstream that created the response; a deleted one is an
// *openai.Error 404.
func TestGoSDKResponsesRetrieveAndDelete(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	created, err := client.Responses.New(ctx(t), responses.ResponseNewParams{
		Model: modelAlias,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hi (go responses retrieve)")},
	})
	if err != nil {
		t.Fatalf("Responses.New: %v", err)
	}
	got, err := client.Responses.Get(ctx(t), created.ID, responses.ResponseGetParams{})
	if err != nil {
		t.Fatalf("Responses.Get: %v", err)
	}
	if got.ID != created.ID || got.OutputText() != plainAnswer {
		t.Errorf("Get: id %q text %q, want %q %q", got.ID, got.OutputText(), created.ID, plainAnswer)
	}
	if err := client.Responses.Delete(ctx(t), created.ID); err != nil {
		t.Fatalf("Responses.Delete: %v", err)
	}
	_, err = client.Responses.Get(ctx(t), created.ID, responses.ResponseGetParams{})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Fatalf("Get after Delete: %v, want an *openai.Error 404", err)
	}
}

func TestGoSDKResponsesStreaming(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	stream := client.Responses.NewStreaming(ctx(t), responses.ResponseNewParams{
		Model: modelAlias,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Count to five (go responses stream)")},
	})
	defer stream.Close()
	var text, final, first string
	var arrivals []time.Time // one per delta event
	for stream.Next() {
		ev := stream.Current()
		if first == "" {
			first = ev.Type
		}
		switch ev.Type {
		case "response.output_text.delta":
			text += ev.Delta
			arrivals = append(arrivals, time.Now())
		case "response.completed":
			final = ev.Response.OutputText()
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	want := strings.Join(streamWords, "")
	if first != "response.created" || text != want || final != want {
		t.Fatalf("first event %q, deltas %q, completed %q; want response.created, %q twice", first, text, final, want)
	}
	if len(arrivals) != len(streamWords) {
		t.Fatalf("%d deltas, want %d", len(arrivals), len(streamWords))
	}
	if spread, min := arrivals[len(arrivals)-1].Sub(arrivals[0]), time.Duration(len(streamWords)-1)*streamDelay*3/4; spread < min {
		t.Errorf("first and last delta arrived %v apart, want >= %v: the stream was buffered", spread, min)
	}
}

// TestGoSDKResponsesCutStreamRaises: a stream the upstream breaks off after
// its first delta ends with the proxy's error event, which openai-go
// raises as an error (never a silent, clean end).
func TestGoSDKResponsesCutStreamRaises(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	stream := client.Responses.NewStreaming(ctx(t), responses.ResponseNewParams{
		Model: modelAlias,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("please " + cutWord)},
	})
	defer stream.Close()
	deltas := 0
	for stream.Next() {
		if stream.Current().Type == "response.output_text.delta" {
			deltas++
		}
	}
	err := stream.Err()
	if err == nil || !strings.Contains(err.Error(), "stream_interrupted") || deltas != 1 {
		t.Fatalf("after %d deltas, err = %v; want an error naming stream_interrupted after 1", deltas, err)
	}
}
