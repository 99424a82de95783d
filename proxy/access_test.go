package proxy

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"switchyard/cachekey"
)

func TestScopedKey(t *testing.T) {
	cases := []struct{ key, ns, scope, want string }{
		{"switchyard:v1:abcd", "switchyard", "", "switchyard:v1:abcd"},
		{"switchyard:v1:abcd", "switchyard", "0123456789abcdef", "switchyard:0123456789abcdef:v1:abcd"},
		{"", "switchyard", "0123456789abcdef", ""},
		{"other:v1:abcd", "switchyard", "0123456789abcdef", "other:v1:abcd"},
	}
	for _, tc := range cases {
		if got := scopedKey(tc.key, tc.ns, tc.scope); got != tc.want {
			t.Errorf("scopedKey(%q, %q, %q) = %q, want %q", tc.key, tc.ns, tc.scope, got, tc.want)
		}
	}
	// The longest namespace still makes a legal memcached key, and scopes
	// never collide with each other or the unscoped key.
	ns := strings.Repeat("n", 64)
	derived, err := cachekey.Derive(ns, []byte(`{"model":"m","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := scopedKey(derived, ns, keyID("key-a")), scopedKey(derived, ns, keyID("key-b"))
	if len(a) > 250 || strings.ContainsAny(a, " \t\r\n\x00") || a == b || a == derived {
		t.Errorf("scoped keys %q %q (unscoped %q)", a, b, derived)
	}
	text := scopedKey(cachekey.FromText(ns, "name"), ns, keyID("key-a"))
	if text == a || !strings.HasPrefix(text, ns+":"+keyID("key-a")+":v1:") {
		t.Errorf("scoped text key %q", text)
	}
}

func TestKeyID(t *testing.T) {
	a, b := keyID("client-key-aaaa"), keyID("client-key-bbbb")
	if len(a) != 16 || strings.Trim(a, "0123456789abcdef") != "" || a == b || a != keyID("client-key-aaaa") {
		t.Errorf("keyID: %q %q", a, b)
	}
	if strings.Contains(a, "client") || strings.Contains(a, "aaaa") {
		t.Errorf("keyID %q shows the key", a)
	}
}

// TestAuthorizedScope: the scope is the id of the key the client sent,
// whichever of the keys it is.
func TestAuthorizedScope(t *testing.T) {
	s, _ := newStatusServer(t)
	st := s.st.Load()
	for _, tc := range []struct {
		auth, scope string
		ok          bool
	}{
		{"Bearer " + statusToken, keyID(statusToken), true},
		{"Bearer other-inbound-key-0", keyID("other-inbound-key-0"), true},
		{"Bearer nope", "", false},
		{"", "", false},
	} {
		var ctx fasthttp.RequestCtx
		if tc.auth != "" {
			ctx.Request.Header.Set("Authorization", tc.auth)
		}
		scope, ok := s.authorized(&ctx, st)
		if scope != tc.scope || ok != tc.ok {
			t.Errorf("%q: scope %q ok %v, want %q %v", tc.auth, scope, ok, tc.scope, tc.ok)
		}
	}
	// Without auth.keys: one scope, everyone allowed.
	var ctx fasthttp.RequestCtx
	if scope, ok := s.authorized(&ctx, &state{}); scope != "" || !ok {
		t.Errorf("no auth.keys: %q %v", scope, ok)
	}
}
