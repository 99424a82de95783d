package proxy

import "switchyard/openai"

// apiRoute is one API endpoint the handler serves: its path under /v1,
// the route label of its metrics and log lines, and whether its answers
// may be cached.
type apiRoute struct {
	ep    openai.Endpoint
	label string
	// cache: answers may be stored and served from the cache. Legacy
	// completions are passed through uncached.
	cache bool
	// keyTag separates this endpoint's cache keys from every other's
	// ("" for chat, whose keys predate the others): the same body sent to
	// two endpoints asks two different questions.
	keyTag string
}

// jsonRoutes are the JSON endpoints, by their path under /v1.
var jsonRoutes = map[string]*apiRoute{
	string(openai.Chat):        {ep: openai.Chat, label: routeChat, cache: true},
	string(openai.Completions): {ep: openai.Completions, label: routeCompletions},
	string(openai.Embeddings):  {ep: openai.Embeddings, label: routeEmbeddings, cache: true, keyTag: "embeddings"},
	// Responses: only stateless requests are cached (see responses.go).
	string(openai.Responses): {ep: openai.Responses, label: routeResponses, cache: true, keyTag: "responses"},
}

// apiPath returns the endpoint part of an API path: the path under /v1/
// (or under / for clients whose base URL has no /v1), "" for others.
func apiPath(path []byte) []byte {
	switch {
	case len(path) > 4 && string(path[:4]) == "/v1/":
		return path[4:]
	case len(path) > 1:
		return path[1:]
	}
	return nil
}
