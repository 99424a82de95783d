package upstream

import (
	"bytes"
	"encoding/json"
	"strings"

	"switchyard/policy"
)

// Classify maps an upstream's HTTP answer to what the policy does with it:
//
//	2xx                                         OK
//	429; 413 whose message mentions "tokens per" RateLimited (quota cooldown)
//	402 (HuggingFace credits exhausted)          QuotaExhausted
//	401, 403                                     KeyRejected
//	404; other 413; 400 context_length_exceeded  NotServed (fail over, no penalty)
//	498 (Groq capacity), 408, 499, 5xx, others    Failure
//	other 4xx                                    ClientError (returned as is)
func Classify(status int, body []byte) policy.Outcome {
	switch {
	case status >= 200 && status < 300:
		return policy.OK
	case status == 429:
		return policy.RateLimited
	case status == 402:
		return policy.QuotaExhausted
	case status == 401 || status == 403:
		return policy.KeyRejected
	case status == 404:
		return policy.NotServed
	case status == 413:
		if strings.Contains(strings.ToLower(ErrorMessage(body)), "tokens per") {
			return policy.RateLimited
		}
		return policy.NotServed
	case status == 400:
		if errorCode(body) == "context_length_exceeded" {
			return policy.NotServed
		}
		return policy.ClientError
	case status == 498, status == 408, status == 499:
		// Groq capacity, a timeout upstream, Groq's "request cancelled":
		// the upstream's trouble, not the request's.
		return policy.Failure
	case status >= 400 && status < 500:
		return policy.ClientError
	default:
		return policy.Failure
	}
}

// errorBody covers OpenAI's {"error":{...}} and HuggingFace's
// {"error":"text"}.
type errorBody struct {
	Error json.RawMessage `json:"error"`
}

type errorObject struct {
	Message string          `json:"message"`
	Type    string          `json:"type"`
	Param   json.RawMessage `json:"param"`
	Code    json.RawMessage `json:"code"`
}

func parseError(body []byte) (obj errorObject, isObject, ok bool) {
	var eb errorBody
	if json.Unmarshal(body, &eb) != nil || len(eb.Error) == 0 || string(eb.Error) == "null" {
		return obj, false, false
	}
	if eb.Error[0] == '"' {
		var s string
		if json.Unmarshal(eb.Error, &s) != nil {
			return obj, false, false
		}
		obj.Message = s
		return obj, false, true
	}
	if json.Unmarshal(eb.Error, &obj) != nil {
		return obj, false, false
	}
	return obj, true, true
}

// ErrorMessage returns the message of an error body in OpenAI's or
// HuggingFace's shape, or "" when body is neither.
func ErrorMessage(body []byte) string {
	obj, _, ok := parseError(body)
	if !ok {
		return ""
	}
	return obj.Message
}

func errorCode(body []byte) string {
	obj, _, ok := parseError(body)
	if !ok || len(obj.Code) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(obj.Code, &s) != nil {
		return string(obj.Code)
	}
	return s
}

// IsOpenAIError reports whether body is already an OpenAI-shaped error
// ({"error":{"message":...}}).
func IsOpenAIError(body []byte) bool {
	_, isObject, ok := parseError(body)
	return ok && isObject
}

// IsErrorEvent reports whether an SSE event's data is an in-band error
// object ({"error": {...}} or {"error": "..."}), as vLLM and others send
// inside a 200 stream.
func IsErrorEvent(data []byte) bool {
	if !bytes.Contains(data, []byte(`"error"`)) {
		return false
	}
	_, _, ok := parseError(data)
	return ok
}
