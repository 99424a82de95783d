package upstream

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"switchyard/verdict"
)

func TestParseReset(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"2m59.56s", 2*time.Minute + 59560*time.Millisecond, true},
		{"7.66s", 7660 * time.Millisecond, true},
		{"12ms", 12 * time.Millisecond, true},
		{"6m0s", 6 * time.Minute, true},
		{"1h0m0s", time.Hour, true},
		{"0s", 0, true},
		{" 7.66s ", 7660 * time.Millisecond, true},
		{"1.5", 1500 * time.Millisecond, true},
		{"30", 30 * time.Second, true},
		{"0", 0, true},
		{"", 0, false},
		{"   ", 0, false},
		{"abc", 0, false},
		{"-1s", 0, false},
		{"-1.5", 0, false},
		{"1e9", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"7.66 s", 0, false},
	}
	for _, tc := range cases {
		got, ok := ParseReset(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseReset(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	cases := []struct {
		name      string
		ms, after string
		want      time.Duration
		ok        bool
	}{
		{"ms wins over seconds", "1500", "2", 1500 * time.Millisecond, true},
		{"fractional ms", "2.5", "", 2500 * time.Microsecond, true},
		{"zero ms", "0", "10", 0, true},
		{"seconds", "", "2", 2 * time.Second, true},
		{"fractional seconds", "", "1.5", 1500 * time.Millisecond, true},
		{"seconds with spaces", "", " 3 ", 3 * time.Second, true},
		{"bad ms falls back", "soon", "3", 3 * time.Second, true},
		{"negative ms falls back", "-5", "1", time.Second, true},
		{"huge ms falls back", "1e12", "1", time.Second, true},
		{"HTTP date", "", date(30 * time.Second), 30 * time.Second, true},
		{"HTTP date in the past", "", date(-time.Minute), 0, true},
		{"RFC 850 date", "", now.Add(time.Minute).Format(time.RFC850), time.Minute, true},
		{"ANSI C date", "", now.Add(2 * time.Hour).Format(time.ANSIC), 2 * time.Hour, true},
		{"nothing", "", "", 0, false},
		{"garbage", "", "later", 0, false},
		{"negative seconds", "", "-1", 0, false},
		{"NaN seconds", "NaN", "NaN", 0, false},
		{"huge seconds", "", "1e10", 0, false},
		{"date without zone", "", "2026-03-14 15:09:56", 0, false},
	}
	for _, tc := range cases {
		got, ok := ParseRetryAfter(tc.ms, tc.after, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: ParseRetryAfter(%q, %q) = %v, %v; want %v, %v", tc.name, tc.ms, tc.after, got, ok, tc.want, tc.ok)
		}
	}
}

// groqHeaders is the header set Groq sends on a 429 (wire.md [G2]); all but
// retry-after are on every response.
var groqHeaders = [][2]string{
	{"retry-after", "2"},
	{"x-ratelimit-limit-requests", "14400"},
	{"x-ratelimit-limit-tokens", "18000"},
	{"x-ratelimit-remaining-requests", "14370"},
	{"x-ratelimit-remaining-tokens", "17997"},
	{"x-ratelimit-reset-requests", "2m59.56s"},
	{"x-ratelimit-reset-tokens", "7.66s"},
}

var groqRateLimit = verdict.RateLimit{
	LimitRequests:     14400,
	RemainingRequests: 14370,
	ResetRequests:     2*time.Minute + 59560*time.Millisecond,
	LimitTokens:       18000,
	RemainingTokens:   17997,
	ResetTokens:       7660 * time.Millisecond,
	RetryAfter:        2 * time.Second,
	Known:             true,
}

func TestParseRateLimitGroq(t *testing.T) {
	now := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)

	var h fasthttp.ResponseHeader
	for _, kv := range groqHeaders {
		h.Set(kv[0], kv[1])
	}
	if got := ParseRateLimit(&h, now); got != groqRateLimit {
		t.Errorf("ParseRateLimit(Set headers) =\n%+v\nwant\n%+v", got, groqRateLimit)
	}

	// The same headers read off the wire, in the spellings servers use.
	var raw strings.Builder
	raw.WriteString("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n")
	for i, kv := range groqHeaders {
		k := kv[0]
		if i%2 == 1 {
			k = http.CanonicalHeaderKey(k)
		}
		raw.WriteString(k + ": " + kv[1] + "\r\n")
	}
	raw.WriteString("Content-Length: 0\r\n\r\n")
	var wire fasthttp.ResponseHeader
	if err := wire.Read(bufio.NewReader(strings.NewReader(raw.String()))); err != nil {
		t.Fatal(err)
	}
	if got := ParseRateLimit(&wire, now); got != groqRateLimit {
		t.Errorf("ParseRateLimit(wire headers) =\n%+v\nwant\n%+v", got, groqRateLimit)
	}
}

func TestParseRateLimit(t *testing.T) {
	now := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		headers map[string]string
		want    verdict.RateLimit
	}{
		{"none", nil, verdict.RateLimit{}},
		{"unrelated headers", map[string]string{"x-request-id": "req_1", "content-type": "application/json"}, verdict.RateLimit{}},
		{"all garbage", map[string]string{
			"x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-requests": "-1",
			"x-ratelimit-reset-requests": "soon", "x-ratelimit-limit-tokens": "1.5",
			"retry-after": "later", "retry-after-ms": "x",
		}, verdict.RateLimit{}},
		{"remaining zero is known", map[string]string{"x-ratelimit-remaining-tokens": "0"}, verdict.RateLimit{Known: true}},
		{"spaces", map[string]string{"x-ratelimit-limit-tokens": " 6000 ", "x-ratelimit-remaining-tokens": "5990 "},
			verdict.RateLimit{LimitTokens: 6000, RemainingTokens: 5990, Known: true}},
		// A limit without its remaining count would read as exhausted.
		{"limit without remaining", map[string]string{"x-ratelimit-limit-tokens": "6000", "x-ratelimit-limit-requests": "14400"}, verdict.RateLimit{}},
		{"limit with a garbage remaining", map[string]string{"x-ratelimit-limit-requests": "14400", "x-ratelimit-remaining-requests": "n/a"}, verdict.RateLimit{}},
		{"retry-after-ms only", map[string]string{"retry-after-ms": "250"}, verdict.RateLimit{RetryAfter: 250 * time.Millisecond, Known: true}},
		{"retry-after date", map[string]string{"retry-after": now.Add(90 * time.Second).Format(http.TimeFormat)}, verdict.RateLimit{RetryAfter: 90 * time.Second, Known: true}},
		{"OpenAI reset formats", map[string]string{"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"},
			verdict.RateLimit{ResetRequests: time.Second, ResetTokens: 6 * time.Minute, Known: true}},
	}
	for _, tc := range cases {
		var h fasthttp.ResponseHeader
		for k, v := range tc.headers {
			h.Set(k, v)
		}
		if got := ParseRateLimit(&h, now); got != tc.want {
			t.Errorf("%s: ParseRateLimit = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
