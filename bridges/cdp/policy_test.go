package cdp

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// With AllowRequest, what a page loads by itself is held to it: a link, a
// redirect and an image to a refused origin never reach it, and a state
// restore still works.
func TestAllowRequestHoldsThePage(t *testing.T) {
	var hits atomic.Int64
	blocked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, `<html><title>Blocked</title></html>`)
	}))
	defer blocked.Close()
	allowed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, blocked.URL+"/redirected", http.StatusFound)
		case "/page":
			fmt.Fprint(w, `<html><head><title>Plain</title></head></html>`)
		default:
			fmt.Fprintf(w, `<html><head><title>Allowed</title></head><body><img src="%s/pixel.png">
<a id="out" href="%s/clicked">out</a><script>localStorage.setItem("k", "v")</script></body></html>`, blocked.URL, blocked.URL)
		}
	}))
	defer allowed.Close()
	b := newTestBrowser(t, func(c *Config) {
		c.AllowRequest = func(url string) error {
			if strings.HasPrefix(url, blocked.URL) {
				return fmt.Errorf("%s: %w", url, errdefs.ErrPermissionDenied)
			}
			return nil
		}
	})
	ctx := testContext(t)
	s := mustOpen(ctx, t, b)
	if _, err := s.Navigate(ctx, allowed.URL); err != nil {
		t.Fatal(err)
	}
	if err := s.Click(ctx, "", "#out"); err != nil {
		t.Fatal(err)
	}
	_, _ = s.Navigate(ctx, allowed.URL+"/away") // the redirect fails
	if v, err := s.Evaluate(ctx, `document.title`); err != nil || string(v) == `"Blocked"` {
		t.Fatalf("after a link and a redirect to a refused origin the page is %s (%v)", v, err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the refused origin was reached %d times", n)
	}
	blockedSeen := false
	for _, e := range s.Network() {
		if strings.HasPrefix(e.URL, blocked.URL) && strings.Contains(e.Error, "BLOCKED_BY_CLIENT") {
			blockedSeen = true
		}
	}
	if !blockedSeen {
		t.Fatalf("the network log shows no blocked request: %v", s.Network())
	}
	// A state restore answers its own requests under the policy.
	st, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.Open(ctx, OpenOptions{State: &st})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Navigate(ctx, allowed.URL+"/page"); err != nil {
		t.Fatal(err)
	}
	if v, err := other.Evaluate(ctx, `localStorage.getItem("k")`); err != nil || string(v) != `"v"` {
		t.Fatalf("restored localStorage under the policy: %s %v", v, err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the refused origin was reached %d times", n)
	}
}
