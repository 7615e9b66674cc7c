package cli

import (
	"bufio"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
)

func newPutCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "put PATH",
		Short: "Add a file or a directory to the peer's store, pinned, and print its CID",
		Long: `put adds the file or directory at PATH to this peer's block store as a
UnixFS DAG and pins it, so that any peer of the mesh can get it, or read a
byte range of it, by its CID. Nothing is sent anywhere until a peer asks.
A symlink given as PATH is followed; a directory is imported as "ws add"
imports one (.cortexignore applies).`,
		Example: "  cortex-peer put ./build/app\n  cortex-peer put --json ./logs",
		Args:    exactArgs(1, "a file or a directory"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				p := newProgress(g, cmd.ErrOrStderr())
				res, err := c.ArtifactPut(ctx, path, p.update)
				p.done()
				if err != nil {
					return err
				}
				if g.JSON {
					return PrintJSON(cmd.OutOrStdout(), map[string]any{"cid": res.GetCid(), "bytes": res.GetBytes(), "directory": res.GetDirectory()})
				}
				fmt.Fprintln(cmd.OutOrStdout(), res.GetCid())
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s, pinned\n", path, formatBytes(res.GetBytes()))
				return nil
			})
		},
	}
}

func newGetCmd(g *Globals) *cobra.Command {
	var out string
	var force bool
	var stall time.Duration
	cmd := &cobra.Command{
		Use:   "get CID [-o PATH]",
		Short: "Fetch a file or a directory from the mesh by its CID",
		Long: `get fetches CID from the peers of the mesh (only the blocks this peer lacks,
each verified against its hash) and writes it to PATH (default: the CID, in
the current directory). PATH must not exist unless --force, which replaces
it once the new copy is whole; a failed get leaves PATH as it was.

A file comes from every peer that holds it at once, a slow or lying one
left behind, into a partial copy beside PATH (.NAME.cortex-partial-...)
renamed to PATH when whole. A get cut short (Ctrl-C, a full disk, no
provider left) keeps it: run the same get again to complete it, checking
what it holds and fetching only the rest. On a terminal, progress shows on
stderr.

-o - writes a file to standard output as its blocks arrive.`,
		Example: "  cortex-peer get bafybei... -o app\n  cortex-peer get bafybei... -o - | tar x",
		Args:    exactArgs(1, "a CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "-" {
				return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
					w := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<20)
					if _, err := c.ArtifactRead(ctx, args[0], 0, 0, stall, w); err != nil {
						return err
					}
					return w.Flush()
				})
			}
			if out == "" {
				out = args[0]
			}
			dest, err := filepath.Abs(out)
			if err != nil {
				return err
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				p := newProgress(g, cmd.ErrOrStderr())
				start := time.Now()
				res, err := c.ArtifactGet(ctx, args[0], dest, force, stall, p.update)
				p.done()
				if err != nil && ctx.Err() != nil {
					// Interrupted: the peer stops the get and keeps what it wrote.
					return fmt.Errorf("get %s: interrupted; what was fetched is kept beside %s: run the same get again to resume", args[0], dest)
				}
				if err != nil {
					return err
				}
				if g.JSON {
					return PrintJSON(cmd.OutOrStdout(), map[string]any{
						"cid": res.GetCid(), "path": res.GetPath(), "bytes": res.GetBytes(),
						"fetched_bytes": res.GetFetchedBytes(), "providers": res.GetProviders(),
					})
				}
				from := "all here already"
				if res.GetFetchedBytes() > 0 {
					ids := make([]string, 0, len(res.GetProviders()))
					for id := range res.GetProviders() {
						ids = append(ids, shortID(id))
					}
					slices.Sort(ids)
					from = fmt.Sprintf("fetched %s from %d peers %v", formatBytes(res.GetFetchedBytes()), len(ids), ids)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s -> %s: %s; %s; %.2fs\n", res.GetCid(), res.GetPath(), formatBytes(res.GetBytes()), from, time.Since(start).Seconds())
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write it (- for standard output; default: the CID)")
	cmd.Flags().BoolVar(&force, "force", false, "replace PATH if it exists")
	cmd.Flags().DurationVar(&stall, "stall-timeout", 60*time.Second, "give up when no block arrives for this long")
	return cmd
}

func newUnpinCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unpin CID",
		Short: "Let this peer free a file or a directory it put",
		Long: `unpin removes the pin that put made on this peer for CID (as ipfs pin rm
does). The blocks stay until the next 'ws gc', which frees those nothing
else pins; copies other peers got are not touched. A CID this peer did not
put is not_found.`,
		Example: "  cortex-peer unpin bafybei... && cortex-peer ws gc",
		Args:    exactArgs(1, "a CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				if err := c.ArtifactUnpin(ctx, args[0]); err != nil {
					return err
				}
				if g.JSON {
					return PrintJSON(cmd.OutOrStdout(), map[string]any{"cid": args[0], "unpinned": true})
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: unpinned; 'cortex-peer ws gc' frees its blocks\n", args[0])
				return nil
			})
		},
	}
}

func newCatCmd(g *Globals) *cobra.Command {
	var offset, length uint64
	var stall time.Duration
	cmd := &cobra.Command{
		Use:   "cat CID",
		Short: "Write a file, or a byte range of it, to standard output",
		Long: `cat writes the file CID to standard output, or the --length bytes from
--offset on; the peer fetches only the blocks that hold them. A range past
the end gives the bytes that exist.`,
		Example: "  cortex-peer cat bafybei... | head\n  cortex-peer cat --offset 1048576 --length 4096 bafybei...",
		Args:    exactArgs(1, "a CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				w := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<20)
				if _, err := c.ArtifactRead(ctx, args[0], offset, length, stall, w); err != nil {
					return err
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().Uint64Var(&offset, "offset", 0, "the first byte to write")
	cmd.Flags().Uint64Var(&length, "length", 0, "how many bytes to write (0: to the end)")
	cmd.Flags().DurationVar(&stall, "stall-timeout", 60*time.Second, "give up when no block arrives for this long")
	return cmd
}

// shortID is a peer id's last characters, as the task table shows them
// (and --peer accepts).
func shortID(id string) string {
	if len(id) > 10 {
		return "…" + id[len(id)-10:]
	}
	return id
}
