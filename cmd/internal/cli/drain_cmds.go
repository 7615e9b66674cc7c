package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// drainJSON is the stable JSON shape of `drain --json`.
type drainJSON struct {
	Completed       uint32  `json:"completed"`
	Returned        uint32  `json:"returned"`
	LeftUndelivered uint32  `json:"left_undelivered"`
	Seconds         float64 `json:"seconds"`
	Stopping        bool    `json:"stopping"`
}

func newDrainCmd(g *Globals) *cobra.Command {
	var (
		deadline time.Duration
		stay     bool
	)
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Stop taking tasks, let running ones end, deliver their results, then stop the peer",
		Long: `drain makes the peer ineligible: its heartbeat says draining at once, placement
skips it and new submissions are refused with "unavailable: draining". Tasks
running here may end within --deadline (default: [process] drain_deadline,
10 minutes); those left are then stopped and reported to their coordinators
as returned (not failed), and every result is delivered before the drain ends.
The drain ends within the deadline plus 40 s (10 s for stopped tasks to end,
30 s for deliveries; a result still unacknowledged then is delivered after the
peer's next start). Then the peer exits 0 — unless --stay, which keeps it up
and ineligible until 'cortex-peer eligible'. SIGTERM to the peer drains it too.`,
		Example: `  cortex-peer drain
  cortex-peer drain --deadline 2m --json
  cortex-peer drain --stay && cortex-peer eligible`,
		Args: NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if deadline < 0 {
				return Usage(fmt.Errorf("--deadline %v: want 0 (the peer's drain_deadline) or more", deadline))
			}
			c, err := DialPeer(g)
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			var last string
			ev, err := c.Drain(cmd.Context(), deadline, stay, func(ev *apiv1.DrainEvent) {
				if g.JSON || ev.GetDone() {
					return
				}
				line := fmt.Sprintf("draining: %d tasks running, %d results to deliver", ev.GetRunning(), ev.GetUndelivered())
				if line != last {
					fmt.Fprintln(cmd.ErrOrStderr(), line)
					last = line
				}
			})
			if err != nil {
				if cmd.Context().Err() != nil {
					return fmt.Errorf("interrupted: the peer stays draining, taking no tasks; run 'cortex-peer drain' again to finish, or 'cortex-peer eligible' to undo it")
				}
				return err
			}
			if g.JSON {
				return PrintJSON(out, drainJSON{
					Completed: ev.GetCompleted(), Returned: ev.GetReturned(), LeftUndelivered: ev.GetLeftUndelivered(),
					Seconds: float64(ev.GetElapsedMs()) / 1000, Stopping: ev.GetStopping(),
				})
			}
			fmt.Fprintf(out, "drained in %.1fs: %d tasks completed, %d returned to their coordinators", float64(ev.GetElapsedMs())/1000, ev.GetCompleted(), ev.GetReturned())
			if n := ev.GetLeftUndelivered(); n > 0 {
				fmt.Fprintf(out, ", %d results not yet acknowledged (delivered after the next start)", n)
			}
			if ev.GetStopping() {
				fmt.Fprintln(out, "; the peer is stopping")
			} else {
				fmt.Fprintln(out, "; the peer stays up, taking no tasks ('cortex-peer eligible' undoes it)")
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&deadline, "deadline", 0, "how long running tasks may take before they are stopped and returned (default: the peer's drain_deadline)")
	cmd.Flags().BoolVar(&stay, "stay", false, "keep the peer up, taking no tasks, after the drain")
	return cmd
}

func newEligibleCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "eligible",
		Short: "Take tasks again after 'drain --stay'",
		Args:  NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			was, err := withAPI(cmd, g, func(ctx context.Context, c *apiclient.Client) (bool, error) { return c.Eligible(ctx) })
			if err != nil {
				return err
			}
			if g.JSON {
				return PrintJSON(cmd.OutOrStdout(), map[string]bool{"was_draining": was})
			}
			if was {
				fmt.Fprintln(cmd.OutOrStdout(), "eligible again: the peer takes tasks")
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), "the peer was not draining; nothing changed")
			}
			return nil
		},
	}
}
