// Package openai is Switchyard's one place of knowledge about the OpenAI
// wire format and the dialects real providers speak of it (Groq,
// HuggingFace's router, TGI): what the proxy reads of a request body, of a
// plain answer and of each stream chunk, the error body shapes, and the
// conversion between a stream and a plain answer.
//
// It is pure: no I/O, no HTTP types. Every reader is built on one scanner,
// [switchyard/jsonscan], which validates and locates members in one pass
// without decoding what it skips (a request's messages can be large; a
// stream has hundreds of chunks). Bytes are never re-encoded: where the
// proxy must change a body (the model alias, include_usage, a dropped
// param, a usage member the client did not ask for), the edit splices the
// original bytes.
//
// The package is shaped to take the Responses API next to chat
// completions: a request view and an event view per API, sharing the
// error shapes.
package openai
