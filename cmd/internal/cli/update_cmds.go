package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

func newUpdateCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update",
		Short: "The peer's signed self-update: status, rollback",
		Long: `update shows and steers this peer's self-update. Releases are signed and
announced with 'cortex-peer release publish'; a peer whose [update]
trusted_keys holds the signing key fetches the binary over the mesh,
verifies it and installs it.`,
	}
	cmd.AddCommand(newUpdateStatusCmd(g), newUpdateRollbackCmd(g))
	return cmd
}

func newUpdateStatusCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "What the peer's updater knows: versions, state, trusted keys, releases seen",
		Long: `status prints the peer's self-update state: the version running, the
installed releases (current and previous), the highest version ever
installed, what the updater is doing and its last error, whether it is
enabled (trusted keys set), automatic and supervised (run by the update
supervisor, so that it can swap binaries), its window and health timeout,
the versions it will never try again, the releases it has seen with what it
made of each, and the failures other peers reported.
--json prints the API's UpdateStatus with its field names.`,
		Args: NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := withAPI(cmd, g, func(ctx context.Context, c *apiclient.Client) (*apiv1.UpdateStatus, error) {
				return c.UpdateStatus(ctx)
			})
			if err != nil {
				return err
			}
			if g.JSON {
				return printProtoJSON(cmd.OutOrStdout(), st)
			}
			return printUpdateStatus(cmd.OutOrStdout(), st, time.Now())
		},
	}
}

func newUpdateRollbackCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rollback",
		Short: "Switch the peer back to its previous version now",
		Long: `rollback marks the version the peer runs as bad (it is never installed
again here), then the peer drains and restarts into the previous version:
releases/previous, or the installed binary when there is none.`,
		Args: NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				res, err := c.UpdateRollback(ctx)
				if err != nil {
					return err
				}
				if g.JSON {
					return printProtoJSON(cmd.OutOrStdout(), res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "rolling back from %s to %s; the peer drains and restarts\n", res.GetFrom(), releaseOrInstalled(res.GetTo()))
				return nil
			})
		},
	}
}

// releaseOrInstalled names a release, "" being the binary installed
// outside releases/.
func releaseOrInstalled(v string) string {
	if v == "" {
		return "the installed binary"
	}
	return v
}

func yesNo(b bool, no string) string {
	if b {
		return "yes"
	}
	return "no" + no
}

func formatUnix(sec int64) string {
	if sec == 0 {
		return "-"
	}
	return time.Unix(sec, 0).UTC().Format(time.RFC3339)
}

// printUpdateStatus prints an UpdateStatus for a reader.
func printUpdateStatus(w io.Writer, st *apiv1.UpdateStatus, now time.Time) error {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("running", orDash(st.GetVersion()))
	row("current", releaseOrInstalled(st.GetCurrent()))
	row("previous", orDash(st.GetPrevious()))
	row("highest", orDash(st.GetHighest()))
	row("state", orDash(st.GetState()))
	row("last error", orDash(st.GetLastError()))
	row("enabled", yesNo(st.GetEnabled(), " (no [update] trusted_keys)"))
	row("auto", yesNo(st.GetAuto(), ""))
	row("supervised", yesNo(st.GetSupervised(), " (not run by the update supervisor: it cannot swap binaries)"))
	row("window", orDash(st.GetWindow()))
	if ms := st.GetHealthTimeoutMs(); ms > 0 {
		row("health timeout", (time.Duration(ms) * time.Millisecond).String())
	} else {
		row("health timeout", "-")
	}
	row("trusted keys", formatList(st.GetTrustedKeys()))
	row("bad versions", formatList(st.GetBad()))
	if err := tw.Flush(); err != nil {
		return err
	}
	if rs := st.GetReleases(); len(rs) > 0 {
		fmt.Fprintln(w, "\nreleases seen (newest first):")
		tw = newTable(w)
		fmt.Fprintln(tw, "  VERSION\tSIZE\tROLLOUT\tKEY\tFROM\tSEEN\tEXPIRES\tVERDICT\tBINARY")
		for _, r := range rs {
			seen := "-"
			if r.GetSeenUnix() != 0 {
				seen = formatAgo(time.Unix(r.GetSeenUnix(), 0), now)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetVersion(), formatBytes(uint64(max(r.GetLength(), 0))),
				formatRollout(r.GetRollout()), orDash(r.GetKeyId()), orDash(shortID(r.GetFrom())), seen, formatUnix(r.GetExpiresUnix()),
				orDash(r.GetVerdict()), orDash(r.GetBinary()))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if fs := st.GetFailures(); len(fs) > 0 {
		fmt.Fprintln(w, "\nfailures reported by peers:")
		tw = newTable(w)
		fmt.Fprintln(tw, "  VERSION\tPEER\tWHEN\tREASON")
		for _, f := range fs {
			when := "-"
			if f.GetAtUnix() != 0 {
				when = formatAgo(time.Unix(f.GetAtUnix(), 0), now)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", f.GetVersion(), shortID(f.GetPeer()), when, strings.ReplaceAll(f.GetReason(), "\n", " "))
		}
		return tw.Flush()
	}
	return nil
}
