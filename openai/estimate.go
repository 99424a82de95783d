package openai

import "switchyard/jsonscan"

// maxTokensKeys are the members that cap a completion's length: the
// current name first, then the one it replaced.
var maxTokensKeys = []string{"max_completion_tokens", "max_tokens"}

// MaxTokens returns the completion length the request caps itself at:
// max_completion_tokens, else max_tokens; 0 when it sets neither to a
// positive integer (or the body is not a JSON object). It is what a
// token quota reserves for the answer before the call.
func MaxTokens(body []byte) int64 {
	var sp [2]jsonscan.Span
	if object, _ := jsonscan.Members(body, maxTokensKeys, sp[:]); !object {
		return 0
	}
	for _, s := range sp {
		if s.Found() {
			if n := intValue(body[s.Start:s.End]); n > 0 {
				return n
			}
		}
	}
	return 0
}
