package lsp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"google.golang.org/protobuf/types/known/timestamppb"

	bridge "github.com/cortex-peer/cortex-peer/bridges/lsp"
	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// defaultLimit is how many results a call returns unless it asks.
const defaultLimit = 200

// call opens a session on the query's workspace, bounded by the call
// timeout (a warming server answers "warming" at its end).
//
// A server that died since the last call (killed, out of memory) fails the
// first request sent to it; the call is made once more, on the server the
// bridge starts again, so the caller gets an answer, not the death of a
// process it never saw. Every call here only reads (edits are proposals).
func (s *Service) call(ctx context.Context, t target, fn func(context.Context, *session) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	err := s.callOnce(ctx, t, fn)
	if errors.Is(err, errdefs.ErrUnavailable) && ctx.Err() == nil {
		s.log.Info("language server unavailable; asking again", "workspace", t.key, "err", err)
		err = s.callOnce(ctx, t, fn)
	}
	return err
}

func (s *Service) callOnce(ctx context.Context, t target, fn func(context.Context, *session) error) error {
	ses, err := s.open(ctx, t)
	if err != nil {
		return err
	}
	defer ses.done()
	return fn(ctx, ses)
}

func (ses *session) stamp(st bridge.Stamp) *apiv1.LSPStamp {
	return &apiv1.LSPStamp{Root: ses.v.root.String(), State: st.State, Language: ses.server.Language}
}

// position reads a query's position: a file, line and column, or a symbol.
func (ses *session) position(ctx context.Context, q *apiv1.LSPQuery) (bridge.Position, error) {
	if sym := q.GetSymbol(); sym != "" {
		if p, ok := ses.v.symbols[sym]; ok {
			return p, nil
		}
		p, err := ses.server.Resolve(ctx, sym)
		if err != nil {
			return p, err
		}
		if ses.v.symbols == nil || len(ses.v.symbols) >= maxSymbols {
			ses.v.symbols = map[string]bridge.Position{}
		}
		ses.v.symbols[sym] = p
		return p, nil
	}
	if q.GetFile() == "" || q.GetLine() == 0 || q.GetColumn() == 0 {
		return bridge.Position{}, fmt.Errorf("want FILE:LINE:COL (1-based) or a symbol: %w", errdefs.ErrInvalid)
	}
	return bridge.Position{File: q.GetFile(), Line: int(q.GetLine()), Col: int(q.GetColumn())}, nil
}

// page is the part of n results a query asks for: from its offset, at
// most its limit.
func page(q *apiv1.LSPQuery, n int) (from, to int) {
	limit := defaultLimit
	if q.GetLimit() > 0 {
		limit = int(q.GetLimit())
	}
	from = min(int(q.GetOffset()), n)
	return from, min(from+limit, n)
}

func locationToAPI(l bridge.Location) *apiv1.LSPLocation {
	return &apiv1.LSPLocation{File: l.File, Line: uint32(l.Line), Column: uint32(l.Col), EndLine: uint32(l.EndLine), EndColumn: uint32(l.EndCol)}
}

func locations(q *apiv1.LSPQuery, ls []bridge.Location) ([]*apiv1.LSPLocation, uint32) {
	from, to := page(q, len(ls))
	out := make([]*apiv1.LSPLocation, 0, to-from)
	for _, l := range ls[from:to] {
		out = append(out, locationToAPI(l))
	}
	return out, uint32(len(ls))
}

func (s *Service) definition(ctx context.Context, t target, q *apiv1.LSPQuery) (*apiv1.LSPLocations, error) {
	return s.locate(ctx, t, q, (*bridge.Server).Definition)
}

func (s *Service) references(ctx context.Context, t target, q *apiv1.LSPQuery) (*apiv1.LSPLocations, error) {
	return s.locate(ctx, t, q, (*bridge.Server).References)
}

func (s *Service) locate(ctx context.Context, t target, q *apiv1.LSPQuery, ask func(*bridge.Server, context.Context, bridge.Position) ([]bridge.Location, bridge.Stamp, error)) (*apiv1.LSPLocations, error) {
	var resp *apiv1.LSPLocations
	err := s.call(ctx, t, func(ctx context.Context, ses *session) error {
		p, err := ses.position(ctx, q)
		if err != nil {
			return err
		}
		ls, st, err := ask(ses.server, ctx, p)
		if err != nil {
			return err
		}
		resp = &apiv1.LSPLocations{Stamp: ses.stamp(st)}
		resp.Locations, resp.Total = locations(q, ls)
		return nil
	})
	return resp, err
}

func (s *Service) hover(ctx context.Context, t target, q *apiv1.LSPQuery) (*apiv1.LSPHover, error) {
	var resp *apiv1.LSPHover
	err := s.call(ctx, t, func(ctx context.Context, ses *session) error {
		p, err := ses.position(ctx, q)
		if err != nil {
			return err
		}
		text, st, err := ses.server.Hover(ctx, p)
		if err != nil {
			return err
		}
		resp = &apiv1.LSPHover{Stamp: ses.stamp(st), Text: text}
		return nil
	})
	return resp, err
}

func (s *Service) symbols(ctx context.Context, t target, q *apiv1.LSPQuery) (*apiv1.LSPSymbols, error) {
	var resp *apiv1.LSPSymbols
	err := s.call(ctx, t, func(ctx context.Context, ses *session) error {
		syms, st, err := ses.server.Symbols(ctx, q.GetQuery(), q.GetFile())
		if err != nil {
			return err
		}
		resp = &apiv1.LSPSymbols{Stamp: ses.stamp(st), Total: uint32(len(syms))}
		from, to := page(q, len(syms))
		for _, y := range syms[from:to] {
			resp.Symbols = append(resp.Symbols, &apiv1.LSPSymbol{Name: y.Name, Kind: y.Kind, Container: y.Container, Location: locationToAPI(y.Location)})
		}
		return nil
	})
	return resp, err
}

func diagnosticToAPI(d bridge.Diagnostic) *apiv1.LSPDiagnostic {
	return &apiv1.LSPDiagnostic{File: d.File, Line: uint32(d.Line), Column: uint32(d.Col), Severity: d.Severity, Source: d.Source, Code: d.Code, Message: d.Message}
}

func (s *Service) diagnostics(ctx context.Context, t target, q *apiv1.LSPQuery) (*apiv1.LSPDiagnostics, error) {
	var resp *apiv1.LSPDiagnostics
	err := s.call(ctx, t, func(ctx context.Context, ses *session) error {
		files := q.GetFiles()
		if q.GetFile() != "" {
			files = append(files, q.GetFile())
		}
		ds, st, err := ses.server.Diagnostics(ctx, files)
		if err != nil {
			return err
		}
		resp = &apiv1.LSPDiagnostics{Stamp: ses.stamp(st), Total: uint32(len(ds))}
		from, to := page(q, len(ds))
		for _, d := range ds[from:to] {
			resp.Diagnostics = append(resp.Diagnostics, diagnosticToAPI(d))
		}
		return nil
	})
	return resp, err
}

func (s *Service) rename(ctx context.Context, t target, q *apiv1.LSPQuery) (*apiv1.LSPEdit, error) {
	if q.GetNewName() == "" {
		return nil, fmt.Errorf("rename: the new name is missing: %w", errdefs.ErrInvalid)
	}
	return s.propose(ctx, t, func(ctx context.Context, ses *session) (map[string][]byte, bridge.Stamp, error) {
		p, err := ses.position(ctx, q)
		if err != nil {
			return nil, bridge.Stamp{}, err
		}
		return ses.server.Rename(ctx, p, q.GetNewName())
	})
}

func (s *Service) format(ctx context.Context, t target, q *apiv1.LSPQuery) (*apiv1.LSPEdit, error) {
	if q.GetFile() == "" {
		return nil, fmt.Errorf("format: name the file: %w", errdefs.ErrInvalid)
	}
	return s.propose(ctx, t, func(ctx context.Context, ses *session) (map[string][]byte, bridge.Stamp, error) {
		b, st, err := ses.server.Format(ctx, q.GetFile())
		if err != nil {
			return nil, st, err
		}
		return map[string][]byte{q.GetFile(): b}, st, nil
	})
}

// propose turns new file contents into a root: the view's tree with those
// files, imported. The proposal's base is its stamp's root.
func (s *Service) propose(ctx context.Context, t target, edit func(context.Context, *session) (map[string][]byte, bridge.Stamp, error)) (*apiv1.LSPEdit, error) {
	var resp *apiv1.LSPEdit
	err := s.call(ctx, t, func(ctx context.Context, ses *session) error {
		files, st, err := edit(ctx, ses)
		if err != nil {
			return err
		}
		resp = &apiv1.LSPEdit{Stamp: ses.stamp(st)}
		for f := range files {
			resp.Files = append(resp.Files, f)
		}
		sort.Strings(resp.Files)
		next, err := s.withFiles(ctx, ses.v.root, files)
		if err != nil {
			return err
		}
		resp.Root = next.String()
		return nil
	})
	return resp, err
}

// apply merges a proposal (base -> proposal, both perhaps another peer's)
// into the workspace directory, three-way.
func (s *Service) apply(ctx context.Context, workspace string, e *apiv1.LSPEdit) error {
	base, err1 := cid.Decode(e.GetStamp().GetRoot())
	next, err2 := cid.Decode(e.GetRoot())
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if _, err := s.blocks.Fetch(ctx, next, verifyStall, nil); err != nil {
		return fmt.Errorf("apply: fetch %s: %w", next, err)
	}
	s.gc.RLock()
	defer s.gc.RUnlock()
	rep, err := s.dags.Merge(ctx, base, next, workspace)
	if err != nil {
		return fmt.Errorf("apply to %s: %w", workspace, err)
	}
	e.Merged = append(append(e.Merged, rep.Applied...), rep.Merged...)
	for _, c := range rep.Conflicts {
		e.Conflicts = append(e.Conflicts, c.Path)
	}
	return nil
}

// withFiles is base with files replaced, as a new root: exported to a
// scratch tree, edited, imported.
func (s *Service) withFiles(ctx context.Context, base cid.Cid, files map[string][]byte) (cid.Cid, error) {
	tmp, err := os.MkdirTemp(s.cfg.TempDir, "proposal-")
	if err != nil {
		return cid.Undef, err
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "tree")
	s.gc.RLock()
	defer s.gc.RUnlock()
	if _, err := s.dags.Export(ctx, base, tree, dag.ExportOptions{AllowEscapingLinks: true}); err != nil {
		return cid.Undef, fmt.Errorf("proposal: %w", err)
	}
	for f, b := range files {
		p := filepath.Join(tree, filepath.FromSlash(f))
		if !strings.HasPrefix(p, tree+string(filepath.Separator)) {
			return cid.Undef, fmt.Errorf("proposal: %q leaves the workspace: %w", f, errdefs.ErrInvalid)
		}
		mode := os.FileMode(0o644)
		if fi, err := os.Stat(p); err == nil {
			mode = fi.Mode().Perm()
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			return cid.Undef, fmt.Errorf("proposal: %w", err)
		}
	}
	res, err := s.dags.Import(ctx, tree, dag.ImportOptions{NoIndex: true})
	if err != nil {
		return cid.Undef, fmt.Errorf("proposal: %w", err)
	}
	// Kept until the next proposal of the workspace: --apply merges it,
	// and a user may fetch it by its CID.
	if err := s.dags.Pin(proposalPin(base), res.Root); err != nil {
		return cid.Undef, fmt.Errorf("proposal: %w", err)
	}
	return res.Root, nil
}

// proposalPin keeps the latest proposal made from a base.
func proposalPin(base cid.Cid) string { return "lsp:proposal:" + base.String() }

// verifyStall ends the fetch of a root to verify when no block came for
// this long.
const verifyStall = 30 * time.Second

func (s *Service) verify(ctx context.Context, t target, r *apiv1.LSPVerifyRequest) (*apiv1.LSPVerifyReport, error) {
	base, err := cid.Decode(r.GetBase())
	if err != nil {
		return nil, fmt.Errorf("verify: base %q: %v: %w", r.GetBase(), err, errdefs.ErrInvalid)
	}
	result, err := cid.Decode(r.GetResult())
	if err != nil {
		return nil, fmt.Errorf("verify: result %q: %v: %w", r.GetResult(), err, errdefs.ErrInvalid)
	}
	// The roots may be another peer's (a task's result): fetched first,
	// and held while the view passes through them.
	for _, root := range []cid.Cid{base, result} {
		if _, err := s.blocks.Fetch(ctx, root, verifyStall, nil); err != nil {
			return nil, fmt.Errorf("verify: fetch %s: %w", root, err)
		}
	}
	var rep *apiv1.LSPVerifyReport
	err = s.call(ctx, t, func(ctx context.Context, ses *session) error {
		var before, after []bridge.Diagnostic
		for _, step := range []struct {
			root cid.Cid
			into *[]bridge.Diagnostic
		}{{base, &before}, {result, &after}} {
			if err := ses.moveTo(ctx, step.root); err != nil {
				return err
			}
			ds, st, err := ses.server.Diagnostics(ctx, nil)
			if err != nil {
				return err
			}
			*step.into = ds
			rep = &apiv1.LSPVerifyReport{Stamp: ses.stamp(st), Base: base.String(), Result: result.String()}
		}
		added, fixed := compare(before, after)
		for _, d := range added {
			rep.Added = append(rep.Added, diagnosticToAPI(d))
			if d.Severity == "error" {
				rep.AddedErrors++
			}
		}
		for _, d := range fixed {
			rep.Fixed = append(rep.Fixed, diagnosticToAPI(d))
		}
		return nil
	})
	return rep, err
}

// compare matches diagnostics by file, severity, code and message, not
// by line: the lines of a file move when code above them changes.
func compare(before, after []bridge.Diagnostic) (added, fixed []bridge.Diagnostic) {
	key := func(d bridge.Diagnostic) string {
		return d.File + "\x00" + d.Severity + "\x00" + d.Code + "\x00" + d.Message
	}
	count := map[string]int{}
	for _, d := range before {
		count[key(d)]++
	}
	for _, d := range after {
		if k := key(d); count[k] > 0 {
			count[k]--
		} else {
			added = append(added, d)
		}
	}
	for _, d := range before {
		if k := key(d); count[k] > 0 {
			count[k]--
			fixed = append(fixed, d)
		}
	}
	return added, fixed
}

// Servers lists the language servers of this peer.
func (s *Service) Servers(context.Context, *apiv1.LSPServersRequest) (*apiv1.LSPServersResponse, error) {
	resp := new(apiv1.LSPServersResponse)
	for _, i := range s.servers.Servers() {
		resp.Servers = append(resp.Servers, &apiv1.LSPServer{
			Root: i.Root, Workspace: s.workspaceOf(i.Root), Language: i.Language, Name: i.Name, Pid: int32(i.PID),
			State: i.State, Clients: uint32(max(i.Clients, 0)), MemoryBytes: uint64(max(i.MemoryBytes, 0)), Started: timestamppb.New(i.Started),
		})
	}
	return resp, nil
}
