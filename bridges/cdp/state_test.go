package cdp

import (
	"errors"
	"testing"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// A state from a DAG is checked before anything of it reaches Chromium.
func TestStateValidate(t *testing.T) {
	good := Cookie{Name: "user", Value: "v", Domain: "127.0.0.1", Path: "/"}
	for _, tc := range []struct {
		name string
		st   State
		ok   bool
	}{
		{"empty", State{}, true},
		{"cookie and origin", State{Cookies: []Cookie{good}, Origins: []OriginStorage{{Origin: "https://shop.example:8443", LocalStorage: map[string]string{"k": "v"}}}}, true},
		{"domain cookie", State{Cookies: []Cookie{{Name: "a", Domain: ".example.com", Path: "/", SameSite: "Lax"}}}, true},
		{"IPv6 host", State{Cookies: []Cookie{{Name: "a", Domain: "[::1]", Path: "/"}}}, true},
		{"no name", State{Cookies: []Cookie{{Domain: "example.com", Path: "/"}}}, false},
		{"no domain", State{Cookies: []Cookie{{Name: "a", Path: "/"}}}, false},
		{"a URL as domain", State{Cookies: []Cookie{{Name: "a", Domain: "http://x/", Path: "/"}}}, false},
		{"relative path", State{Cookies: []Cookie{{Name: "a", Domain: "x", Path: "admin"}}}, false},
		{"bad same_site", State{Cookies: []Cookie{{Name: "a", Domain: "x", Path: "/", SameSite: "Sometimes"}}}, false},
		{"origin with a path", State{Origins: []OriginStorage{{Origin: "https://x/login"}}}, false},
		{"file origin", State{Origins: []OriginStorage{{Origin: "file://"}}}, false},
		{"javascript origin", State{Origins: []OriginStorage{{Origin: "javascript:alert(1)"}}}, false},
	} {
		err := tc.st.validate()
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, errdefs.ErrInvalid)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
