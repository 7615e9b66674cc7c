package cli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// lspFlags are what every lsp verb takes.
type lspFlags struct {
	workspace string
	symbol    string
	limit     uint32
	peer      string
	labels    []string
}

func (f *lspFlags) add(cmd *cobra.Command, position bool) {
	cmd.Flags().StringVar(&f.workspace, "workspace", ".", "the workspace directory (imported incrementally before each call)")
	cmd.Flags().Uint32Var(&f.limit, "limit", 0, "at most this many results (default 200); the rest is counted")
	cmd.Flags().StringVar(&f.peer, "peer", "", "ask the server on this peer (an id, or its first or last characters)")
	cmd.Flags().StringArrayVar(&f.labels, "label", nil, "ask the server on a peer with gopls and this label k=v (repeatable)")
	if position {
		cmd.Flags().StringVar(&f.symbol, "symbol", "", "a symbol by name (pkg.Type.Method) instead of FILE:LINE:COL")
	}
}

// query builds the query of a verb from its flags and FILE:LINE:COL.
func (f *lspFlags) query(pos string) (*apiv1.LSPQuery, error) {
	ws, err := filepath.Abs(f.workspace)
	if err != nil {
		return nil, err
	}
	q := &apiv1.LSPQuery{Workspace: ws, Symbol: f.symbol, Limit: f.limit, Peer: f.peer}
	if q.Labels, err = parseLabels(f.labels); err != nil {
		return nil, err
	}
	if pos == "" {
		return q, nil
	}
	parts := strings.Split(pos, ":")
	if len(parts) < 3 {
		return nil, Usage(fmt.Errorf("position %q: want FILE:LINE:COL (1-based, as editors show)", pos))
	}
	n := len(parts)
	line, err1 := strconv.ParseUint(parts[n-2], 10, 32)
	col, err2 := strconv.ParseUint(parts[n-1], 10, 32)
	if err1 != nil || err2 != nil || line == 0 || col == 0 {
		return nil, Usage(fmt.Errorf("position %q: want FILE:LINE:COL with 1-based numbers", pos))
	}
	file := strings.Join(parts[:n-2], ":")
	if filepath.IsAbs(file) {
		if rel, err := filepath.Rel(ws, file); err == nil {
			file = rel
		}
	}
	q.File, q.Line, q.Column = filepath.ToSlash(file), uint32(line), uint32(col)
	return q, nil
}

// parseLabels reads repeated --label k=v flags.
func parseLabels(flags []string) (map[string]string, error) {
	var out map[string]string
	for _, l := range flags {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, Usage(fmt.Errorf("--label %q: want k=v", l))
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out, nil
}

// lspCall runs one call of the language-server service and prints it.
func lspCall[T any, P interface {
	*T
	proto.Message
}](cmd *cobra.Command, g *Globals, call func(context.Context, apiv1connect.LSPServiceClient) (*connect.Response[T], error), text func(io.Writer, P) error) error {
	c, err := DialPeer(g)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
	defer cancel()
	resp, err := call(ctx, c.LSP())
	if err != nil {
		return err
	}
	m := P(resp.Msg)
	if g.JSON {
		return printProtoJSON(cmd.OutOrStdout(), m)
	}
	if st, ok := any(m).(interface{ GetStamp() *apiv1.LSPStamp }); ok && st.GetStamp().GetState() == "warming" {
		fmt.Fprintln(cmd.ErrOrStderr(), "# the language server is still loading the workspace: this answer may be partial; ask again")
	}
	return text(cmd.OutOrStdout(), m)
}

func formatLocation(l *apiv1.LSPLocation) string {
	return fmt.Sprintf("%s:%d:%d", l.GetFile(), l.GetLine(), l.GetColumn())
}

func printLocations(w io.Writer, r *apiv1.LSPLocations) error {
	for _, l := range r.GetLocations() {
		fmt.Fprintln(w, formatLocation(l))
	}
	if n := uint32(len(r.GetLocations())); r.GetTotal() > n {
		fmt.Fprintf(w, "# %d more (--limit)\n", r.GetTotal()-n)
	}
	return nil
}

func newLSPCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lsp",
		Short: "Ask a warm language server: definition, references, hover, symbols, diagnostics, rename, format, verify",
		Long: `lsp asks the language server of a workspace (gopls for Go), one warm process
per workspace on this peer, shared by every client. Each call imports the
workspace first (incrementally) and tells the server exactly which files
changed. Lines and columns are 1-based, as editors show them. An answer from
a server still loading the workspace is marked warming, never passed off as
empty.

  cortex-peer lsp definition --workspace ~/src/app main.go:12:7
  cortex-peer lsp references --workspace ~/src/app --symbol app.Server.Run
  cortex-peer lsp diagnostics --workspace ~/src/app
  cortex-peer lsp rename --workspace ~/src/app main.go:12:7 NewName --apply`,
	}
	cmd.AddCommand(
		newLSPPositionCmd(g, "definition", "Print where the symbol at FILE:LINE:COL is defined", func(ctx context.Context, c apiv1connect.LSPServiceClient, q *apiv1.LSPQuery) (*connect.Response[apiv1.LSPLocations], error) {
			return c.Definition(ctx, req(q))
		}),
		newLSPPositionCmd(g, "references", "Print every use of the symbol at FILE:LINE:COL", func(ctx context.Context, c apiv1connect.LSPServiceClient, q *apiv1.LSPQuery) (*connect.Response[apiv1.LSPLocations], error) {
			return c.References(ctx, req(q))
		}),
		newLSPHoverCmd(g), newLSPSymbolsCmd(g), newLSPDiagnosticsCmd(g),
		newLSPEditCmd(g, "rename", "FILE:LINE:COL NEWNAME", "Rename the symbol at FILE:LINE:COL everywhere: a proposal, merged with --apply"),
		newLSPEditCmd(g, "format", "FILE", "Format a file: a proposal, merged with --apply"),
		newLSPVerifyCmd(g), newLSPServersCmd(g),
	)
	return cmd
}

// positionArg reads the FILE:LINE:COL argument, or none with --symbol.
func positionArg(f *lspFlags, args []string) (string, error) {
	switch {
	case len(args) == 1 && f.symbol == "":
		return args[0], nil
	case len(args) == 0 && f.symbol != "":
		return "", nil
	}
	return "", Usage(fmt.Errorf("give FILE:LINE:COL or --symbol NAME"))
}

func newLSPPositionCmd(g *Globals, verb, short string, call func(context.Context, apiv1connect.LSPServiceClient, *apiv1.LSPQuery) (*connect.Response[apiv1.LSPLocations], error)) *cobra.Command {
	var f lspFlags
	cmd := &cobra.Command{
		Use:   verb + " [--workspace DIR] FILE:LINE:COL | --symbol NAME",
		Short: short,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pos, err := positionArg(&f, args)
			if err != nil {
				return err
			}
			q, err := f.query(pos)
			if err != nil {
				return err
			}
			return lspCall(cmd, g, func(ctx context.Context, c apiv1connect.LSPServiceClient) (*connect.Response[apiv1.LSPLocations], error) {
				return call(ctx, c, q)
			}, printLocations)
		},
	}
	f.add(cmd, true)
	return cmd
}

func newLSPHoverCmd(g *Globals) *cobra.Command {
	var f lspFlags
	cmd := &cobra.Command{
		Use:   "hover [--workspace DIR] FILE:LINE:COL | --symbol NAME",
		Short: "Print the type and documentation of the symbol at FILE:LINE:COL",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pos, err := positionArg(&f, args)
			if err != nil {
				return err
			}
			q, err := f.query(pos)
			if err != nil {
				return err
			}
			return lspCall(cmd, g, func(ctx context.Context, c apiv1connect.LSPServiceClient) (*connect.Response[apiv1.LSPHover], error) {
				return c.Hover(ctx, req(q))
			}, func(w io.Writer, h *apiv1.LSPHover) error {
				_, err := fmt.Fprintln(w, strings.TrimRight(h.GetText(), "\n"))
				return err
			})
		},
	}
	f.add(cmd, true)
	return cmd
}

func newLSPSymbolsCmd(g *Globals) *cobra.Command {
	var f lspFlags
	var file string
	cmd := &cobra.Command{
		Use:   "symbols [--workspace DIR] [QUERY] [--file FILE]",
		Short: "Find symbols by name in the workspace, or list a file's",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := f.query("")
			if err != nil {
				return err
			}
			if len(args) == 1 {
				q.Query = args[0]
			}
			q.File = file
			return lspCall(cmd, g, func(ctx context.Context, c apiv1connect.LSPServiceClient) (*connect.Response[apiv1.LSPSymbols], error) {
				return c.Symbols(ctx, req(q))
			}, func(w io.Writer, r *apiv1.LSPSymbols) error {
				tw := newTable(w)
				for _, y := range r.GetSymbols() {
					name := y.GetName()
					if y.GetContainer() != "" {
						name = y.GetContainer() + "." + name
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", y.GetKind(), name, formatLocation(y.GetLocation()))
				}
				if n := uint32(len(r.GetSymbols())); r.GetTotal() > n {
					fmt.Fprintf(tw, "# %d more (--limit)\n", r.GetTotal()-n)
				}
				return tw.Flush()
			})
		},
	}
	f.add(cmd, false)
	cmd.Flags().StringVar(&file, "file", "", "list the symbols of this file")
	return cmd
}

func printDiagnostics(w io.Writer, ds []*apiv1.LSPDiagnostic) {
	for _, d := range ds {
		src := ""
		if d.GetSource() != "" {
			src = " (" + d.GetSource() + ")"
		}
		fmt.Fprintf(w, "%s:%d:%d: %s: %s%s\n", d.GetFile(), d.GetLine(), d.GetColumn(), d.GetSeverity(), d.GetMessage(), src)
	}
}

func newLSPDiagnosticsCmd(g *Globals) *cobra.Command {
	var f lspFlags
	cmd := &cobra.Command{
		Use:   "diagnostics [--workspace DIR] [FILE...]",
		Short: "Print the errors and warnings of files (default: the whole workspace)",
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := f.query("")
			if err != nil {
				return err
			}
			for _, a := range args {
				if filepath.IsAbs(a) {
					if rel, err := filepath.Rel(q.Workspace, a); err == nil {
						a = rel
					}
				}
				q.Files = append(q.Files, filepath.ToSlash(a))
			}
			return lspCall(cmd, g, func(ctx context.Context, c apiv1connect.LSPServiceClient) (*connect.Response[apiv1.LSPDiagnostics], error) {
				return c.Diagnostics(ctx, req(q))
			}, func(w io.Writer, r *apiv1.LSPDiagnostics) error {
				printDiagnostics(w, r.GetDiagnostics())
				if n := uint32(len(r.GetDiagnostics())); r.GetTotal() > n {
					fmt.Fprintf(w, "# %d more (--limit)\n", r.GetTotal()-n)
				}
				return nil
			})
		},
	}
	f.add(cmd, false)
	return cmd
}

func newLSPEditCmd(g *Globals, verb, args, short string) *cobra.Command {
	var f lspFlags
	var apply bool
	n := strings.Count(args, " ") + 1
	cmd := &cobra.Command{
		Use:   verb + " [--workspace DIR] " + args + " [--apply]",
		Short: short,
		Long: short + `.
The edit is made on the peer's copy of the workspace and printed as a new
root CID with the files it changes; --apply merges it three-way into the
directory, as a task's result is: a file you edited meanwhile is merged
line-wise or left as a conflict (the proposal beside it as FILE.theirs).`,
		Args: exactArgs(n, args),
		RunE: func(cmd *cobra.Command, a []string) error {
			q, err := f.query(a[0])
			if verb == "format" {
				q, err = f.query("")
				if err == nil {
					q.File = filepath.ToSlash(a[0])
				}
			}
			if err != nil {
				return err
			}
			if verb == "rename" {
				q.NewName = a[1]
			}
			q.Apply = apply
			return lspCall(cmd, g, func(ctx context.Context, c apiv1connect.LSPServiceClient) (*connect.Response[apiv1.LSPEdit], error) {
				if verb == "rename" {
					return c.Rename(ctx, req(q))
				}
				return c.Format(ctx, req(q))
			}, func(w io.Writer, e *apiv1.LSPEdit) error {
				fmt.Fprintf(w, "proposal %s (%d files)\n", e.GetRoot(), len(e.GetFiles()))
				for _, p := range e.GetFiles() {
					fmt.Fprintf(w, "M %s\n", p)
				}
				if apply {
					fmt.Fprintf(w, "applied: %d merged, %d conflicts\n", len(e.GetMerged()), len(e.GetConflicts()))
					for _, p := range e.GetConflicts() {
						fmt.Fprintf(w, "C %s (the proposal is in %s.theirs)\n", p, p)
					}
				}
				return nil
			})
		},
	}
	f.add(cmd, false)
	cmd.Flags().BoolVar(&apply, "apply", false, "merge the proposal into the workspace")
	return cmd
}

func newLSPVerifyCmd(g *Globals) *cobra.Command {
	var f lspFlags
	cmd := &cobra.Command{
		Use:   "verify [--workspace DIR] BASE_CID RESULT_CID",
		Short: "Print the diagnostics a result root adds to its base and those it fixes (exit 1 when it adds errors)",
		Args:  exactArgs(2, "BASE_CID and RESULT_CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ws, err := filepath.Abs(f.workspace)
			if err != nil {
				return err
			}
			var added uint32
			err = lspCall(cmd, g, func(ctx context.Context, c apiv1connect.LSPServiceClient) (*connect.Response[apiv1.LSPVerifyReport], error) {
				labels, err := parseLabels(f.labels)
				if err != nil {
					return nil, err
				}
				resp, err := c.Verify(ctx, req(&apiv1.LSPVerifyRequest{Workspace: ws, Base: args[0], Result: args[1], Peer: f.peer, Labels: labels}))
				if err == nil {
					added = resp.Msg.GetAddedErrors()
				}
				return resp, err
			}, func(w io.Writer, r *apiv1.LSPVerifyReport) error {
				fmt.Fprintf(w, "added (%d, %d errors):\n", len(r.GetAdded()), r.GetAddedErrors())
				printDiagnostics(w, r.GetAdded())
				fmt.Fprintf(w, "fixed (%d):\n", len(r.GetFixed()))
				printDiagnostics(w, r.GetFixed())
				return nil
			})
			if err == nil && added > 0 {
				return exitStatus{ExitError}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&f.workspace, "workspace", ".", "the workspace whose warm server checks the roots")
	cmd.Flags().StringVar(&f.peer, "peer", "", "ask the server on this peer")
	cmd.Flags().StringArrayVar(&f.labels, "label", nil, "ask the server on a peer with this label k=v (repeatable)")
	return cmd
}

func newLSPServersCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "servers",
		Short: "List the language servers this peer runs",
		Args:  NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lspCall(cmd, g, func(ctx context.Context, c apiv1connect.LSPServiceClient) (*connect.Response[apiv1.LSPServersResponse], error) {
				return c.Servers(ctx, req(&apiv1.LSPServersRequest{}))
			}, func(w io.Writer, r *apiv1.LSPServersResponse) error {
				tw := newTable(w)
				fmt.Fprintln(tw, "LANGUAGE\tSERVER\tPID\tSTATE\tCLIENTS\tMEMORY\tWORKSPACE")
				for _, s := range r.GetServers() {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d MiB\t%s\n", s.GetLanguage(), s.GetName(), s.GetPid(), s.GetState(), s.GetClients(), s.GetMemoryBytes()>>20, orDash(s.GetWorkspace()))
				}
				return tw.Flush()
			})
		},
	}
}
