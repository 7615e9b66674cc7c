package cdp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	cdpproto "github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/domstorage"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

const (
	// captureTimeout bounds the capture of a session's state after a
	// call; it takes a few milliseconds.
	captureTimeout = 2 * time.Second
	// maxOrigins bounds the origins a session remembers having visited.
	maxOrigins = 256
)

// State is what moves a logged-in session: cookies and the localStorage
// of each origin. It is JSON-serialisable.
type State struct {
	Cookies []Cookie        `json:"cookies"`
	Origins []OriginStorage `json:"origins"`
}

// Cookie is one cookie of a browser context.
type Cookie struct {
	Name     string  `json:"name"`
	Value    string  `json:"value"`
	Domain   string  `json:"domain"`
	Path     string  `json:"path"`
	Expires  float64 `json:"expires"` // seconds since the epoch; <= 0: a session cookie
	HTTPOnly bool    `json:"http_only"`
	Secure   bool    `json:"secure"`
	SameSite string  `json:"same_site"` // Strict, Lax, None or ""
}

// OriginStorage is the localStorage of one origin.
type OriginStorage struct {
	Origin       string            `json:"origin"`
	LocalStorage map[string]string `json:"local_storage"`
}

// validate says what in st cannot be restored; a State comes from a
// DAG, that is from anyone.
func (st State) validate() error {
	var errs []error
	for i, c := range st.Cookies {
		if c.Name == "" || c.Domain == "" || strings.ContainsAny(c.Domain, "/ ") || (c.Path != "" && !strings.HasPrefix(c.Path, "/")) {
			errs = append(errs, fmt.Errorf("cookie %d (%q): want a name, a domain and a path starting with /", i, c.Name))
		}
		switch c.SameSite {
		case "", "Strict", "Lax", "None":
		default:
			errs = append(errs, fmt.Errorf("cookie %d (%q): same_site %q: want Strict, Lax, None or nothing", i, c.Name, c.SameSite))
		}
	}
	for _, o := range st.Origins {
		if !validOrigin(o.Origin) {
			errs = append(errs, fmt.Errorf("origin %q: want http(s)://host[:port]", o.Origin))
		}
	}
	if len(errs) > 3 {
		errs = append(errs[:3], fmt.Errorf("and %d more", len(errs)-3))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("browser state: %w: %w", err, errdefs.ErrInvalid)
	}
	return nil
}

// clone is a deep copy of st.
func (st State) clone() State {
	out := State{Cookies: slices.Clone(st.Cookies)}
	for _, o := range st.Origins {
		out.Origins = append(out.Origins, OriginStorage{Origin: o.Origin, LocalStorage: maps.Clone(o.LocalStorage)})
	}
	return out
}

// setOrigin puts the localStorage of one origin into st.
func (st *State) setOrigin(origin string, items map[string]string) {
	for i := range st.Origins {
		if st.Origins[i].Origin == origin {
			st.Origins[i].LocalStorage = items
			return
		}
	}
	st.Origins = append(st.Origins, OriginStorage{Origin: origin, LocalStorage: items})
}

// validOrigin says whether o is an origin whose storage can be restored:
// http(s)://host[:port].
func validOrigin(o string) bool {
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Path == "" && u.RawQuery == ""
}

// State returns the session's cookies and the localStorage of every
// origin it visited: read from the page for origins loaded now, as last
// seen for the others.
func (s *Session) State(ctx context.Context) (State, error) {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return State{}, err
	}
	defer leave()
	return s.stateLocked(ctx)
}

// stateLocked reads the state; s.mu is held.
func (s *Session) stateLocked(ctx context.Context) (State, error) {
	cookies, err := s.cookies(ctx)
	if err != nil {
		return State{}, fmt.Errorf("browser state: %w", err)
	}
	s.state.Cookies = cookies
	s.originsMu.Lock()
	origins := slices.Collect(maps.Keys(s.origins))
	s.originsMu.Unlock()
	for _, o := range s.state.Origins {
		origins = append(origins, o.Origin)
	}
	sort.Strings(origins)
	for _, o := range slices.Compact(origins) {
		res, err := chromedp.Call(ctx, domstorage.GetDOMStorageItems, domstorage.GetDOMStorageItemsParams{
			StorageID: &domstorage.StorageID{SecurityOrigin: o, IsLocalStorage: true},
		})
		if err != nil {
			if ctx.Err() != nil {
				return State{}, fmt.Errorf("browser state: %w", err)
			}
			continue // no frame of the origin is loaded: keep what was seen
		}
		items := make(map[string]string, len(res.Entries))
		for _, e := range res.Entries {
			if len(e) == 2 {
				items[e[0]] = e[1]
			}
		}
		s.state.setOrigin(o, items)
	}
	return s.state.clone(), nil
}

// cookies reads the cookies of the session's browser context.
func (s *Session) cookies(ctx context.Context) ([]Cookie, error) {
	res, err := chromedp.CallBrowser(ctx, storage.GetCookies, storage.GetCookiesParams{BrowserContextID: s.ctxID})
	if err != nil {
		return nil, fmt.Errorf("read cookies: %w", err)
	}
	out := make([]Cookie, 0, len(res.Cookies))
	for _, c := range res.Cookies {
		exp := c.Expires
		if c.Session {
			exp = 0
		}
		out = append(out, Cookie{Name: c.Name, Value: c.Value, Domain: c.Domain, Path: c.Path, Expires: exp,
			HTTPOnly: c.HTTPOnly, Secure: c.Secure, SameSite: string(c.SameSite)})
	}
	return out, nil
}

// capture keeps the session's cookies and the localStorage of the page's
// origin, cheaply, so that a tab reopened after Chromium died gets them
// back. Errors leave the last state as it was. s.mu is held.
func (s *Session) capture(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, captureTimeout)
	defer cancel()
	// The cookies (at the browser) and the page's storage are read at
	// once: two round trips in the time of one.
	var cookies []Cookie
	var cookiesErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		cookies, cookiesErr = s.cookies(ctx)
	}()
	v, err := s.evalLocked(ctx, `(() => { try { return [location.origin, Object.entries(localStorage)]; } catch (e) { return null; } })()`)
	<-done
	if cookiesErr == nil {
		s.state.Cookies = cookies
	}
	if err != nil {
		return
	}
	var got []json.RawMessage
	if json.Unmarshal(v, &got) != nil || len(got) != 2 {
		return
	}
	var origin string
	var entries [][2]string
	if json.Unmarshal(got[0], &origin) != nil || json.Unmarshal(got[1], &entries) != nil || !validOrigin(origin) {
		return
	}
	items := make(map[string]string, len(entries))
	for _, e := range entries {
		items[e[0]] = e[1]
	}
	s.state.setOrigin(origin, items)
	s.visit(origin)
}

// visit notes an origin the session's pages loaded.
func (s *Session) visit(origin string) {
	if !validOrigin(origin) {
		return
	}
	s.originsMu.Lock()
	defer s.originsMu.Unlock()
	if s.origins == nil {
		s.origins = map[string]bool{}
	}
	if len(s.origins) < maxOrigins {
		s.origins[origin] = true
	}
}

// restoreBody is the page a restore loads on each origin in place of the
// site's, so that it can write the origin's localStorage without asking
// the site for anything.
const restoreBody = `<!doctype html><title></title>`

// restore puts st into the session's browser context: the cookies, and
// the localStorage of each origin, written from a blank page of the
// origin that never reaches the network. The tab is left on about:blank.
// s.mu is held (or the session is not handed out yet).
func (s *Session) restore(ctx context.Context, st State) error {
	if len(st.Cookies) > 0 {
		params := make([]*network.CookieParam, 0, len(st.Cookies))
		for _, c := range st.Cookies {
			p := &network.CookieParam{Name: c.Name, Value: c.Value, Domain: c.Domain, Path: c.Path,
				Secure: c.Secure, HTTPOnly: c.HTTPOnly, SameSite: network.CookieSameSite(c.SameSite)}
			if !strings.HasPrefix(c.Domain, ".") {
				// A host-only cookie (no leading dot) stays host-only: set
				// by URL, not for the domain and its subdomains.
				scheme := "http://"
				if c.Secure {
					scheme = "https://"
				}
				p.URL, p.Domain = scheme+c.Domain+c.Path, ""
			}
			if c.Expires > 0 {
				p.Expires = cdpproto.TimeSinceEpoch(c.Expires)
			}
			params = append(params, p)
		}
		if _, err := chromedp.CallBrowser(ctx, storage.SetCookies, storage.SetCookiesParams{Cookies: params, BrowserContextID: s.ctxID}); err != nil {
			return fmt.Errorf("restore cookies: %w", err)
		}
	}
	var origins []OriginStorage
	for _, o := range st.Origins {
		if len(o.LocalStorage) > 0 && validOrigin(o.Origin) {
			origins = append(origins, o)
		}
	}
	if len(origins) == 0 {
		return nil
	}
	s.events.muted.Store(true)
	defer s.events.muted.Store(false)
	s.restoring.Store(true)
	defer s.restoring.Store(false)
	// Every request of the tab is answered here while the restore runs.
	lctx, stopListen := context.WithCancel(ctx)
	defer stopListen()
	paused := make(chan fetch.RequestID, 16)
	if err := chromedp.Listen(lctx, func(ev any) {
		if e, ok := ev.(*fetch.EventRequestPaused); ok {
			select {
			case paused <- e.RequestID:
			default: // never blocks the tab; the navigation times out instead
			}
		}
	}); err != nil {
		return err
	}
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{}); err != nil {
		return fmt.Errorf("restore localStorage: %w", err)
	}
	defer func() {
		// Left on, Fetch would hold every later request of the tab: it
		// is turned off even when ctx has ended.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTabTimeout)
		defer cancel()
		if s.b.cfg.AllowRequest != nil {
			_ = guard(dctx) // back to the policy's interception
			return
		}
		_, _ = chromedp.Call(dctx, fetch.Disable, cdpproto.Empty{})
	}()
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		for {
			select {
			case <-lctx.Done():
				return
			case id := <-paused:
				_, _ = chromedp.Call(lctx, fetch.FulfillRequest, fetch.FulfillRequestParams{
					RequestID: id, ResponseCode: 200, Body: []byte(restoreBody),
					ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "text/html"}},
				})
			}
		}
	}()
	defer func() { stopListen(); <-answered }()
	for _, o := range origins {
		if err := chromedp.Do(ctx, chromedp.Navigate(o.Origin+"/")); err != nil {
			return fmt.Errorf("restore the localStorage of %s: %w", o.Origin, err)
		}
		items, _ := json.Marshal(o.LocalStorage)
		if _, err := s.evalLocked(ctx, `(items => { for (const [k, v] of Object.entries(items)) localStorage.setItem(k, v); return true; })(`+string(items)+`)`); err != nil {
			return fmt.Errorf("restore the localStorage of %s: %w", o.Origin, err)
		}
		s.visit(o.Origin)
	}
	// Waited for: a blank page whose load event came late would pass for
	// the load of the page the caller navigates to next.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}
