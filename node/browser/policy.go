package browser

import (
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// OriginPolicy says which origins a session may load. A pattern is an
// origin ("https://shop.example:8443"), a host ("shop.example", any scheme
// and port) or a host glob ("*.example.com"). Blocked wins over allowed;
// no allowed pattern allows every origin. Only http, https and about:blank
// are ever loaded: file:, chrome: and the rest would read the peer's own
// machine.
type OriginPolicy struct {
	Allowed []string
	Blocked []string
}

// Check says why u may not be loaded, or nil.
func (p OriginPolicy) Check(raw string) error {
	if raw == "about:blank" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("URL %q: want an absolute http or https URL: %w", raw, errdefs.ErrInvalid)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("URL %q: scheme %q is never loaded (only http and https): %w", raw, u.Scheme, errdefs.ErrPermissionDenied)
	}
	if u.Host == "" {
		return fmt.Errorf("URL %q: no host: %w", raw, errdefs.ErrInvalid)
	}
	for _, pat := range p.Blocked {
		if originMatches(pat, u) {
			return fmt.Errorf("URL %q: origin blocked by browser.blocked_origins (%q): %w", raw, pat, errdefs.ErrPermissionDenied)
		}
	}
	if len(p.Allowed) == 0 {
		return nil
	}
	for _, pat := range p.Allowed {
		if originMatches(pat, u) {
			return nil
		}
	}
	return fmt.Errorf("URL %q: origin not in browser.allowed_origins: %w", raw, errdefs.ErrPermissionDenied)
}

// Empty says whether the policy allows every origin.
func (p OriginPolicy) Empty() bool { return len(p.Allowed) == 0 && len(p.Blocked) == 0 }

// CheckRequest says why a page may not make a request: the same origins
// as Check, over http and WebSocket; data:, blob: and about: stay inside
// the page. Anything else (file:, chrome:) is refused.
func (p OriginPolicy) CheckRequest(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("URL %q: %v: %w", raw, err, errdefs.ErrInvalid)
	}
	switch u.Scheme {
	case "data", "blob", "about":
		return nil
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	return p.Check(u.String())
}

// ValidatePattern says what is wrong with an origin pattern.
func ValidatePattern(pat string) error {
	if pat == "" {
		return fmt.Errorf("origin pattern: empty: %w", errdefs.ErrInvalid)
	}
	if strings.Contains(pat, "://") {
		u, err := url.Parse(pat)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("origin pattern %q: want scheme://host[:port]: %w", pat, errdefs.ErrInvalid)
		}
		return nil
	}
	if _, err := path.Match(pat, ""); err != nil {
		return fmt.Errorf("origin pattern %q: %v: %w", pat, err, errdefs.ErrInvalid)
	}
	return nil
}

func originMatches(pat string, u *url.URL) bool {
	host := strings.ToLower(u.Hostname())
	if strings.Contains(pat, "://") {
		p, err := url.Parse(pat)
		if err != nil {
			return false
		}
		return strings.EqualFold(p.Scheme, u.Scheme) && strings.EqualFold(p.Hostname(), host) && portOf(p) == portOf(u)
	}
	pat = strings.ToLower(pat)
	if ok, _ := path.Match(pat, host); ok {
		return true
	}
	// "*.example.com" covers example.com itself too.
	return strings.HasPrefix(pat, "*.") && host == pat[2:]
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}
