package proxy

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestErrorEvent(t *testing.T) {
	ev := errorEvent("upstream x failed mid-stream", codeStreamInterrupted)
	want := `data: {"error":{"message":"upstream x failed mid-stream","type":"server_error","param":null,"code":"stream_interrupted"}}` + "\n\n"
	if string(ev) != want {
		t.Errorf("got %q", ev)
	}
}

func TestParseCacheControl(t *testing.T) {
	cases := []struct {
		in   string
		want cacheControl
	}{
		{"", cacheControl{}},
		{"no-cache", cacheControl{noCache: true}},
		{"No-Store", cacheControl{noStore: true}},
		{"max-age=60", cacheControl{maxAge: time.Minute, hasMaxAge: true}},
		{`max-age="5", no-cache`, cacheControl{noCache: true, maxAge: 5 * time.Second, hasMaxAge: true}},
		{"max-age=-1", cacheControl{}},
		{"max-age=abc", cacheControl{}},
		{"only-if-cached", cacheControl{onlyIfCached: true}},
		{" no-store , max-age=0 ", cacheControl{noStore: true, hasMaxAge: true}},
	}
	for _, tc := range cases {
		if got := parseCacheControl([]byte(tc.in)); got != tc.want {
			t.Errorf("%q: got %+v want %+v", tc.in, got, tc.want)
		}
	}
}

func TestValidRequestID(t *testing.T) {
	cases := map[string]bool{
		"abc-123_x.y:z":           true,
		"":                        false,
		"has space":               false,
		"new\nline":               false,
		string(make([]byte, 129)): false,
		"é":                       false,
	}
	for in, want := range cases {
		if got := validRequestID([]byte(in)); got != want {
			t.Errorf("%q: got %v", in, got)
		}
	}
}

func TestErrorHandlerShapes(t *testing.T) {
	cases := []struct {
		err    error
		status int
	}{
		{fasthttp.ErrBodyTooLarge, 413},
		{&fasthttp.ErrSmallBuffer{}, 431},
		{errTest("garbage"), 400},
	}
	for _, tc := range cases {
		var ctx fasthttp.RequestCtx
		ErrorHandler(&ctx, tc.err)
		if ctx.Response.StatusCode() != tc.status {
			t.Errorf("%v: status %d", tc.err, ctx.Response.StatusCode())
		}
		var v map[string]map[string]any
		if json.Unmarshal(ctx.Response.Body(), &v) != nil || v["error"]["message"] == "" {
			t.Errorf("%v: body %s", tc.err, ctx.Response.Body())
		}
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }
