package peercmds

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/cmd/internal/cli"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// testnetReadyTimeout bounds how long the mesh may take to form.
const testnetReadyTimeout = 2 * time.Minute

func newTestnetCmd(g *cli.Globals) *cobra.Command {
	var (
		n         int
		dir       string
		heartbeat time.Duration
		roots     []string
	)
	cmd := &cobra.Command{
		Use:   "testnet",
		Short: cli.PeerVerbShort("testnet"),
		Long: `testnet starts N peers as processes of this binary on 127.0.0.1 (port 0),
sharing a fresh mesh key, bootstrapped to the first peer, with mDNS off. Their
data dirs are DIR/peer1 ... DIR/peerN (each peer logs to peer.log there), so any
client verb can talk to them with --data DIR/peerK. It prints one line per peer
(name, peer id, data dir), then "ready" once every peer sees all the others, and
stops them all cleanly on SIGINT or SIGTERM. With --json each peer is a JSON
object on its own line, and readiness is {"ready":true}.

Besides the home and temp dir that init allows, the peers' API may read and
write files in DIR, in the directory testnet was started in, and in each
--allowed-root, so a demo can use the files at hand.`,
		Example: `  cortex-peer testnet -n 3 --dir /tmp/mesh &
  cortex-peer peers --data /tmp/mesh/peer1`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 {
				return cli.Usage(fmt.Errorf("-n must be at least 1, got %d", n))
			}
			if dir == "" {
				d, err := os.MkdirTemp("", "cortex-testnet-")
				if err != nil {
					return err
				}
				dir = d
			}
			wd, err := os.Getwd()
			if err != nil {
				return err
			}
			roots = append([]string{dir, wd}, roots...)
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary: %w", err)
			}
			ctx := cmd.Context()
			startCtx, cancel := context.WithTimeout(ctx, testnetReadyTimeout)
			defer cancel()
			net, err := testnet.StartProcesses(startCtx, testnet.ProcessOptions{Binary: bin, N: n, Dir: dir, Heartbeat: heartbeat, AllowedRoots: roots})
			if err != nil {
				return err
			}
			stopAll := func() error {
				fmt.Fprintln(cmd.ErrOrStderr(), "stopping peers")
				return net.Stop()
			}
			out := cmd.OutOrStdout()
			for _, p := range net.Peers {
				if g.JSON {
					_ = cli.PrintJSONLine(out, map[string]any{"name": p.Name, "id": p.ID, "data_dir": p.DataDir, "addrs": p.Addrs})
				} else {
					fmt.Fprintf(out, "%s %s %s\n", p.Name, p.ID, p.DataDir)
				}
			}
			if err := net.WaitReady(startCtx); err != nil {
				return errors.Join(err, stopAll())
			}
			if g.JSON {
				_ = cli.PrintJSONLine(out, map[string]any{"ready": true})
			} else {
				fmt.Fprintln(out, "ready")
			}
			exited := net.FirstExit(ctx)
			select {
			case <-ctx.Done():
				return stopAll()
			case p := <-exited:
				return errors.Join(fmt.Errorf("%s exited (%v); see %s", p.Name, p.ExitErr(), p.LogFile), stopAll())
			}
		},
	}
	f := cmd.Flags()
	f.IntVarP(&n, "peers", "n", 3, "number of peers")
	f.StringVar(&dir, "dir", "", "directory for the peers' data dirs (default: a new temporary directory)")
	f.DurationVar(&heartbeat, "heartbeat", testnet.DefaultProcessHeartbeat, "heartbeat interval of the peers")
	f.StringArrayVar(&roots, "allowed-root", nil, "another directory the peers' API may read and write (repeatable)")
	return cmd
}
