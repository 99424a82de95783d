package openai

// Endpoint names an API endpoint by its path under /v1, as
// upstreams[].endpoints lists it and as the upstream is sent it.
type Endpoint string

// The endpoints the proxy serves.
const (
	Chat           Endpoint = "chat/completions"
	Completions    Endpoint = "completions" // legacy text completions
	Responses      Endpoint = "responses"
	Embeddings     Endpoint = "embeddings"
	Transcriptions Endpoint = "audio/transcriptions"
	Translations   Endpoint = "audio/translations"
)

// Endpoints lists every endpoint the proxy serves, in a stable order.
var Endpoints = []Endpoint{Chat, Completions, Responses, Embeddings, Transcriptions, Translations}

// Known reports whether e is one of Endpoints.
func (e Endpoint) Known() bool {
	for _, k := range Endpoints {
		if e == k {
			return true
		}
	}
	return false
}

// Multipart reports whether e's requests are multipart/form-data uploads
// (audio) rather than JSON bodies.
func (e Endpoint) Multipart() bool { return e == Transcriptions || e == Translations }

// Streams reports whether e answers "stream": true with server-sent
// events.
func (e Endpoint) Streams() bool { return e == Chat || e == Completions || e == Responses }

// TypedEvents reports whether e's streams are typed events (each data
// object has a "type"; ReadResponseEvent reads them), not chat chunks:
// Responses streams, and the transcript streams of the audio endpoints
// (stream=true: transcript.text.delta …, transcript.text.done;
// https://platform.openai.com/docs/api-reference/audio/transcript-text-delta-event).
func (e Endpoint) TypedEvents() bool { return e == Responses || e.Multipart() }

// required is the top-level member a JSON request to e must have besides
// model, and the JSON type its value must start with ("" for any), for
// ParseRequest's "missing parameter" answer.
func (e Endpoint) required() (name string, start byte) {
	switch e {
	case Chat:
		return "messages", '['
	case Completions:
		return "prompt", 0
	case Embeddings:
		return "input", 0
	}
	return "", 0 // responses: input is optional (previous_response_id, prompt templates)
}
