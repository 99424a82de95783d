package openai

import (
	"encoding/json"
	"math"
	"strconv"
)

// Error types of OpenAI's error object, as the proxy answers with them.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuth           = "authentication_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
)

// Shape is the dialect of an error body.
type Shape int

const (
	// NoShape: the body is not an error body any dialect speaks.
	NoShape Shape = iota
	// ObjectShape is OpenAI's {"error":{"message","type","param","code"}},
	// which Groq and the HF router's providers mostly send.
	ObjectShape
	// StringShape is HuggingFace's {"error":"text"}, sometimes with
	// "estimated_time" (a model loading) or TGI's "error_type".
	StringShape
)

// ErrorInfo is an upstream error body, read in any dialect.
type ErrorInfo struct {
	Shape   Shape
	Message string
	// Type is error.type (OpenAI shape) or TGI's error_type.
	Type string
	// Param is error.param, "" when null or absent.
	Param string
	// Code is error.code as text ("" when null or absent; a number is its
	// digits).
	Code string
	// EstimatedTime is HuggingFace's estimated_time in seconds (a model
	// loading), 0 when absent.
	EstimatedTime float64
}

// ParseError reads an error body in OpenAI's, HuggingFace's or TGI's
// shape. ok is false when body is none of them; an error member that is
// null is no error.
func ParseError(body []byte) (e ErrorInfo, ok bool) {
	var eb struct {
		Error         json.RawMessage `json:"error"`
		ErrorType     string          `json:"error_type"`
		EstimatedTime float64         `json:"estimated_time"`
	}
	if json.Unmarshal(body, &eb) != nil || len(eb.Error) == 0 || string(eb.Error) == "null" {
		return e, false
	}
	if eb.Error[0] == '"' {
		if json.Unmarshal(eb.Error, &e.Message) != nil {
			return e, false
		}
		e.Shape, e.Type = StringShape, eb.ErrorType
		if eb.EstimatedTime > 0 && !math.IsInf(eb.EstimatedTime, 0) {
			e.EstimatedTime = eb.EstimatedTime
		}
		return e, true
	}
	var obj struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Param   json.RawMessage `json:"param"`
		Code    json.RawMessage `json:"code"`
	}
	if eb.Error[0] != '{' || json.Unmarshal(eb.Error, &obj) != nil {
		return e, false
	}
	e.Shape, e.Message, e.Type = ObjectShape, obj.Message, obj.Type
	e.Param, e.Code = text(obj.Param), text(obj.Code)
	return e, true
}

// text returns a JSON scalar as text: a string unquoted, a number or bool
// as written, "" for null, absent or a container.
func text(v json.RawMessage) string {
	if len(v) == 0 || string(v) == "null" || v[0] == '{' || v[0] == '[' {
		return ""
	}
	if v[0] == '"' {
		var s string
		if json.Unmarshal(v, &s) != nil {
			return ""
		}
		return s
	}
	return string(v)
}

// errorObject is OpenAI's error object; an empty param or code is null.
type errorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// ErrorBody returns {"error":{"message","type","param","code"}}, with
// param and code null when empty (OpenAI's own answers never say "").
func ErrorBody(message, typ, param, code string) []byte {
	e := errorObject{Message: message, Type: typ}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	b, err := json.Marshal(struct {
		Error errorObject `json:"error"`
	}{e})
	if err != nil {
		panic("BUG: marshal error object: " + err.Error())
	}
	return b
}

// ErrorEvent returns an SSE event carrying an error object: how a stream
// fails after its first event. openai-python and openai-node raise an
// APIError on any event whose data has an "error" member.
func ErrorEvent(message, typ, code string) []byte {
	b := append([]byte("data: "), ErrorBody(message, typ, "", code)...)
	return append(b, "\n\n"...)
}

// TypeForStatus is the error type OpenAI uses for an HTTP status, for an
// upstream error body that names none.
func TypeForStatus(status int) string {
	switch {
	case status == 401 || status == 403:
		return TypeAuth
	case status == 429 || status == 402:
		return TypeRateLimit
	case status >= 500:
		return TypeServer
	}
	return TypeInvalidRequest
}

// StatusText is a message for an error body that carries none.
func StatusText(status int) string {
	return "upstream answered HTTP " + strconv.Itoa(status)
}
