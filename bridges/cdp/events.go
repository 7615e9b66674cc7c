package cdp

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/inspector"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// maxEvents bounds what a session keeps of its console and network, the
// newest kept.
const maxEvents = 1000

// ConsoleEntry is one console message or uncaught exception of a page.
type ConsoleEntry struct {
	Time  time.Time `json:"time"`
	Level string    `json:"level"` // log, info, warning, error, debug…; error for an uncaught exception
	Text  string    `json:"text"`
}

// NetworkEntry is one request of a page, as it ended.
type NetworkEntry struct {
	URL    string `json:"url"`
	Method string `json:"method,omitempty"`
	Type   string `json:"type,omitempty"` // Document, Script, Image, XHR, Fetch…
	Status int64  `json:"status,omitempty"`
	Error  string `json:"error,omitempty"` // why it failed, when it did
}

// pageEvents keeps a session's console and network, bounded.
type pageEvents struct {
	mu       sync.Mutex
	console  []ConsoleEntry
	network  []NetworkEntry
	requests map[network.RequestID]NetworkEntry // sent, not yet ended
	muted    atomic.Bool                        // a restore runs: its blank pages are not the user's
}

func appendBounded[T any](xs []T, x T) []T {
	if len(xs) >= maxEvents {
		xs = append(xs[:0], xs[len(xs)-maxEvents+1:]...)
	}
	return append(xs, x)
}

// on takes one event of the tab. It runs on the tab's reading goroutine,
// so it only records.
func (p *pageEvents) on(ev any) {
	if p.muted.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var parts []string
		for _, a := range e.Args {
			parts = append(parts, remoteText(a))
		}
		p.console = appendBounded(p.console, ConsoleEntry{Time: time.Now(), Level: string(e.Type), Text: strings.Join(parts, " ")})
	case *runtime.EventExceptionThrown:
		p.console = appendBounded(p.console, ConsoleEntry{Time: time.Now(), Level: "error", Text: "uncaught " + exceptionText(e.ExceptionDetails)})
	case *network.EventRequestWillBeSent:
		if p.requests == nil {
			p.requests = map[network.RequestID]NetworkEntry{}
		}
		if len(p.requests) < maxEvents {
			p.requests[e.RequestID] = NetworkEntry{URL: e.Request.URL, Method: e.Request.Method, Type: string(e.Type)}
		}
	case *network.EventResponseReceived:
		n, ok := p.requests[e.RequestID]
		if !ok {
			n = NetworkEntry{URL: e.Response.URL, Type: string(e.Type)}
		}
		delete(p.requests, e.RequestID)
		n.Status = e.Response.Status
		p.network = appendBounded(p.network, n)
	case *network.EventLoadingFailed:
		n, ok := p.requests[e.RequestID]
		if !ok {
			return
		}
		delete(p.requests, e.RequestID)
		n.Error = e.ErrorText
		if e.Canceled {
			n.Error = "canceled"
		}
		p.network = appendBounded(p.network, n)
	}
}

// remoteText is a console argument as text: a value as JSON (a string as
// it is), an object by its description.
func remoteText(o *runtime.RemoteObject) string {
	if len(o.Value) > 0 {
		var s string
		if json.Unmarshal(o.Value, &s) == nil {
			return s
		}
		return string(o.Value)
	}
	if o.UnserializableValue != "" {
		return string(o.UnserializableValue)
	}
	return o.Description
}

// Console returns the page's console messages so far, oldest first.
func (s *Session) Console() []ConsoleEntry {
	s.events.mu.Lock()
	defer s.events.mu.Unlock()
	return append([]ConsoleEntry(nil), s.events.console...)
}

// Network returns the page's requests that ended so far, oldest first.
func (s *Session) Network() []NetworkEntry {
	s.events.mu.Lock()
	defer s.events.mu.Unlock()
	return append([]NetworkEntry(nil), s.events.network...)
}

// watch records the tab's console and network and notes a renderer
// crash.
func (s *Session) watch(ctx context.Context) error {
	tab := s.tab // the listener's own tab, even after a reopen replaces s.tab
	allow := s.b.cfg.AllowRequest
	err := chromedp.Listen(s.tab, func(ev any) {
		switch e := ev.(type) {
		case *inspector.EventTargetCrashed:
			s.crashed.Store(true)
			return
		case *fetch.EventRequestPaused:
			if allow != nil && !s.restoring.Load() { // a restore answers its own
				go s.decide(tab, allow, e) // never block the tab's event loop
			}
			return
		case *page.EventFrameNavigated:
			if e.Frame != nil {
				s.visit(e.Frame.SecurityOrigin)
			}
		}
		s.events.on(ev)
	})
	if err != nil {
		return err
	}
	wctx, done := within(ctx, s.tab, s.b.cfg.StartTimeout)
	defer done()
	if _, err := chromedp.Call(wctx, network.Enable, network.EnableParams{}); err != nil {
		return fmt.Errorf("watch the network: %w", err)
	}
	if allow != nil {
		if err := guard(wctx); err != nil {
			return fmt.Errorf("guard the requests: %w", err)
		}
	}
	return nil
}

// guard pauses every request of the tab for AllowRequest to decide.
func guard(tab context.Context) error {
	_, err := chromedp.Call(tab, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*"}}})
	return err
}

// decide lets a paused request go on, or fails it when the policy refuses
// it; the page sees a request blocked by the client.
func (s *Session) decide(tab context.Context, allow func(string) error, e *fetch.EventRequestPaused) {
	ctx, cancel := context.WithTimeout(tab, decideTimeout)
	defer cancel()
	url := ""
	if e.Request != nil {
		url = e.Request.URL
	}
	if err := allow(url); err != nil {
		s.b.log.Info("browser request refused by the origin policy", "session", s.ID, "url", url, "err", err)
		_, _ = chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: e.RequestID, ErrorReason: network.ErrorReasonBlockedByClient})
		return
	}
	_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: e.RequestID})
}

// decideTimeout bounds the answer to one paused request.
const decideTimeout = 10 * time.Second

// PDF prints the page to PDF.
func (s *Session) PDF(ctx context.Context) ([]byte, error) {
	ctx, leave, err := s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer leave()
	res, err := chromedp.Call(ctx, page.PrintToPDF, page.PrintToPDFParams{})
	if err != nil {
		return nil, fmt.Errorf("pdf: %w", err)
	}
	return res.Data, nil
}
