package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// browserTimeout bounds one browser call: a navigation waits at most the
// peer's navigate timeout (30 s by default), a download is stored as it is
// listed.
const browserTimeout = 5 * time.Minute

// browserCall runs one call of the browser service and prints its reply:
// as JSON with --json, else with text.
func browserCall[T any, P interface {
	*T
	proto.Message
}](cmd *cobra.Command, g *Globals, call func(context.Context, apiv1connect.BrowserServiceClient) (*connect.Response[T], error), text func(io.Writer, P) error) error {
	c, err := DialPeer(g)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), browserTimeout)
	defer cancel()
	resp, err := call(ctx, c.Browser())
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if g.JSON {
		return printProtoJSON(out, P(resp.Msg))
	}
	return text(out, P(resp.Msg))
}

// printProtoJSON prints an API message as JSON with the wire's field names.
func printProtoJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true, Multiline: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func req[T any](m *T) *connect.Request[T] { return connect.NewRequest(m) }

func printPage(w io.Writer, p *apiv1.BrowserPage) error {
	note := ""
	if !p.GetLoaded() {
		note += " (still loading at the timeout)"
	}
	if p.GetRecovered() {
		note += " (recovered: the tab was gone and was reopened)"
	}
	_, err := fmt.Fprintf(w, "%s\t%s%s\n", p.GetUrl(), p.GetTitle(), note)
	return err
}

func newBrowserCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "browser",
		Short: "Persistent Chromium sessions on any peer: open, navigate, snapshot, click, type, eval…",
		Long: `browser drives headless Chromium sessions that live on a peer of the mesh
until they are closed or idle for the lease (browser.idle_ttl, 30 min). A
session id (ID@PEER, printed by open) names the peer that hosts it, so any
peer can drive it. Snapshots list the page's elements with refs (e7) to
click or type into; screenshots, PDFs, downloads and saved states are
stored as DAGs and printed as CIDs, fetchable from any peer (ws get).

  S=$(cortex-peer browser open)
  cortex-peer browser navigate $S https://example.com
  cortex-peer browser snapshot $S
  cortex-peer browser click $S e7
  cortex-peer browser close $S`,
	}
	cmd.AddCommand(
		newBrowserOpenCmd(g), newBrowserNavigateCmd(g), newBrowserSnapshotCmd(g),
		newBrowserClickCmd(g), newBrowserTypeCmd(g), newBrowserEvalCmd(g),
		newBrowserScreenshotCmd(g), newBrowserPDFCmd(g), newBrowserUploadCmd(g),
		newBrowserListingCmd(g, "tabs", "List the session's tabs"),
		newBrowserListingCmd(g, "downloads", "List the session's downloads; finished ones with their CID"),
		newBrowserListingCmd(g, "console", "Print the page's last console messages"),
		newBrowserListingCmd(g, "network", "Print the page's last requests"),
		newBrowserStateCmd(g), newBrowserLsCmd(g), newBrowserCloseCmd(g),
	)
	return cmd
}

func newBrowserOpenCmd(g *Globals) *cobra.Command {
	var name, peerID, state string
	var labels []string
	cmd := &cobra.Command{
		Use:   "open [--name NAME] [--peer ID | --label k=v] [--state CID]",
		Short: "Open a session and print its id",
		Long: `open starts a browser session (its own cookies, storage and cache) on this
peer, on --peer, or on a peer with Chromium and the --label labels, and
prints its id. --state restores cookies and localStorage saved by
'browser state save', from any peer. With browser.persistent_profiles on the
hosting peer, --name keeps a profile of that name across sessions.`,
		Args: NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := &apiv1.BrowserOpenRequest{Name: name, Peer: peerID, State: state}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return Usage(fmt.Errorf("--label %q: want k=v", l))
				}
				if r.Labels == nil {
					r.Labels = map[string]string{}
				}
				r.Labels[k] = v
			}
			return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserSession], error) {
				return b.Open(ctx, req(r))
			}, func(w io.Writer, s *apiv1.BrowserSession) error {
				_, err := fmt.Fprintln(w, s.GetSession())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "a name for the session (its persistent profile with browser.persistent_profiles)")
	cmd.Flags().StringVar(&peerID, "peer", "", "open it on this peer (an id, or its first or last characters)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "open it on a peer with this label k=v (repeatable)")
	cmd.Flags().StringVar(&state, "state", "", "restore this saved state (a CID from 'browser state save')")
	return cmd
}

func newBrowserNavigateCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "navigate SESSION URL",
		Short: "Load a URL and print where the page ended and its title",
		Args:  exactArgs(2, "SESSION and URL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserPage], error) {
				return b.Navigate(ctx, req(&apiv1.BrowserNavigateRequest{Session: args[0], Url: args[1]}))
			}, printPage)
		},
	}
}

func newBrowserSnapshotCmd(g *Globals) *cobra.Command {
	var full bool
	var budget uint32
	cmd := &cobra.Command{
		Use:   "snapshot SESSION [--full]",
		Short: "Print the page's accessibility tree with a ref on every element to act on",
		Long: `snapshot prints the page as a model reads it: one line an element, with
[ref=eN] on each one that can be clicked or typed into. It stays within a
budget (browser.snapshot_budget, 32 KiB ≈ 8,000 tokens); --full also stores
the whole tree as a DAG and prints its CID. Refs of an older snapshot are
refused (stale_ref), never used on the wrong element.`,
		Args: exactArgs(1, "SESSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserSnapshotResponse], error) {
				return b.Snapshot(ctx, req(&apiv1.BrowserSnapshotRequest{Session: args[0], Full: full, Budget: budget}))
			}, func(w io.Writer, s *apiv1.BrowserSnapshotResponse) error {
				fmt.Fprintf(w, "# %s — %s (generation %d, %d refs)\n", s.GetPage().GetUrl(), s.GetPage().GetTitle(), s.GetGeneration(), s.GetRefs())
				if s.GetPage().GetRecovered() {
					fmt.Fprintln(w, "# recovered: the tab was gone and was reopened")
				}
				if f := s.GetFull(); f != nil {
					fmt.Fprintf(w, "# the whole tree: %s (%d bytes)\n", f.GetCid(), f.GetSize())
				}
				_, err := io.WriteString(w, s.GetText())
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&full, "full", false, "also store the whole tree as a DAG and print its CID")
	cmd.Flags().Uint32Var(&budget, "budget", 0, "bytes of text (default the peer's browser.snapshot_budget)")
	return cmd
}

// target reads REF or --selector: exactly one names the element.
func target(args []string, selector string) (ref string, rest []string, err error) {
	if selector != "" {
		return "", args, nil
	}
	if len(args) == 0 {
		return "", nil, Usage(fmt.Errorf("name the element: a REF from the last snapshot (e7) or --selector CSS"))
	}
	return args[0], args[1:], nil
}

func newBrowserClickCmd(g *Globals) *cobra.Command {
	var selector string
	cmd := &cobra.Command{
		Use:   "click SESSION REF|--selector CSS",
		Short: "Click the element a ref of the last snapshot or a CSS selector names",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, rest, err := target(args[1:], selector)
			if err != nil {
				return err
			}
			if len(rest) > 0 {
				return Usage(fmt.Errorf("click takes a REF or --selector, not both"))
			}
			return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserPage], error) {
				return b.Click(ctx, req(&apiv1.BrowserActRequest{Session: args[0], Ref: ref, Selector: selector}))
			}, printPage)
		},
	}
	cmd.Flags().StringVar(&selector, "selector", "", "a CSS selector instead of a ref")
	return cmd
}

func newBrowserTypeCmd(g *Globals) *cobra.Command {
	var selector string
	var submit bool
	cmd := &cobra.Command{
		Use:   "type SESSION REF|--selector CSS TEXT [--submit]",
		Short: "Type text into the element a ref or a CSS selector names",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, rest, err := target(args[1:], selector)
			if err != nil {
				return err
			}
			if len(rest) != 1 {
				return Usage(fmt.Errorf("type takes SESSION, a REF or --selector, and the TEXT"))
			}
			return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserPage], error) {
				return b.Type(ctx, req(&apiv1.BrowserActRequest{Session: args[0], Ref: ref, Selector: selector, Text: rest[0], Submit: submit}))
			}, printPage)
		},
	}
	cmd.Flags().StringVar(&selector, "selector", "", "a CSS selector instead of a ref")
	cmd.Flags().BoolVar(&submit, "submit", false, "press Enter after the text")
	return cmd
}

func newBrowserEvalCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "eval SESSION EXPRESSION",
		Short: "Run a JavaScript expression in the page and print its value as JSON",
		Args:  exactArgs(2, "SESSION and EXPRESSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserEvaluateResponse], error) {
				return b.Evaluate(ctx, req(&apiv1.BrowserEvaluateRequest{Session: args[0], Expression: args[1]}))
			}, func(w io.Writer, r *apiv1.BrowserEvaluateResponse) error {
				_, err := fmt.Fprintln(w, r.GetValue())
				return err
			})
		},
	}
}

// saveArtifact writes an artifact to path: its inline bytes, or the file
// fetched by CID through the peer.
func saveArtifact(ctx context.Context, c *apiclient.Client, a *apiv1.BrowserArtifact, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if a.GetInline() != nil {
		return os.WriteFile(abs, a.GetInline(), 0o644)
	}
	_, err = c.WorkspaceGet(ctx, a.GetCid(), abs, 0, false, nil)
	return err
}

// newArtifactCmd is a verb that makes an artifact and prints its CID, or
// writes it with -o.
func newArtifactCmd(g *Globals, use, short, long string, call func(ctx context.Context, b apiv1connect.BrowserServiceClient, session string) (*connect.Response[apiv1.BrowserArtifact], error), flags func(*cobra.Command)) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use: use, Short: short, Long: long,
		Args: exactArgs(1, "SESSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := DialPeer(g)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), browserTimeout)
			defer cancel()
			resp, err := call(ctx, c.Browser(), args[0])
			if err != nil {
				return err
			}
			a := resp.Msg
			if output != "" {
				if err := saveArtifact(ctx, c, a, output); err != nil {
					return fmt.Errorf("write %s: %w", output, err)
				}
			}
			if g.JSON {
				a.Inline = nil // the file is its CID (and -o)
				return printProtoJSON(cmd.OutOrStdout(), a)
			}
			where := ""
			if output != "" {
				where = " -> " + output
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\t%d bytes%s\n", a.GetCid(), a.GetSize(), where)
			return err
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "also write it to this file")
	if flags != nil {
		flags(cmd)
	}
	return cmd
}

func newBrowserScreenshotCmd(g *Globals) *cobra.Command {
	var fullPage bool
	return newArtifactCmd(g, "screenshot SESSION [-o shot.png] [--full-page]",
		"Take a PNG screenshot, stored as a DAG; print its CID",
		"screenshot stores a PNG of the viewport (--full-page: the whole page) on the\nhosting peer and prints its CID and size; -o writes it here too.",
		func(ctx context.Context, b apiv1connect.BrowserServiceClient, s string) (*connect.Response[apiv1.BrowserArtifact], error) {
			return b.Screenshot(ctx, req(&apiv1.BrowserScreenshotRequest{Session: s, FullPage: fullPage}))
		}, func(cmd *cobra.Command) {
			cmd.Flags().BoolVar(&fullPage, "full-page", false, "the whole page, not the viewport")
		})
}

func newBrowserPDFCmd(g *Globals) *cobra.Command {
	return newArtifactCmd(g, "pdf SESSION [-o page.pdf]",
		"Print the page as PDF, stored as a DAG; print its CID", "",
		func(ctx context.Context, b apiv1connect.BrowserServiceClient, s string) (*connect.Response[apiv1.BrowserArtifact], error) {
			return b.PDF(ctx, req(&apiv1.BrowserSessionRequest{Session: s}))
		}, nil)
}

func newBrowserStateCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{Use: "state", Short: "Save a session's cookies and localStorage: state save"}
	cmd.AddCommand(newArtifactCmd(g, "save SESSION",
		"Store the session's cookies and localStorage as a DAG; print its CID",
		"state save prints a CID that 'browser open --state CID' restores on any peer,\nso a logged-in session can move. It holds credentials: share it as one.",
		func(ctx context.Context, b apiv1connect.BrowserServiceClient, s string) (*connect.Response[apiv1.BrowserArtifact], error) {
			return b.SaveState(ctx, req(&apiv1.BrowserSessionRequest{Session: s}))
		}, nil))
	return cmd
}

func newBrowserUploadCmd(g *Globals) *cobra.Command {
	var selector, name string
	cmd := &cobra.Command{
		Use:   "upload SESSION REF|--selector CSS PATH|CID",
		Short: "Put a file (a path here, or a CID of the mesh) into a file input",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, rest, err := target(args[1:], selector)
			if err != nil {
				return err
			}
			if len(rest) != 1 {
				return Usage(fmt.Errorf("upload takes SESSION, a REF or --selector, and a PATH or CID"))
			}
			r := &apiv1.BrowserUploadRequest{Session: args[0], Ref: ref, Selector: selector, Name: name}
			if _, err := os.Stat(rest[0]); err == nil {
				if r.Path, err = filepath.Abs(rest[0]); err != nil {
					return err
				}
			} else {
				r.Cid = rest[0]
			}
			return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserPage], error) {
				return b.Upload(ctx, req(r))
			}, printPage)
		},
	}
	cmd.Flags().StringVar(&selector, "selector", "", "a CSS selector instead of a ref")
	cmd.Flags().StringVar(&name, "name", "", "the file's name as the page sees it (default the path's base name)")
	return cmd
}

func newBrowserListingCmd(g *Globals, verb, short string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " SESSION",
		Short: short,
		Args:  exactArgs(1, "SESSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := req(&apiv1.BrowserSessionRequest{Session: args[0]})
			switch verb {
			case "tabs":
				return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserTabsResponse], error) {
					return b.Tabs(ctx, r)
				}, func(w io.Writer, m *apiv1.BrowserTabsResponse) error {
					tw := newTable(w)
					fmt.Fprintln(tw, "TAB\tACTIVE\tURL\tTITLE")
					for _, t := range m.GetTabs() {
						fmt.Fprintf(tw, "%s\t%v\t%s\t%s\n", t.GetId(), t.GetActive(), t.GetUrl(), t.GetTitle())
					}
					return tw.Flush()
				})
			case "downloads":
				return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserDownloadsResponse], error) {
					return b.Downloads(ctx, r)
				}, func(w io.Writer, m *apiv1.BrowserDownloadsResponse) error {
					tw := newTable(w)
					fmt.Fprintln(tw, "NAME\tSTATE\tBYTES\tCID\tURL")
					for _, d := range m.GetDownloads() {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d.GetName(), d.GetState(), d.GetBytes(), orDash(d.GetCid()), d.GetUrl())
					}
					return tw.Flush()
				})
			case "console":
				return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserConsoleResponse], error) {
					return b.Console(ctx, r)
				}, func(w io.Writer, m *apiv1.BrowserConsoleResponse) error {
					for _, e := range m.GetMessages() {
						fmt.Fprintf(w, "%s %-7s %s\n", e.GetTime().AsTime().Format("15:04:05.000"), e.GetLevel(), e.GetText())
					}
					return nil
				})
			default:
				return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserNetworkResponse], error) {
					return b.Network(ctx, r)
				}, func(w io.Writer, m *apiv1.BrowserNetworkResponse) error {
					tw := newTable(w)
					fmt.Fprintln(tw, "STATUS\tMETHOD\tTYPE\tURL")
					for _, n := range m.GetRequests() {
						status := fmt.Sprint(n.GetStatus())
						if n.GetError() != "" {
							status = n.GetError()
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", status, n.GetMethod(), n.GetType(), n.GetUrl())
					}
					return tw.Flush()
				})
			}
		},
	}
}

func newBrowserLsCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the sessions this peer hosts and those it opened on other peers",
		Args:    NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserListResponse], error) {
				return b.List(ctx, req(&apiv1.BrowserListRequest{}))
			}, func(w io.Writer, m *apiv1.BrowserListResponse) error {
				tw := newTable(w)
				fmt.Fprintln(tw, "SESSION\tNAME\tOPENED\tEXPIRES\tURL")
				now := time.Now()
				for _, s := range m.GetSessions() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.GetSession(), orDash(s.GetName()), formatAgo(s.GetOpenedAt().AsTime(), now),
						s.GetExpiresAt().AsTime().Sub(now).Round(time.Second), orDash(s.GetUrl()))
				}
				for p, why := range m.GetUnreachable() {
					fmt.Fprintf(tw, "# peer %s: %s\n", p, why)
				}
				return tw.Flush()
			})
		},
	}
}

func newBrowserCloseCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "close SESSION",
		Short: "Close a session (save its state first if you want it back)",
		Args:  exactArgs(1, "SESSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return browserCall(cmd, g, func(ctx context.Context, b apiv1connect.BrowserServiceClient) (*connect.Response[apiv1.BrowserCloseResponse], error) {
				return b.Close(ctx, req(&apiv1.BrowserSessionRequest{Session: args[0]}))
			}, func(io.Writer, *apiv1.BrowserCloseResponse) error { return nil })
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
