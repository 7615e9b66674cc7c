package mcpserver

import (
	"context"

	"connectrpc.com/connect"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// defaultLSPLimit keeps a tool's answer small for a model: the first
// results, the count of all, and the offset to page on.
const defaultLSPLimit = 50

// LSPInput is what the lsp_ tools take: a workspace and a position (or a
// symbol by name).
type LSPInput struct {
	Workspace string            `json:"workspace" jsonschema:"the workspace directory on the peer's machine"`
	File      string            `json:"file,omitempty" jsonschema:"a file relative to the workspace"`
	Line      uint32            `json:"line,omitempty" jsonschema:"1-based line, as editors show"`
	Column    uint32            `json:"column,omitempty" jsonschema:"1-based column, as editors show"`
	Symbol    string            `json:"symbol,omitempty" jsonschema:"a symbol by name (pkg.Type.Method) instead of file, line and column"`
	Limit     uint32            `json:"limit,omitempty" jsonschema:"at most this many results (default 50)"`
	Offset    uint32            `json:"offset,omitempty" jsonschema:"skip this many results: page on with next_offset"`
	Peer      string            `json:"peer,omitempty" jsonschema:"ask the server on this peer (an id from list_peers); default this peer"`
	Labels    map[string]string `json:"labels,omitempty" jsonschema:"ask the server on a peer with gopls and these labels"`
}

func (s *Server) lspQuery(in LSPInput) (*apiv1.LSPQuery, error) {
	ws, err := s.absPath("workspace", in.Workspace)
	if err != nil {
		return nil, err
	}
	limit := in.Limit
	if limit == 0 {
		limit = defaultLSPLimit
	}
	return &apiv1.LSPQuery{Workspace: ws, File: in.File, Line: in.Line, Column: in.Column, Symbol: in.Symbol, Limit: limit, Offset: in.Offset,
		Peer: in.Peer, Labels: in.Labels}, nil
}

// LSPStamp says what an answer is about.
type LSPStamp struct {
	Root  string `json:"root" jsonschema:"the workspace root the server saw"`
	State string `json:"state" jsonschema:"ready, or warming: the server was still loading and the answer may be partial; ask again"`
}

func stampOut(st *apiv1.LSPStamp) LSPStamp { return LSPStamp{Root: st.GetRoot(), State: st.GetState()} }

// LSPLocation is a place in a file, 1-based.
type LSPLocation struct {
	File   string `json:"file"`
	Line   uint32 `json:"line"`
	Column uint32 `json:"column"`
}

// LSPLocations is lsp_definition's and lsp_references's result.
type LSPLocations struct {
	LSPStamp
	Locations  []LSPLocation `json:"locations"`
	Total      uint32        `json:"total"`
	NextOffset uint32        `json:"next_offset,omitempty" jsonschema:"more results: call again with this offset"`
}

func nextOffset(offset, shown, total uint32) uint32 {
	if offset+shown < total {
		return offset + shown
	}
	return 0
}

// LSPDiagnostic is one error or warning.
type LSPDiagnostic struct {
	File     string `json:"file"`
	Line     uint32 `json:"line"`
	Column   uint32 `json:"column"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
	Source   string `json:"source,omitempty"`
}

func diagnosticsOut(ds []*apiv1.LSPDiagnostic) []LSPDiagnostic {
	out := make([]LSPDiagnostic, 0, len(ds))
	for _, d := range ds {
		out = append(out, LSPDiagnostic{File: d.GetFile(), Line: d.GetLine(), Column: d.GetColumn(), Severity: d.GetSeverity(), Message: d.GetMessage(), Source: d.GetSource()})
	}
	return out
}

// LSPDiagnostics is lsp_diagnostics's result.
type LSPDiagnostics struct {
	LSPStamp
	Diagnostics []LSPDiagnostic `json:"diagnostics"`
	Total       uint32          `json:"total"`
	NextOffset  uint32          `json:"next_offset,omitempty"`
}

// LSPSymbol is one symbol.
type LSPSymbol struct {
	Name      string      `json:"name"`
	Kind      string      `json:"kind"`
	Container string      `json:"container,omitempty"`
	Location  LSPLocation `json:"location"`
}

// LSPSymbols is lsp_symbols's result.
type LSPSymbols struct {
	LSPStamp
	Symbols    []LSPSymbol `json:"symbols"`
	Total      uint32      `json:"total"`
	NextOffset uint32      `json:"next_offset,omitempty"`
}

// LSPEditInput is lsp_rename's and lsp_format's input.
type LSPEditInput struct {
	LSPInput
	NewName string `json:"new_name,omitempty" jsonschema:"rename: the new name"`
	Apply   bool   `json:"apply,omitempty" jsonschema:"merge the proposal into the workspace (three-way: local edits are kept)"`
}

// LSPEdit is a proposal.
type LSPEdit struct {
	LSPStamp
	Proposal  string   `json:"proposal" jsonschema:"the workspace with the edit, as a root CID"`
	Files     []string `json:"files"`
	Merged    []string `json:"merged,omitempty"`
	Conflicts []string `json:"conflicts,omitempty"`
}

// LSPVerifyInput is lsp_verify's input.
type LSPVerifyInput struct {
	Workspace string `json:"workspace" jsonschema:"the workspace whose warm server checks the roots"`
	Base      string `json:"base" jsonschema:"the root the change started from"`
	Result    string `json:"result" jsonschema:"the root to check, e.g. a task's result_root"`
	Peer      string `json:"peer,omitempty" jsonschema:"ask the server on this peer"`
}

// LSPVerifyReport is lsp_verify's result.
type LSPVerifyReport struct {
	LSPStamp
	Added       []LSPDiagnostic `json:"added"`
	Fixed       []LSPDiagnostic `json:"fixed"`
	AddedErrors uint32          `json:"added_errors"`
}

// LSPServers is lsp_servers's result.
type LSPServers struct {
	Servers []LSPServerInfo `json:"servers"`
}

// LSPServerInfo is one language server of the peer.
type LSPServerInfo struct {
	Workspace   string `json:"workspace"`
	Language    string `json:"language"`
	Name        string `json:"name"`
	PID         int32  `json:"pid"`
	State       string `json:"state"`
	Clients     uint32 `json:"clients"`
	MemoryBytes uint64 `json:"memory_bytes"`
}

func locationsOut(m *apiv1.LSPLocations, offset uint32) LSPLocations {
	out := LSPLocations{LSPStamp: stampOut(m.GetStamp()), Locations: []LSPLocation{}, Total: m.GetTotal()}
	for _, l := range m.GetLocations() {
		out.Locations = append(out.Locations, LSPLocation{File: l.GetFile(), Line: l.GetLine(), Column: l.GetColumn()})
	}
	out.NextOffset = nextOffset(offset, uint32(len(out.Locations)), out.Total)
	return out
}

// lspTool registers a tool that runs one query.
func lspTool[In, Out any](s *Server, name, title, desc string, readOnly bool, run func(context.Context, In) (Out, error)) {
	t := &mcp.Tool{Name: name, Title: title, Description: desc}
	if readOnly {
		t.Annotations = &mcp.ToolAnnotations{ReadOnlyHint: true}
	}
	mcp.AddTool(s.mcp, t, func(ctx context.Context, _ *mcp.CallToolRequest, in In) (*mcp.CallToolResult, Out, error) {
		out, err := run(ctx, in)
		if err != nil {
			var zero Out
			return nil, zero, toolError(err)
		}
		return nil, out, nil
	})
}

const positionHelp = ` Name the symbol by workspace, file, line and column (1-based, as editors show), or by symbol ("pkg.Type.Method").
Every answer is stamped with the root the server saw and its state: warming means the server was still loading; ask again rather than trust an empty list.`

func (s *Server) addLSPTools() {
	locate := func(name, title, desc string, call func(context.Context, *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPLocations], error)) {
		lspTool(s, name, title, desc+positionHelp, true, func(ctx context.Context, in LSPInput) (LSPLocations, error) {
			q, err := s.lspQuery(in)
			if err != nil {
				return LSPLocations{}, err
			}
			m, err := call(ctx, connect.NewRequest(q))
			if err != nil {
				return LSPLocations{}, err
			}
			return locationsOut(m.Msg, in.Offset), nil
		})
	}
	locate("lsp_definition", "Go to definition", `Return where the symbol is defined, from the workspace's warm language server (gopls for Go).`,
		func(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPLocations], error) {
			return s.api.LSP().Definition(ctx, r)
		})
	locate("lsp_references", "Find references", `Return every use of the symbol in the workspace (at most limit, default 50; total counts them all and next_offset pages on).`,
		func(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPLocations], error) {
			return s.api.LSP().References(ctx, r)
		})
	lspTool(s, "lsp_hover", "Type and documentation", `Return the type and documentation of the symbol.`+positionHelp, true,
		func(ctx context.Context, in LSPInput) (map[string]any, error) {
			q, err := s.lspQuery(in)
			if err != nil {
				return nil, err
			}
			m, err := s.api.LSP().Hover(ctx, connect.NewRequest(q))
			if err != nil {
				return nil, err
			}
			return map[string]any{"root": m.Msg.GetStamp().GetRoot(), "state": m.Msg.GetStamp().GetState(), "text": m.Msg.GetText()}, nil
		})
	lspTool(s, "lsp_symbols", "Find symbols", `Find symbols whose name matches query in the workspace, or list the symbols of file.`, true,
		func(ctx context.Context, in struct {
			LSPInput
			Query string `json:"query,omitempty" jsonschema:"part of a symbol's name"`
		}) (LSPSymbols, error) {
			q, err := s.lspQuery(in.LSPInput)
			if err != nil {
				return LSPSymbols{}, err
			}
			q.Query = in.Query
			m, err := s.api.LSP().Symbols(ctx, connect.NewRequest(q))
			if err != nil {
				return LSPSymbols{}, err
			}
			out := LSPSymbols{LSPStamp: stampOut(m.Msg.GetStamp()), Symbols: []LSPSymbol{}, Total: m.Msg.GetTotal()}
			for _, y := range m.Msg.GetSymbols() {
				l := y.GetLocation()
				out.Symbols = append(out.Symbols, LSPSymbol{Name: y.GetName(), Kind: y.GetKind(), Container: y.GetContainer(), Location: LSPLocation{File: l.GetFile(), Line: l.GetLine(), Column: l.GetColumn()}})
			}
			out.NextOffset = nextOffset(in.Offset, uint32(len(out.Symbols)), out.Total)
			return out, nil
		})
	lspTool(s, "lsp_diagnostics", "Errors and warnings", `Return the errors and warnings of file (or of the whole workspace), after importing the workspace as it is now: an edit shows at once.`, true,
		func(ctx context.Context, in LSPInput) (LSPDiagnostics, error) {
			q, err := s.lspQuery(in)
			if err != nil {
				return LSPDiagnostics{}, err
			}
			m, err := s.api.LSP().Diagnostics(ctx, connect.NewRequest(q))
			if err != nil {
				return LSPDiagnostics{}, err
			}
			out := LSPDiagnostics{LSPStamp: stampOut(m.Msg.GetStamp()), Diagnostics: diagnosticsOut(m.Msg.GetDiagnostics()), Total: m.Msg.GetTotal()}
			out.NextOffset = nextOffset(in.Offset, uint32(len(out.Diagnostics)), out.Total)
			return out, nil
		})
	edit := func(name, title, desc string, call func(context.Context, *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPEdit], error)) {
		lspTool(s, name, title, desc, false, func(ctx context.Context, in LSPEditInput) (LSPEdit, error) {
			q, err := s.lspQuery(in.LSPInput)
			if err != nil {
				return LSPEdit{}, err
			}
			q.NewName, q.Apply = in.NewName, in.Apply
			m, err := call(ctx, connect.NewRequest(q))
			if err != nil {
				return LSPEdit{}, err
			}
			e := m.Msg
			return LSPEdit{LSPStamp: stampOut(e.GetStamp()), Proposal: e.GetRoot(), Files: e.GetFiles(), Merged: e.GetMerged(), Conflicts: e.GetConflicts()}, nil
		})
	}
	edit("lsp_rename", "Rename a symbol", `Rename the symbol everywhere in the workspace (new_name). Returns a proposal: a root CID and the files it changes; apply: true merges it into the workspace three-way (local edits kept, conflicts listed).`+positionHelp,
		func(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPEdit], error) {
			return s.api.LSP().Rename(ctx, r)
		})
	edit("lsp_format", "Format a file", `Format file with the language's formatter. Returns a proposal (root CID); apply: true merges it into the workspace.`,
		func(ctx context.Context, r *connect.Request[apiv1.LSPQuery]) (*connect.Response[apiv1.LSPEdit], error) {
			return s.api.LSP().Format(ctx, r)
		})
	lspTool(s, "lsp_verify", "Check a change before merging it", `Load result (a root, e.g. a task's result_root) into the warm language server of its base's workspace and return the diagnostics it adds and those it fixes, per file. added_errors > 0: the change breaks the build.`, true,
		func(ctx context.Context, in LSPVerifyInput) (LSPVerifyReport, error) {
			ws, err := s.absPath("workspace", in.Workspace)
			if err != nil {
				return LSPVerifyReport{}, err
			}
			m, err := s.api.LSP().Verify(ctx, connect.NewRequest(&apiv1.LSPVerifyRequest{Workspace: ws, Base: in.Base, Result: in.Result, Peer: in.Peer}))
			if err != nil {
				return LSPVerifyReport{}, err
			}
			r := m.Msg
			return LSPVerifyReport{LSPStamp: stampOut(r.GetStamp()), Added: diagnosticsOut(r.GetAdded()), Fixed: diagnosticsOut(r.GetFixed()), AddedErrors: r.GetAddedErrors()}, nil
		})
	lspTool(s, "lsp_servers", "List language servers", `List the language servers this peer runs: workspace, language, pid, state (ready, warming), clients and memory.`, true,
		func(ctx context.Context, _ struct{}) (LSPServers, error) {
			m, err := s.api.LSP().Servers(ctx, connect.NewRequest(&apiv1.LSPServersRequest{}))
			if err != nil {
				return LSPServers{}, err
			}
			out := LSPServers{Servers: []LSPServerInfo{}}
			for _, x := range m.Msg.GetServers() {
				out.Servers = append(out.Servers, LSPServerInfo{Workspace: x.GetWorkspace(), Language: x.GetLanguage(), Name: x.GetName(), PID: x.GetPid(), State: x.GetState(), Clients: x.GetClients(), MemoryBytes: x.GetMemoryBytes()})
			}
			return out, nil
		})
}

// verifyReport is a task's verify report for run_task; nil without one.
func verifyReport(r *apiv1.LSPVerifyReport) *LSPVerifyReport {
	if r == nil {
		return nil
	}
	return &LSPVerifyReport{LSPStamp: stampOut(r.GetStamp()), Added: diagnosticsOut(r.GetAdded()), Fixed: diagnosticsOut(r.GetFixed()), AddedErrors: r.GetAddedErrors()}
}
