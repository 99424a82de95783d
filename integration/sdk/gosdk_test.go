package sdk

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"switchyard/integration/testproc"
)

// newClient is the one-line change an app makes: the base URL points at the
// proxy, which holds the real keys. Retries are off so every call is exactly
// one request.
func newClient(p *testproc.Proxy) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(p.URL+"/v1"),
		option.WithAPIKey("unused"),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(30*time.Second),
	)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestGoSDKChatCompletion(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	var raw *http.Response
	resp, err := client.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{
		Model:    modelAlias,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi (go plain)")},
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("Chat.Completions.New: %v", err)
	}
	if len(resp.Choices) != 1 {
		t.Fatalf("choices = %d, want 1: %s", len(resp.Choices), resp.RawJSON())
	}
	if got := resp.Choices[0].Message.Content; got != plainAnswer {
		t.Errorf("content = %q, want %q", got, plainAnswer)
	}
	if resp.Choices[0].FinishReason != "stop" {
		t.Errorf("finish_reason = %q, want stop", resp.Choices[0].FinishReason)
	}
	if resp.Model != upstreamModel {
		t.Errorf("model = %q, want the upstream's %q", resp.Model, upstreamModel)
	}
	if u := resp.Usage; u.PromptTokens != 12 || u.CompletionTokens != 9 || u.TotalTokens != 21 {
		t.Errorf("usage = %d/%d/%d, want 12/9/21", u.PromptTokens, u.CompletionTokens, u.TotalTokens)
	}
	if got := raw.Header.Get("X-Upstream"); got != upstreamName {
		t.Errorf("X-Upstream = %q, want %q", got, upstreamName)
	}
}

func TestGoSDKStreaming(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	stream := client.Chat.Completions.NewStreaming(ctx(t), openai.ChatCompletionNewParams{
		Model:    modelAlias,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Count to five (go stream)")},
	})
	defer stream.Close()

	var (
		text     strings.Builder
		arrivals []time.Time // one per chunk with content
		acc      openai.ChatCompletionAccumulator
		finish   string
	)
	for stream.Next() {
		chunk := stream.Current()
		acc.AddChunk(chunk)
		for _, c := range chunk.Choices {
			if c.Delta.Content != "" {
				text.WriteString(c.Delta.Content)
				arrivals = append(arrivals, time.Now())
			}
			if c.FinishReason != "" {
				finish = c.FinishReason
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	want := strings.Join(streamWords, "")
	if text.String() != want {
		t.Errorf("streamed text = %q, want %q", text.String(), want)
	}
	if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != want {
		t.Errorf("accumulated completion = %s", acc.RawJSON())
	}
	if finish != "stop" {
		t.Errorf("finish_reason = %q, want stop", finish)
	}
	if len(arrivals) != len(streamWords) {
		t.Fatalf("got %d content chunks, want %d (one per upstream event)", len(arrivals), len(streamWords))
	}
	// The upstream pauses streamDelay before every event: relayed event by
	// event, the first delta reaches the SDK well before the last one.
	spread := arrivals[len(arrivals)-1].Sub(arrivals[0])
	if min := time.Duration(len(streamWords)-1) * streamDelay * 3 / 4; spread < min {
		t.Errorf("first and last delta arrived %v apart, want ≥ %v: the stream was buffered", spread, min)
	}
}

func TestGoSDKUpstreamError(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	_, err := client.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{
		Model:    modelAlias,
		N:        openai.Int(2),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi twice (go)")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v (%T), want *openai.Error", err, err)
	}
	if apiErr.StatusCode != 400 {
		t.Errorf("StatusCode = %d, want 400", apiErr.StatusCode)
	}
	if apiErr.Message != badRequestMessage {
		t.Errorf("Message = %q, want %q", apiErr.Message, badRequestMessage)
	}
	if apiErr.Type != "invalid_request_error" {
		t.Errorf("Type = %q, want invalid_request_error", apiErr.Type)
	}
}

func TestGoSDKUnknownModel(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	_, err := client.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{
		Model:    unknownModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi (go unknown model)")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v (%T), want *openai.Error", err, err)
	}
	if apiErr.StatusCode != 404 {
		t.Errorf("StatusCode = %d, want 404", apiErr.StatusCode)
	}
	if apiErr.Code != "model_not_found" {
		t.Errorf("Code = %q, want model_not_found", apiErr.Code)
	}
	if !strings.Contains(apiErr.Message, unknownModel) {
		t.Errorf("Message = %q, want it to name %q", apiErr.Message, unknownModel)
	}
	// The streaming call surfaces the same error before any event.
	stream := client.Chat.Completions.NewStreaming(ctx(t), openai.ChatCompletionNewParams{
		Model:    unknownModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi (go unknown model, stream)")},
	})
	defer stream.Close()
	if stream.Next() {
		t.Fatalf("stream yielded a chunk for an unknown model: %s", stream.Current().RawJSON())
	}
	if !errors.As(stream.Err(), &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Errorf("stream err = %v, want a 404 model_not_found *openai.Error", stream.Err())
	}
}

func TestGoSDKModelsList(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	page, err := client.Models.List(ctx(t))
	if err != nil {
		t.Fatalf("Models.List: %v", err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.OwnedBy == "" || m.Created == 0 {
			t.Errorf("model entry %s", m.RawJSON())
		}
	}
	want := []string{otherAlias, modelAlias, embeddingModel, audioAlias}
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("model ids = %v, want %v", ids, want)
	}
	// The auto-pager must stop after the single page.
	n := 0
	iter := client.Models.ListAutoPaging(ctx(t))
	for iter.Next() {
		n++
	}
	if err := iter.Err(); err != nil || n != len(want) {
		t.Errorf("ListAutoPaging: %d models, err %v; want %d, nil", n, err, len(want))
	}
	// models.retrieve: the listed entry, or a 404 model_not_found.
	m, err := client.Models.Get(ctx(t), modelAlias)
	if err != nil || m.ID != modelAlias || m.Object != "model" {
		t.Errorf("Models.Get(%q) = %+v, %v", modelAlias, m, err)
	}
	_, err = client.Models.Get(ctx(t), "no-such-model")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Errorf("Models.Get(no-such-model) err = %v, want a 404 model_not_found", err)
	}
}
