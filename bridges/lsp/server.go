package lsp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

const (
	// backoffBase and backoffMax bound the wait before a server that died
	// or failed to start is started again; backoffReset: a server that ran
	// this long starts again at once.
	backoffBase  = 250 * time.Millisecond
	backoffMax   = 30 * time.Second
	backoffReset = 10 * time.Second
	// maxOpenFiles bounds the files kept open on a server; the oldest is
	// closed past it.
	maxOpenFiles = 64
	// exitGrace: a call whose connection broke waits this long to see the
	// process exit, to say it died.
	exitGrace = time.Second
)

// States of a server and of an answer.
const (
	StateReady   = "ready"
	StateWarming = "warming"
)

// Stamp says on what an answer was computed: StateReady, or StateWarming
// when the server was still loading its workspace at the call's deadline
// (then the answer is empty and means "not ready", not "none").
type Stamp struct{ State string }

// Symbol is a named thing of the code.
type Symbol struct {
	Name, Kind, Container string
	Location              Location
}

// Diagnostic is a problem the server found; Line and Col 1-based.
type Diagnostic struct {
	File                            string
	Line, Col                       int
	Severity, Source, Code, Message string
}

// ChangeKind says what happened to a file.
type ChangeKind int

const (
	Created ChangeKind = iota + 1
	Changed
	Deleted
)

// Change is a file the caller changed on disk.
type Change struct {
	File string
	Kind ChangeKind
}

// Server is the language server of one workspace root, shared by every
// caller of that root. Its process starts on first use and again after it
// died or was shut down idle.
type Server struct {
	m        *Manager
	Root     string
	Language string
	Name     string
	cfg      ServerConfig

	mu        sync.Mutex
	proc      *process      // nil: not running
	starting  chan struct{} // closed when the start in progress ends
	startErr  error         // of the last start that failed
	clients   int
	inflight  int
	lastUse   time.Time
	failures  int            // starts failed or crashes in a row
	nextStart time.Time      // no start before (backoff)
	open      map[string]int // open files -> version
	version   int            // the last version sent: versions only grow, across reopens too
	openOrder []string
	stopped   bool // the manager closed
	retired   bool // dropped by the manager, unused: calls refused
	reserved  bool // counted against MaxServers while it starts
}

// Release says a caller is done with the server.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clients > 0 {
		s.clients--
	}
}

// ensure returns the running process, starting it if need be: the start
// goes on when ctx ends, for the next call.
func (s *Server) ensure(ctx context.Context) (*process, error) {
	for {
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return nil, fmt.Errorf("lsp: the bridge is closed: %w", errdefs.ErrUnavailable)
		}
		if s.retired {
			s.mu.Unlock()
			return nil, fmt.Errorf("lsp: the server of %s was released and retired; ask the bridge for it again: %w", s.Root, errdefs.ErrUnavailable)
		}
		if p := s.proc; p != nil {
			s.mu.Unlock()
			if !p.goingAway() {
				return p, nil
			}
			// Stopped on purpose (idle, memory, room for another): wait
			// until it is gone, then start anew.
			select {
			case <-p.exited:
			case <-ctx.Done():
				return nil, nil
			}
			s.mu.Lock()
			if s.proc == p {
				s.proc = nil
			}
			s.mu.Unlock()
			continue
		}
		if ch := s.starting; ch != nil {
			s.mu.Unlock()
			select {
			case <-ch:
				s.mu.Lock()
				p, err := s.proc, s.startErr
				s.mu.Unlock()
				if p != nil {
					return p, nil
				}
				if err != nil {
					return nil, err
				}
				continue
			case <-ctx.Done():
				return nil, nil // warming
			}
		}
		if wait := time.Until(s.nextStart); wait > 0 {
			s.mu.Unlock()
			dl, ok := ctx.Deadline()
			if ok && time.Until(dl) < wait {
				return nil, fmt.Errorf("lsp: %s for %s failed (%v); it starts again in %v: %w", s.Name, s.Root, s.startErr, wait.Round(time.Millisecond), errdefs.ErrUnavailable)
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("lsp: %s for %s starts again in %v: %w", s.Name, s.Root, wait.Round(time.Millisecond), errdefs.ErrUnavailable)
			}
			continue
		}
		ch := make(chan struct{})
		s.starting = ch
		s.mu.Unlock()
		if err := s.m.reserve(s); err != nil {
			s.mu.Lock()
			s.starting = nil
			s.mu.Unlock()
			close(ch)
			return nil, err
		}
		s.m.wg.Add(1)
		go s.start(ch)
	}
}

// start starts the process and initializes it, then closes done.
func (s *Server) start(done chan struct{}) {
	defer s.m.wg.Done()
	defer close(done)
	log := s.m.log.With("root", s.Root, "server", s.Name)
	t0 := time.Now()
	p, err := s.startProcess()
	if err == nil {
		s.mu.Lock()
		s.proc = p
		open := slices.Clone(s.openOrder)
		s.mu.Unlock()
		if err = p.initialize(s.m.life); err == nil {
			s.reopen(p, open)
			p.mu.Lock()
			p.reopened = true
			p.broadcast()
			p.mu.Unlock()
		} else {
			p.mu.Lock()
			p.startFailed = true
			p.mu.Unlock()
			// It did not answer initialize: no polite shutdown to wait for.
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
			p.stop(err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.starting, s.reserved = nil, false
	if err != nil {
		if s.proc == p {
			s.proc = nil
		}
		s.startErr = err
		s.backoffLocked()
		log.Warn("language server failed to start", "err", err, "retry_in", time.Until(s.nextStart).Round(time.Millisecond))
		return
	}
	s.startErr = nil
	log.Info("language server started", "pid", p.pid, "uid", s.m.uid(), "init", time.Since(t0).Round(time.Millisecond))
}

// backoffLocked sets when the server may start again after a failure;
// s.mu is held.
func (s *Server) backoffLocked() {
	s.failures++
	d := min(backoffBase<<min(s.failures-1, 16), backoffMax)
	s.nextStart = time.Now().Add(d)
}

// exited is called when a process is reaped.
func (s *Server) exited(p *process) {
	p.mu.Lock()
	crashed, err := !p.stopping, p.err
	p.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == p {
		s.proc = nil
	}
	if !crashed {
		return
	}
	s.startErr = err
	if time.Since(p.started) > backoffReset {
		// It ran a while: a crash, not a crash loop. It starts again on
		// the next call, without waiting.
		s.failures = 0
		s.nextStart = time.Time{}
	} else {
		s.backoffLocked()
	}
	s.m.log.Warn("language server died; it starts again on the next call", "root", s.Root, "server", s.Name,
		"pid", p.pid, "err", err, "retry_in", max(0, time.Until(s.nextStart)).Round(time.Millisecond))
}

// reopen opens again the files open on the server's previous process.
func (s *Server) reopen(p *process, files []string) {
	for _, f := range files {
		content, err := readFile(s.Root, f)
		if err != nil {
			s.mu.Lock()
			s.forgetOpenLocked(f)
			s.mu.Unlock()
			continue
		}
		s.mu.Lock()
		v := s.open[f]
		s.mu.Unlock()
		p.modified(fileURI(s.abs(f)))
		_ = p.rpc.notify(s.m.life, "textDocument/didOpen", map[string]any{"textDocument": textDocumentItem{
			URI: fileURI(s.abs(f)), LanguageID: s.Language, Version: v, Text: string(content)}})
	}
}

func (s *Server) abs(rel string) string { return s.Root + "/" + rel }

func (s *Server) forgetOpenLocked(f string) {
	delete(s.open, f)
	s.openOrder = slices.DeleteFunc(s.openOrder, func(o string) bool { return o == f })
}

// ensureOpen opens f (whose content is given) on the server if it is not.
func (s *Server) ensureOpen(ctx context.Context, p *process, f string, content []byte) error {
	s.mu.Lock()
	if _, ok := s.open[f]; ok {
		s.mu.Unlock()
		return nil
	}
	var evict string
	if len(s.openOrder) >= maxOpenFiles {
		evict = s.openOrder[0]
		s.forgetOpenLocked(evict)
	}
	s.version++
	v := s.version
	s.open[f] = v
	s.openOrder = append(s.openOrder, f)
	s.mu.Unlock()
	if evict != "" {
		p.modified("")
	}
	p.modified(fileURI(s.abs(f)))
	if evict != "" {
		if err := p.rpc.notify(ctx, "textDocument/didClose", map[string]any{"textDocument": textDocumentID{URI: fileURI(s.abs(evict))}}); err != nil {
			return s.callErr(p, err)
		}
	}
	err := p.rpc.notify(ctx, "textDocument/didOpen", map[string]any{"textDocument": textDocumentItem{
		URI: fileURI(s.abs(f)), LanguageID: s.Language, Version: v, Text: string(content)}})
	return s.callErr(p, err)
}

// call runs fn on the ready server. The stamp is StateWarming, and fn does
// not run, when the server was not ready by ctx's end.
func (s *Server) call(ctx context.Context, fn func(p *process) error) (Stamp, error) {
	s.mu.Lock()
	s.inflight++
	s.lastUse = time.Now()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight--
		s.lastUse = time.Now()
		s.mu.Unlock()
	}()
	var p *process
	for {
		var err error
		p, err = s.ensure(ctx)
		if err != nil {
			return Stamp{}, err
		}
		if p == nil {
			return Stamp{State: StateWarming}, nil
		}
		ready, err := p.waitReady(ctx)
		if err != nil && p.goingAway() {
			continue // stopped on purpose while the call waited: start it again
		}
		if err != nil {
			// A server that failed is gone before its caller hears of it:
			// nothing of it runs on when the call returns.
			t := time.NewTimer(shutdownTimeout + groupExitWait)
			select {
			case <-p.exited:
			case <-t.C:
			}
			t.Stop()
			return Stamp{}, err
		}
		if !ready {
			return Stamp{State: StateWarming}, nil
		}
		break
	}
	if err := fn(p); err != nil {
		return Stamp{}, s.callErr(p, err)
	}
	return Stamp{State: StateReady}, nil
}

// callErr classifies an error of a call on p: an answer of the server
// that refuses the call is the caller's (ErrInvalid); a broken connection
// means the process died (ErrUnavailable).
func (s *Server) callErr(p *process, err error) error {
	if err == nil {
		return nil
	}
	var se *serverError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalid)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("lsp: %s for %s: %w", s.Name, s.Root, err)
	case errors.Is(err, errdefs.ErrInvalid) || errors.Is(err, errdefs.ErrNotFound):
		return err
	}
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-p.exited:
		return fmt.Errorf("lsp: %s for %s died during the call; the next call starts it again: %w", s.Name, s.Root, errdefs.ErrUnavailable)
	case <-t.C:
		return fmt.Errorf("lsp: %s for %s: %w: %w", s.Name, s.Root, err, errdefs.ErrUnavailable)
	}
}

// at reads a position's file, checks the position and opens the file.
func (s *Server) at(ctx context.Context, p *process, pos Position) (positionParams, error) {
	content, err := readFile(s.Root, pos.File)
	if err != nil {
		return positionParams{}, err
	}
	lp, err := toLSP(content, pos)
	if err != nil {
		return positionParams{}, err
	}
	if err := s.ensureOpen(ctx, p, pos.File, content); err != nil {
		return positionParams{}, err
	}
	return positionParams{TextDocument: textDocumentID{URI: fileURI(s.abs(pos.File))}, Position: lp}, nil
}

// locations converts the server's locations, reading each file once.
func (s *Server) locations(ls []lspLocation) []Location {
	files := map[string][]byte{}
	out := make([]Location, 0, len(ls))
	for _, l := range ls {
		out = append(out, s.location(files, l))
	}
	return out
}

func (s *Server) location(files map[string][]byte, l lspLocation) Location {
	path := uriPath(l.URI)
	name, content := path, []byte(nil)
	if rel := relTo(s.Root, path); rel != "" {
		name = rel
		c, ok := files[rel]
		if !ok {
			c, _ = readFile(s.Root, rel)
			files[rel] = c
		}
		content = c
	}
	if path == "" {
		name = l.URI
	}
	line, col := fromLSP(content, l.Range.Start)
	eline, ecol := fromLSP(content, l.Range.End)
	return Location{File: name, Line: line, Col: col, EndLine: eline, EndCol: ecol}
}

// Definition is where the identifier at p is defined.
func (s *Server) Definition(ctx context.Context, p Position) ([]Location, Stamp, error) {
	var out []Location
	st, err := s.call(ctx, func(pr *process) error {
		params, err := s.at(ctx, pr, p)
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if err := pr.rpc.call(ctx, "textDocument/definition", params, &raw); err != nil {
			return err
		}
		ls, err := decodeLocations(raw)
		if err != nil {
			return err
		}
		out = s.locations(ls)
		return nil
	})
	return out, st, err
}

// decodeLocations reads a Location, a list of them or of LocationLinks.
func decodeLocations(raw json.RawMessage) ([]lspLocation, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '{' {
		var l lspLocation
		err := json.Unmarshal(raw, &l)
		return []lspLocation{l}, err
	}
	var items []struct {
		lspLocation
		lspLocationLink
	}
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("lsp: decode locations: %w", err)
	}
	out := make([]lspLocation, 0, len(items))
	for _, it := range items {
		if it.TargetURI != "" {
			out = append(out, lspLocation{URI: it.TargetURI, Range: it.TargetSelectionRange})
		} else {
			out = append(out, it.lspLocation)
		}
	}
	return out, nil
}

// References are the uses of the identifier at p, its declaration too.
func (s *Server) References(ctx context.Context, p Position) ([]Location, Stamp, error) {
	var out []Location
	st, err := s.call(ctx, func(pr *process) error {
		params, err := s.at(ctx, pr, p)
		if err != nil {
			return err
		}
		rp := referenceParams{positionParams: params}
		rp.Context.IncludeDeclaration = true
		var ls []lspLocation
		if err := pr.rpc.call(ctx, "textDocument/references", rp, &ls); err != nil {
			return err
		}
		out = s.locations(ls)
		return nil
	})
	return out, st, err
}

// Hover is the server's text about the identifier at p ("" when none).
func (s *Server) Hover(ctx context.Context, p Position) (string, Stamp, error) {
	var out string
	st, err := s.call(ctx, func(pr *process) error {
		params, err := s.at(ctx, pr, p)
		if err != nil {
			return err
		}
		var h *hoverResult
		if err := pr.rpc.call(ctx, "textDocument/hover", params, &h); err != nil {
			return err
		}
		if h != nil {
			out = hoverText(h.Contents)
		}
		return nil
	})
	return out, st, err
}

// hoverText reads MarkupContent, a MarkedString or a list of them.
func hoverText(raw json.RawMessage) string {
	var mc struct {
		Value string `json:"value"`
	}
	var str string
	var list []json.RawMessage
	switch {
	case json.Unmarshal(raw, &str) == nil:
		return str
	case json.Unmarshal(raw, &list) == nil:
		parts := make([]string, 0, len(list))
		for _, it := range list {
			parts = append(parts, hoverText(it))
		}
		return strings.Join(parts, "\n\n")
	case json.Unmarshal(raw, &mc) == nil:
		return mc.Value
	}
	return ""
}

// Changed tells the server the caller changed these files on disk:
// didChange with the new content for the files open on it, and
// didChangeWatchedFiles for all.
func (s *Server) Changed(ctx context.Context, changes []Change) error {
	for _, c := range changes {
		if err := checkRel(c.File); err != nil {
			return err
		}
		if c.Kind < Created || c.Kind > Deleted {
			return fmt.Errorf("lsp: change of %q: unknown kind %d: %w", c.File, c.Kind, errdefs.ErrInvalid)
		}
	}
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil || !p.waitReopened(ctx) {
		return nil // a server that starts reads the files from disk
	}
	events := make([]fileEvent, 0, len(changes))
	for _, c := range changes {
		s.mu.Lock()
		_, open := s.open[c.File]
		s.mu.Unlock()
		if !open {
			events = append(events, fileEvent{URI: fileURI(s.abs(c.File)), Type: int(c.Kind)})
			continue
		}
		// An open file's content travels in didChange; a watched-file
		// event for it too would start a second round of diagnostics
		// that Diagnostics then waits for.
		var content []byte
		var err error
		if c.Kind != Deleted {
			content, err = readFile(s.Root, c.File)
		}
		if c.Kind == Deleted || err != nil {
			// Closed, the file is the disk's again: the server hears of it
			// as of any other.
			s.mu.Lock()
			s.forgetOpenLocked(c.File)
			s.mu.Unlock()
			p.modified("")
			events = append(events, fileEvent{URI: fileURI(s.abs(c.File)), Type: int(c.Kind)})
			err = p.rpc.notify(ctx, "textDocument/didClose", map[string]any{"textDocument": textDocumentID{URI: fileURI(s.abs(c.File))}})
		} else {
			s.mu.Lock()
			s.version++
			v := s.version
			s.open[c.File] = v
			s.mu.Unlock()
			p.modified(fileURI(s.abs(c.File)))
			err = p.rpc.notify(ctx, "textDocument/didChange", map[string]any{
				"textDocument":   map[string]any{"uri": fileURI(s.abs(c.File)), "version": v},
				"contentChanges": []map[string]any{{"text": string(content)}},
			})
		}
		if err != nil {
			return s.callErr(p, err)
		}
	}
	if len(events) == 0 {
		return nil
	}
	p.modified("")
	return s.callErr(p, p.rpc.notify(ctx, "workspace/didChangeWatchedFiles", map[string]any{"changes": events}))
}

// Diagnostics are the problems the server reports for files (relative to
// the root; none: every file it reported on), once it has published them
// for the state after the last change. They are opened on the server.
func (s *Server) Diagnostics(ctx context.Context, files []string) ([]Diagnostic, Stamp, error) {
	var out []Diagnostic
	st, err := s.call(ctx, func(pr *process) error {
		for _, f := range files {
			content, err := readFile(s.Root, f)
			if err != nil {
				return err
			}
			if err := s.ensureOpen(ctx, pr, f, content); err != nil {
				return err
			}
		}
		var one string // the file asked for, alone
		if len(files) == 1 {
			one = fileURI(s.abs(files[0]))
		}
		if !pr.waitDiagnosed(ctx, one, s.openVersion) {
			return fmt.Errorf("lsp: %s for %s did not finish its diagnostics in time: %w", s.Name, s.Root, context.Cause(ctx))
		}
		pr.mu.Lock()
		byURI := maps.Clone(pr.diags)
		pr.mu.Unlock()
		want := map[string]bool{}
		for _, f := range files {
			want[fileURI(s.abs(f))] = true
		}
		contents := map[string][]byte{}
		for _, uri := range slices.Sorted(maps.Keys(byURI)) {
			if len(want) > 0 && !want[uri] {
				continue
			}
			for _, d := range byURI[uri].diags {
				loc := s.location(contents, lspLocation{URI: uri, Range: d.Range})
				out = append(out, Diagnostic{File: loc.File, Line: loc.Line, Col: loc.Col,
					Severity: severity(d.Severity), Source: d.Source, Code: diagCode(d.Code), Message: d.Message})
			}
		}
		return nil
	})
	return out, st, err
}

func diagCode(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// modified records a modification about to be sent: of the file at uri
// (didOpen, didChange), or of others ("": watched-file events, a close).
func (p *process) modified(uri string) {
	p.mu.Lock()
	p.mods++
	p.modURIs = append(p.modURIs, uri) // p.modURIs[i-p.modBase] is of the modification i+1
	p.lastMod = time.Now()
	p.mu.Unlock()
}

// openVersion is the version of the open file at uri, 0 if it is not.
func (s *Server) openVersion(uri string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rel := relTo(s.Root, uriPath(uri)); rel != "" {
		return s.open[rel]
	}
	return 0
}

// waitDiagnosed waits until the server has published the diagnostics of
// every modification sent so far; false when ctx ended first.
//
// Asked for one open file (uri) whose own edits are all the server has not
// finished diagnosing, it returns as soon as the server published that
// file's diagnostics at its current version: gopls type-checks the
// package of an edited file first and publishes it at once, then runs its
// analyzers over everything the edit touched. The answer then has the
// compiler's errors of the edit, and the analyzers' findings are those of
// the previous round until the full round ends.
func (p *process) waitDiagnosed(ctx context.Context, uri string, version func(uri string) int) bool {
	for {
		p.mu.Lock()
		var done bool
		var wait time.Duration
		if p.verboseDiag {
			done = p.diagEnded >= p.mods && (p.mods > 0 || p.initialDiagnosed)
			if !done && uri != "" && p.onlyEditsOfLocked(uri) {
				pv, ok := p.published[uri]
				done = ok && pv != 0 && pv == version(uri)
			}
		} else {
			last := p.lastPublish
			if p.lastMod.After(last) {
				last = p.lastMod
			}
			wait = diagnosticsSettle - time.Since(last)
			done = wait <= 0
		}
		ch, err := p.changed, p.err
		p.mu.Unlock()
		if done {
			return true
		}
		if err != nil {
			return false
		}
		var tc <-chan time.Time
		if wait > 0 {
			t := time.NewTimer(wait)
			tc = t.C
			defer t.Stop()
		}
		select {
		case <-ch:
		case <-tc:
		case <-p.exited:
		case <-ctx.Done():
			return false
		}
	}
}

// onlyEditsOfLocked says whether every modification the server has not
// finished diagnosing is of the file at uri; p.mu is held.
func (p *process) onlyEditsOfLocked(uri string) bool {
	for i := max(p.diagEnded, p.modBase); i < p.mods; i++ {
		if p.modURIs[i-p.modBase] != uri {
			return false
		}
	}
	return true
}
