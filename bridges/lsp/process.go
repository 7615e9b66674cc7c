package lsp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/bridges/procs"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

const (
	// readySettle: a server that reported no progress this long after
	// initialized is taken as ready (gopls reports its workspace load
	// within milliseconds).
	readySettle = time.Second
	// diagnosticsSettle: for a server that does not report its rounds of
	// diagnostics, Diagnostics waits this long without a publication.
	diagnosticsSettle = 300 * time.Millisecond
	// shutdownTimeout bounds a server's polite shutdown before it is killed.
	shutdownTimeout = 2 * time.Second
	// diagnosingTitle starts the title of gopls's progress for a round of
	// diagnostics (verboseWorkDoneProgress).
	diagnosingTitle = "diagnosing "
	// diagnosticOverhead is what a diagnostic costs beyond its strings.
	diagnosticOverhead = 64
	// initialRound and otherRound mark gopls's rounds of diagnostics that
	// answer no modification of ours.
	initialRound = -1
	otherRound   = -2
	// stderrKeep bounds what is kept of a server's stderr for errors.
	stderrKeep = 8 << 10
)

// process is one run of a language server: the child process and the
// connection to it. What the server reports (progress, diagnostics) is
// kept under mu; changed is closed and replaced at every change.
type process struct {
	s       *Server
	cmd     *exec.Cmd
	pid     int
	rpc     *rpc
	started time.Time
	exited  chan struct{} // closed when the process is reaped
	stderr  *tail

	mu               sync.Mutex
	changed          chan struct{}
	err              error // why it stopped or failed to start
	stopping         bool  // stopped on purpose: not a crash
	startFailed      bool  // stopped because initialize failed
	initialized      bool
	reopened         bool                       // initialized, and the files of the previous process opened again
	settled          bool                       // readySettle passed after initialized
	loading          map[string]bool            // progress tokens in flight, not diagnosing
	sawProgress      bool                       // a load progress began since initialized
	diagTokens       map[string]int             // diagnosing tokens in flight -> their round
	diagBegun        int                        // rounds of diagnostics begun
	diagEnded        int                        // the last round ended
	initialDiagnosed bool                       // the round of the initial workspace load ended
	verboseDiag      bool                       // the server reports its rounds of diagnostics
	mods             int                        // modifications sent (didOpen, didChange, ...)
	modURIs          []string                   // the file of each modification after modBase ("": others)
	modBase          int                        // modifications diagnosed and forgotten from modURIs
	published        map[string]int             // by URI: the version of its last publication (0: of the disk)
	lastPublish      time.Time                  // of diagnostics
	lastMod          time.Time                  // of a modification sent
	diags            map[string]*publishedDiags // by URI
	diagBytes        int
	dropped          int // diagnostics dropped past Config.DiagnosticsBytes
	settle           *time.Timer
}

type publishedDiags struct {
	diags []lspDiagnostic
	bytes int
}

// start starts the server's process and initializes it within
// Config.InitTimeout; the process is returned as soon as it runs, and
// init reports the end of its initialization.
func (s *Server) startProcess() (*process, error) {
	m := s.m
	env, dir, err := m.serverEnv(s)
	if err != nil {
		return nil, err
	}
	argv, err := m.serverCommand(s.cfg.Command)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: m.cfg.UID, Gid: m.cfg.GID, Groups: []uint32{}}
	}
	p := &process{s: s, cmd: cmd, exited: make(chan struct{}), changed: make(chan struct{}),
		loading: map[string]bool{}, diagTokens: map[string]int{}, diags: map[string]*publishedDiags{}, published: map[string]int{},
		stderr: &tail{max: stderrKeep}}
	p.verboseDiag = s.cfg.InitOptions["verboseWorkDoneProgress"] == true
	cmd.Stderr = p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("lsp: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("lsp: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lsp: start %s for %s: %w: %w", argv[0], s.Root, err, errdefs.ErrUnavailable)
	}
	p.pid, p.started = cmd.Process.Pid, time.Now()
	p.rpc = newRPC(stdout, stdin, p)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		werr := cmd.Wait()
		// The group: what the server started (go list) dies with it, and
		// is gone before anyone hears the server exited.
		procs.KillGroup(p.pid, groupExitWait)
		p.rpc.close()
		p.mu.Lock()
		if p.err == nil {
			p.err = fmt.Errorf("lsp: %s for %s exited (%v); its stderr: %s: %w", s.Name, s.Root, werr, p.stderr.String(), errdefs.ErrUnavailable)
		}
		if p.settle != nil {
			p.settle.Stop()
		}
		p.broadcast()
		p.mu.Unlock()
		s.exited(p) // first: once exited is closed, s no longer holds p
		close(p.exited)
	}()
	return p, nil
}

// initialize runs the LSP handshake and opens the files the server had
// open before.
func (p *process) initialize(ctx context.Context) error {
	s := p.s
	ctx, cancel := context.WithTimeout(ctx, s.m.cfg.InitTimeout)
	defer cancel()
	var res json.RawMessage
	if err := p.rpc.call(ctx, "initialize", initializeParams(fileURI(s.Root), filepath.Base(s.Root), s.cfg.InitOptions), &res); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("lsp: %s for %s did not answer initialize within %v: %w", s.Name, s.Root, s.m.cfg.InitTimeout, errdefs.ErrUnavailable)
		}
		return fmt.Errorf("lsp: initialize %s for %s: %w: %w", s.Name, s.Root, err, errdefs.ErrUnavailable)
	}
	if err := p.rpc.notify(ctx, "initialized", map[string]any{}); err != nil {
		return fmt.Errorf("lsp: %s for %s: %w: %w", s.Name, s.Root, err, errdefs.ErrUnavailable)
	}
	p.mu.Lock()
	p.initialized = true
	p.settle = time.AfterFunc(readySettle, func() {
		p.mu.Lock()
		p.settled = true
		p.broadcast()
		p.mu.Unlock()
	})
	p.broadcast()
	p.mu.Unlock()
	return nil
}

// groupExitWait bounds the wait for a dead server's group to be gone.
const groupExitWait = 5 * time.Second

// goingAway says whether the process is being stopped on purpose, not
// because it failed to start: a call waiting for it may start it again.
func (p *process) goingAway() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping && !p.startFailed
}

// broadcast wakes whoever waits on a change; p.mu is held.
func (p *process) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// readyLocked says whether the server has loaded its workspace; p.mu is held.
func (p *process) readyLocked() bool {
	return p.reopened && len(p.loading) == 0 && (p.sawProgress || p.settled)
}

// waitReopened waits until the server is initialized and has the files
// open that its predecessor had (true), ctx ends or the process is gone
// (false).
func (p *process) waitReopened(ctx context.Context) bool {
	for {
		p.mu.Lock()
		ok, err, ch := p.reopened, p.err, p.changed
		p.mu.Unlock()
		if ok || err != nil {
			return ok && err == nil
		}
		select {
		case <-ch:
		case <-p.exited:
		case <-ctx.Done():
			return false
		}
	}
}

// state is the process's state for Info.
func (p *process) state() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.err != nil:
		return "stopped"
	case !p.initialized:
		return "starting"
	case p.readyLocked():
		return "ready"
	}
	return "warming"
}

// waitReady waits until the server is ready (true), ctx ends (false) or
// the process is gone (its error).
func (p *process) waitReady(ctx context.Context) (bool, error) {
	for {
		p.mu.Lock()
		ready, err, ch := p.readyLocked(), p.err, p.changed
		p.mu.Unlock()
		if err != nil {
			return false, err
		}
		if ready {
			return true, nil
		}
		select {
		case <-ch:
		case <-p.exited:
		case <-ctx.Done():
			return false, nil
		}
	}
}

// notification handles what the server reports; it runs on the
// connection's read goroutine.
func (p *process) notification(method string, params json.RawMessage) {
	switch method {
	case "$/progress":
		var pp progressParams
		if json.Unmarshal(params, &pp) != nil {
			return
		}
		tok := string(pp.Token)
		p.mu.Lock()
		defer p.mu.Unlock()
		switch pp.Value.Kind {
		case "begin":
			p.s.m.log.Debug("language server progress", "root", p.s.Root, "title", pp.Value.Title)
			if strings.HasPrefix(pp.Value.Title, diagnosingTitle) {
				switch strings.TrimPrefix(pp.Value.Title, diagnosingTitle) {
				case "opened files", "changed files", "files changed on disk", "close files":
					p.diagBegun++ // the round of the next modification we sent
					p.diagTokens[tok] = p.diagBegun
				case "initial workspace load":
					p.diagTokens[tok] = initialRound
				default: // a round of the server's own
					p.diagTokens[tok] = otherRound
				}
			} else {
				p.loading[tok] = true
				if p.initialized {
					p.sawProgress = true
				}
			}
		case "end":
			if round, ok := p.diagTokens[tok]; ok {
				delete(p.diagTokens, tok)
				switch round {
				case initialRound:
					p.initialDiagnosed = true
				case otherRound:
				default:
					p.diagEnded = max(p.diagEnded, round)
					if n := min(p.diagEnded, p.mods) - p.modBase; n > 0 {
						p.modURIs = slices.Delete(p.modURIs, 0, n)
						p.modBase += n
					}
				}
			}
			delete(p.loading, tok)
		}
		p.broadcast()
	case "textDocument/publishDiagnostics":
		var pd publishDiagnosticsParams
		if json.Unmarshal(params, &pd) != nil {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.storeDiagnostics(pd)
		p.published[pd.URI] = 0
		if pd.Version != nil {
			p.published[pd.URI] = *pd.Version
		}
		p.lastPublish = time.Now()
		p.broadcast()
	}
}

// storeDiagnostics keeps a file's diagnostics within
// Config.DiagnosticsBytes for all files; p.mu is held.
func (p *process) storeDiagnostics(pd publishDiagnosticsParams) {
	limit := p.s.m.cfg.DiagnosticsBytes
	if old := p.diags[pd.URI]; old != nil {
		p.diagBytes -= old.bytes
		delete(p.diags, pd.URI)
	}
	if len(pd.Diagnostics) == 0 {
		return
	}
	kept := &publishedDiags{}
	for i, d := range pd.Diagnostics {
		n := len(d.Message) + len(d.Source) + len(d.Code) + diagnosticOverhead
		if p.diagBytes+kept.bytes+n > limit {
			p.dropped += len(pd.Diagnostics) - i
			p.s.m.log.Warn("language server diagnostics dropped past the cap", "root", p.s.Root,
				"dropped", len(pd.Diagnostics)-i, "cap_bytes", limit)
			break
		}
		d.Message = strings.Clone(d.Message)
		kept.diags = append(kept.diags, d)
		kept.bytes += n
	}
	p.diags[pd.URI] = kept
	p.diagBytes += kept.bytes
}

// request answers what the server asks of the client.
func (p *process) request(method string, params json.RawMessage) (any, error) {
	switch method {
	case "window/workDoneProgress/create", "client/registerCapability", "client/unregisterCapability",
		"window/showMessageRequest", "window/showDocument":
		return nil, nil
	case "workspace/configuration":
		var cp struct {
			Items []json.RawMessage `json:"items"`
		}
		_ = json.Unmarshal(params, &cp)
		out := make([]any, len(cp.Items))
		for i := range out {
			out[i] = p.s.cfg.InitOptions
		}
		return out, nil
	case "workspace/workspaceFolders":
		return []map[string]any{{"uri": fileURI(p.s.Root), "name": filepath.Base(p.s.Root)}}, nil
	case "workspace/applyEdit":
		// Edits are proposals the caller applies: the server writes nothing.
		return map[string]any{"applied": false, "failureReason": "the cortex-peer bridge does not apply edits"}, nil
	}
	return nil, errMethodNotFound
}

// stop shuts the server down: politely, then by SIGKILL to its group, and
// waits until it is reaped.
func (p *process) stop(reason error) {
	p.mu.Lock()
	first := !p.stopping
	p.stopping = true
	if p.err == nil {
		p.err = reason
	}
	p.broadcast()
	p.mu.Unlock()
	if first {
		select {
		case <-p.exited:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			if p.rpc.call(ctx, "shutdown", nil, nil) == nil {
				_ = p.rpc.notify(ctx, "exit", nil)
			}
			select {
			case <-p.exited:
			case <-ctx.Done():
			}
			cancel()
		}
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
	<-p.exited
}

// tail keeps the last bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, b...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	ls := bytes.Split(bytes.TrimSpace(t.b), []byte("\n"))
	if len(ls) > 5 {
		ls = ls[len(ls)-5:]
	}
	return string(bytes.Join(ls, []byte(" | ")))
}
