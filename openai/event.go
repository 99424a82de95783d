package openai

import "switchyard/sse"

// Event is what the proxy reads of one raw server-sent event of a chat
// completion stream.
type Event struct {
	// Data is the event's data (its data lines joined), nil for an event
	// without any (a comment, a keep-alive).
	Data []byte
	// IsData reports a data event.
	IsData bool
	// Done is the "[DONE]" terminator.
	Done bool
	// ErrorFrame is an "event: error" frame, which openai-python raises on
	// whatever its data holds.
	ErrorFrame bool
	// Chunk is the chunk view of Data (a data event other than [DONE]).
	Chunk Chunk
}

// ReadEvent reads a raw event, as sse.Reader returns it.
func ReadEvent(raw []byte) Event {
	var e Event
	e.Data, e.IsData = sse.Data(raw)
	e.ErrorFrame = string(sse.EventType(raw)) == "error"
	switch {
	case !e.IsData:
	case sse.IsDone(e.Data):
		e.Done = true
	default:
		e.Chunk = ReadChunk(e.Data)
	}
	return e
}

// Failed reports whether the event fails the stream: an "event: error"
// frame, or a chunk carrying an error.
func (e *Event) Failed() bool {
	return e.ErrorFrame || (e.IsData && !e.Done && e.Chunk.Error)
}
