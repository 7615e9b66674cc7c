package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return UsageError{fmt.Errorf("%s takes %s, got %d arguments", cmd.CommandPath(), names, len(args))}
		}
		return nil
	}
}

// withClient runs call with a client of the peer; long operations have no
// deadline but end on SIGINT.
func withClient(cmd *cobra.Command, g *Globals, call func(context.Context, *apiclient.Client) error) error {
	c, err := DialPeer(g)
	if err != nil {
		return err
	}
	defer c.Close()
	return call(cmd.Context(), c)
}

func newWsCmd(g *Globals) *cobra.Command {
	ws := &cobra.Command{
		Use:   "ws",
		Short: "Workspaces as Merkle DAGs: add, get, diff, merge, gc",
		Long: `A workspace is a directory imported into a content-addressed Merkle DAG
(UnixFS, CIDv1, raw leaves, content-defined chunks). Peers fetch it block by
block and only the blocks they lack travel; results merge back without ever
overwriting a local edit. A .cortexignore file (gitignore syntax) excludes paths.`,
	}
	ws.AddCommand(newWsAddCmd(g), newWsGetCmd(g), newWsDiffCmd(g), newWsMergeCmd(g), newWsGCCmd(g), newWsVerifyCmd(g))
	return ws
}

func newWsAddCmd(g *Globals) *cobra.Command {
	var noIndex bool
	cmd := &cobra.Command{
		Use:   "add DIR",
		Short: "Import a directory and print its root CID",
		Long: `add imports DIR into the peer's store and pins its root under DIR's path
(a later add of the same DIR moves the pin). It is incremental: a file whose
size, mtime, ctime, inode and mode are those of the last add is not read again.`,
		Example: "  cortex-peer ws add ./myrepo\n  cortex-peer ws add --json ./myrepo",
		Args:    exactArgs(1, "one directory"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				p := newProgress(g, cmd.ErrOrStderr())
				res, err := c.WorkspaceAdd(ctx, dir, noIndex, p.update)
				p.done()
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if g.JSON {
					return PrintJSON(out, map[string]any{
						"cid": res.GetCid(), "files": res.GetFiles(), "dirs": res.GetDirs(), "symlinks": res.GetSymlinks(),
						"bytes": res.GetBytes(), "files_read": res.GetFilesRead(), "bytes_read": res.GetBytesRead(),
						"new_blocks": res.GetNewBlocks(), "new_bytes": res.GetNewBytes(), "ignored": res.GetIgnored(),
						"skipped": res.GetSkipped(), "seconds": res.GetSeconds(),
						"unchanged": res.GetUnchanged(), "dirs_listed": res.GetDirsListed(),
					})
				}
				fmt.Fprintln(out, res.GetCid())
				scanned := fmt.Sprintf("listed %d dirs", res.GetDirsListed())
				if res.GetUnchanged() {
					scanned = "unchanged since the last import (watched)"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%d files (%s), %d dirs, %d symlinks; %s, read %d files; %d new blocks (%s); %d ignored; %.2fs\n",
					res.GetFiles(), formatBytes(res.GetBytes()), res.GetDirs(), res.GetSymlinks(), scanned, res.GetFilesRead(),
					res.GetNewBlocks(), formatBytes(res.GetNewBytes()), res.GetIgnored(), res.GetSeconds())
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&noIndex, "no-index", false, "read every file, ignoring the incremental index and the watch of the tree")
	return cmd
}

func newWsGetCmd(g *Globals) *cobra.Command {
	var stall time.Duration
	var allowEscapingLinks bool
	cmd := &cobra.Command{
		Use:   "get CID DIR",
		Short: "Fetch a workspace from the mesh into a new directory",
		Long: `get fetches the DAG of CID from the peers of the mesh (only the blocks this
peer lacks, each verified against its hash), pins it, and writes it into DIR,
which must not exist. A failed get leaves nothing at DIR; run it again to
resume: fetched blocks are kept.

Files and directories keep their permission bits (never setuid, setgid or
sticky). A symlink that points out of the tree (absolute, or above DIR) is
not created unless --allow-escaping-links; each one skipped is named in a
notice (and in "skipped_links" with --json).`,
		Example: "  cortex-peer ws get bafybei... ./copy",
		Args:    exactArgs(2, "a CID and a new directory"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dest, err := filepath.Abs(args[1])
			if err != nil {
				return err
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				p := newProgress(g, cmd.ErrOrStderr())
				res, err := c.WorkspaceGet(ctx, args[0], dest, stall, allowEscapingLinks, p.update)
				p.done()
				if err != nil {
					return err
				}
				if g.JSON {
					skipped := make([]map[string]string, 0, len(res.GetSkippedLinks()))
					for _, l := range res.GetSkippedLinks() {
						skipped = append(skipped, map[string]string{"path": l.GetPath(), "target": l.GetTarget()})
					}
					return PrintJSON(cmd.OutOrStdout(), map[string]any{
						"cid": res.GetCid(), "path": res.GetPath(), "blocks": res.GetBlocks(), "fetched_blocks": res.GetFetchedBlocks(),
						"fetched_bytes": res.GetFetchedBytes(), "files": res.GetFiles(), "bytes": res.GetBytes(), "seconds": res.GetSeconds(),
						"skipped_links": skipped,
					})
				}
				for _, l := range res.GetSkippedLinks() {
					fmt.Fprintf(cmd.ErrOrStderr(), "notice: %s -> %s points out of the tree; not created (--allow-escaping-links creates it)\n", l.GetPath(), l.GetTarget())
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s -> %s: %d files (%s); fetched %d of %d blocks (%s); %.2fs\n",
					res.GetCid(), res.GetPath(), res.GetFiles(), formatBytes(res.GetBytes()), res.GetFetchedBlocks(),
					res.GetBlocks(), formatBytes(res.GetFetchedBytes()), res.GetSeconds())
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&stall, "stall-timeout", 60*time.Second, "give up when no block arrives for this long")
	cmd.Flags().BoolVar(&allowEscapingLinks, "allow-escaping-links", false, "create symlinks that point out of the tree (absolute, or above DIR) as they are")
	return cmd
}

func newWsDiffCmd(g *Globals) *cobra.Command {
	var stall time.Duration
	cmd := &cobra.Command{
		Use:     "diff CID1 CID2",
		Short:   "List the paths added, removed, modified or mode-changed from CID1 to CID2",
		Example: "  cortex-peer ws diff bafy...old bafy...new",
		Args:    exactArgs(2, "two CIDs"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				changes, err := c.WorkspaceDiff(ctx, args[0], args[1], stall)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if g.JSON {
					list := make([]map[string]any, len(changes))
					for i, ch := range changes {
						list[i] = map[string]any{"path": ch.GetPath(), "kind": ch.GetKind(), "is_dir": ch.GetIsDir()}
					}
					return PrintJSON(out, list)
				}
				marks := map[string]string{"added": "A", "removed": "D", "modified": "M", "mode-changed": "P"}
				for _, ch := range changes {
					suffix := ""
					if ch.GetIsDir() {
						suffix = "/"
					}
					fmt.Fprintf(out, "%s %s%s\n", marks[ch.GetKind()], ch.GetPath(), suffix)
				}
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&stall, "stall-timeout", 60*time.Second, "give up when no block of a root this peer lacks arrives for this long")
	return cmd
}

func newWsMergeCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "merge BASE THEIRS DIR",
		Short: "Three-way merge the changes BASE -> THEIRS into DIR, never overwriting a local edit",
		Long: `merge applies what changed from BASE to THEIRS to DIR, which may have been
edited since BASE. A path changed only in THEIRS is applied; a path changed
only locally stays; a text file changed on both sides is merged line-wise when
the edits do not overlap. Anything else is a conflict: the local path is left
as it is, THEIRS is written beside it as PATH.theirs (PATH.theirs.1, ... when
that name is taken), and the conflict is reported. The exit status is 1 when there are conflicts.`,
		Example: "  cortex-peer ws merge bafy...base bafy...result ./myrepo",
		Args:    exactArgs(3, "BASE, THEIRS and a directory"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[2])
			if err != nil {
				return err
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				resp, err := c.WorkspaceMerge(ctx, args[0], args[1], dir)
				if err != nil {
					return err
				}
				rep := resp.GetReport()
				if err := printMergeResponse(cmd, g, resp); err != nil {
					return err
				}
				if len(rep.GetConflicts()) > 0 {
					return errConflicts{n: len(rep.GetConflicts())}
				}
				return nil
			})
		},
	}
}

// errConflicts makes merge exit non-zero when it left conflicts.
type errConflicts struct{ n int }

func (e errConflicts) Error() string {
	// Where each THEIRS went is on its CONFLICT line: PATH.theirs, or
	// PATH.theirs.N when that name was taken.
	return fmt.Sprintf("%d conflicts: local versions kept, theirs written beside each, as the CONFLICT lines say", e.n)
}

func printMergeResponse(cmd *cobra.Command, g *Globals, resp *apiv1.MergeResponse) error {
	if g.JSON {
		out := mergeReportJSON(resp.GetReport())
		out["fetched_blocks"], out["fetched_bytes"] = resp.GetFetchedBlocks(), resp.GetFetchedBytes()
		return PrintJSON(cmd.OutOrStdout(), out)
	}
	printMergeReport(cmd.ErrOrStderr(), resp.GetReport())
	return nil
}

func mergeReportJSON(rep *apiv1.MergeReport) map[string]any {
	conflicts := make([]map[string]any, 0, len(rep.GetConflicts()))
	for _, c := range rep.GetConflicts() {
		cj := map[string]any{"path": c.GetPath(), "reason": c.GetReason(), "theirs_path": c.GetTheirsPath()}
		if c.GetLinkTarget() != "" {
			cj["link_target"] = c.GetLinkTarget()
		}
		conflicts = append(conflicts, cj)
	}
	return map[string]any{
		"applied": nonNil(rep.GetApplied()), "merged": nonNil(rep.GetMerged()), "conflicts": conflicts, "unchanged": rep.GetUnchanged(),
	}
}

func printMergeReport(w io.Writer, rep *apiv1.MergeReport) {
	for _, p := range rep.GetApplied() {
		fmt.Fprintf(w, "applied   %s\n", p)
	}
	for _, p := range rep.GetMerged() {
		fmt.Fprintf(w, "merged    %s\n", p)
	}
	for _, c := range rep.GetConflicts() {
		beside := ""
		if c.GetTheirsPath() != "" {
			beside = " (theirs in " + c.GetTheirsPath() + ")"
		}
		if c.GetLinkTarget() != "" {
			beside = " (theirs: a link to " + c.GetLinkTarget() + ", out of the directory; not created)"
		}
		fmt.Fprintf(w, "CONFLICT  %s: %s%s\n", c.GetPath(), c.GetReason(), beside)
	}
	fmt.Fprintf(w, "%d applied, %d merged, %d conflicts, %d already there\n",
		len(rep.GetApplied()), len(rep.GetMerged()), len(rep.GetConflicts()), rep.GetUnchanged())
}

func newWsGCCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove the blocks that no pinned root reaches",
		Args:  NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				res, err := c.WorkspaceGC(ctx)
				if err != nil {
					return err
				}
				if g.JSON {
					return PrintJSON(cmd.OutOrStdout(), map[string]any{"kept": res.GetKept(), "removed": res.GetRemoved(), "removed_bytes": res.GetRemovedBytes()})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %d blocks (%s), kept %d\n", res.GetRemoved(), formatBytes(res.GetRemovedBytes()), res.GetKept())
				return nil
			})
		},
	}
}

func newWsVerifyCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify [CID]",
		Short: "Check that every block a root needs is here and intact",
		Long: `verify reads every block the DAG of CID needs and checks it hashes to its
CID, as ipfs repo verify does; without a CID, the DAG of every pin and then
every other block of the store. It lists what is missing and what is
corrupt (the first 100 of each) and exits 1 if anything is. Nothing is
changed: a missing block comes back with a ws get of its root from a peer
that has it.`,
		Example: "  cortex-peer ws verify\n  cortex-peer ws verify bafybei... --json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := ""
			if len(args) == 1 {
				root = args[0]
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				p := newProgress(g, cmd.ErrOrStderr())
				res, err := c.WorkspaceVerify(ctx, root, p.update)
				p.done()
				if err != nil {
					return err
				}
				if g.JSON {
					if err := PrintJSON(cmd.OutOrStdout(), map[string]any{"blocks": res.GetBlocks(), "bytes": res.GetBytes(),
						"missing": res.GetMissing(), "corrupt": res.GetCorrupt(),
						"missing_count": res.GetMissingCount(), "corrupt_count": res.GetCorruptCount()}); err != nil {
						return err
					}
				} else {
					out := cmd.OutOrStdout()
					for _, c := range res.GetMissing() {
						fmt.Fprintln(out, "missing", c)
					}
					for _, c := range res.GetCorrupt() {
						fmt.Fprintln(out, "corrupt", c)
					}
					fmt.Fprintf(out, "%d blocks (%s) verified; %d missing, %d corrupt\n", res.GetBlocks(), formatBytes(res.GetBytes()), res.GetMissingCount(), res.GetCorruptCount())
				}
				if res.GetMissingCount() > 0 || res.GetCorruptCount() > 0 {
					return exitStatus{ExitError}
				}
				return nil
			})
		},
	}
}

func newDagCmd(g *Globals) *cobra.Command {
	d := &cobra.Command{
		Use:   "dag",
		Short: "Move DAGs as CAR files, to and from IPFS tooling",
	}
	var stall time.Duration
	export := &cobra.Command{
		Use:     "export CID",
		Short:   "Write the DAG of CID as a CARv1 file to stdout",
		Example: "  cortex-peer dag export bafy... > ws.car",
		Args:    exactArgs(1, "one CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				return c.ExportCAR(ctx, args[0], stall, cmd.OutOrStdout())
			})
		},
	}
	export.Flags().DurationVar(&stall, "stall-timeout", 60*time.Second, "give up when no block of CID arrives for this long")
	imp := &cobra.Command{
		Use:     "import FILE.car",
		Short:   "Import a CAR file (every block verified) and pin its roots",
		Example: "  cortex-peer dag import ws.car",
		Args:    exactArgs(1, "one CAR file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if _, err := os.Stat(p); err != nil {
				return err
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				res, err := c.ImportCAR(ctx, p)
				if err != nil {
					return err
				}
				if g.JSON {
					return PrintJSON(cmd.OutOrStdout(), map[string]any{"roots": nonNil(res.GetRoots()), "blocks": res.GetBlocks()})
				}
				for _, r := range res.GetRoots() {
					fmt.Fprintln(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "imported %d blocks\n", res.GetBlocks())
				return nil
			})
		},
	}
	d.AddCommand(export, imp)
	return d
}
