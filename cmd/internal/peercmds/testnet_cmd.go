package peercmds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/cmd/internal/cli"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/testnet"
)

const (
	// testnetReadyTimeout bounds how long the mesh may take to form.
	testnetReadyTimeout = 2 * time.Minute
	// restartWait bounds `testnet restart`: the testnet's own bound on a
	// restart, and time for it to stop the peer first when it runs.
	restartWait = testnet.RestartTimeout + time.Minute
)

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
stops them all cleanly on SIGINT or SIGTERM.

Once ready, a peer that dies is reported on a line of its own ("peer2 died
(pid, how it ended); its log: ...") and the others keep running, so a failure
can be studied; before ready, a death is a failed start and ends the testnet. 'cortex-peer testnet restart NAME --dir DIR' starts a peer again, with
its data dir and so its identity, and SIGHUP to the testnet starts every dead
peer again; each restart prints "NAME restarted (pid PID): ID DATADIR". The
testnet listens for restarts on DIR/testnet.sock.

With --json each peer is a JSON object on its own line, readiness is
{"ready":true}, and a death or restart is an object with "event": "died" or
"restarted".

Besides the home and temp dir that init allows, the peers' API may read and
write files in DIR, in the directory testnet was started in, and in each
--allowed-root, so a demo can use the files at hand.`,
		Example: `  cortex-peer testnet -n 3 --dir /tmp/mesh &
  cortex-peer peers --data /tmp/mesh/peer1
  cortex-peer testnet restart peer2 --dir /tmp/mesh
  kill -HUP %1    # restart every dead peer`,
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
			abs, err := filepath.Abs(dir) // the restart hint must work from any directory
			if err != nil {
				return err
			}
			wd, err := os.Getwd()
			if err != nil {
				return err
			}
			roots = append([]string{abs, wd}, roots...)
			return runTestnet(cmd.Context(), cmd, g, testnet.ProcessOptions{N: n, Dir: abs, Heartbeat: heartbeat, AllowedRoots: roots})
		},
	}
	f := cmd.Flags()
	f.IntVarP(&n, "peers", "n", 3, "number of peers")
	f.StringVar(&dir, "dir", "", "directory for the peers' data dirs (default: a new temporary directory)")
	f.DurationVar(&heartbeat, "heartbeat", testnet.DefaultProcessHeartbeat, "heartbeat interval of the peers")
	f.StringArrayVar(&roots, "allowed-root", nil, "another directory the peers' API may read and write (repeatable)")
	cmd.AddCommand(newTestnetRestartCmd(g))
	return cmd
}

// runTestnet runs the testnet until ctx ends: it reports deaths, restarts
// peers on SIGHUP and on requests to its control socket.
func runTestnet(ctx context.Context, cmd *cobra.Command, g *cli.Globals, opts testnet.ProcessOptions) error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	opts.Binary = bin
	// Caught from the start: SIGHUP's default would end the testnet.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	ev := &testnetEvents{w: cmd.OutOrStdout(), json: g.JSON, dir: opts.Dir}
	opts.OnExit = func(e testnet.PeerExit) {
		if !e.Requested {
			ev.died(e)
		}
	}
	opts.OnRestart = ev.restarted
	startCtx, cancel := context.WithTimeout(ctx, testnetReadyTimeout)
	defer cancel()
	net, err := testnet.StartProcesses(startCtx, opts)
	if err != nil {
		return err
	}
	stopAll := func() error {
		fmt.Fprintln(cmd.ErrOrStderr(), "stopping peers")
		return net.Stop()
	}
	for _, p := range net.Peers {
		ev.peer(p)
	}
	ln, err := net.ListenControl()
	if err != nil {
		return errors.Join(err, stopAll())
	}
	serveCtx, stopServing := context.WithCancel(ctx)
	var serveErr error
	served := make(chan struct{})
	go func() {
		defer close(served)
		serveErr = net.ServeControl(serveCtx, ln)
	}()
	// The control socket closes, and its restarts end, before the peers stop.
	stop := func() error {
		stopServing()
		<-served
		return stopAll()
	}

	if err := net.WaitReady(startCtx); err != nil {
		return errors.Join(err, stop())
	}
	ev.ready()
	for {
		select {
		case <-ctx.Done():
			return stop()
		case <-served:
			return errors.Join(serveErr, stop())
		case <-hup:
			restarted, err := net.RestartDead(ctx)
			if err != nil && ctx.Err() == nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "SIGHUP: %v\n", err)
			}
			if len(restarted) == 0 && err == nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "SIGHUP: every peer is running; none to restart")
			}
		}
	}
}

// testnetEvents prints the testnet's lines, which come from several
// goroutines (a process ends on the goroutine that reaps it).
type testnetEvents struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
	dir  string
}

func (ev *testnetEvents) print(obj map[string]any, format string, args ...any) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.json {
		_ = cli.PrintJSONLine(ev.w, obj)
		return
	}
	fmt.Fprintf(ev.w, format+"\n", args...)
}

func (ev *testnetEvents) peer(p *testnet.ProcessPeer) {
	ev.print(map[string]any{"name": p.Name, "id": p.ID, "data_dir": p.DataDir, "addrs": p.Addrs},
		"%s %s %s", p.Name, p.ID, p.DataDir)
}

func (ev *testnetEvents) ready() {
	ev.print(map[string]any{"ready": true}, "ready")
}

func (ev *testnetEvents) died(e testnet.PeerExit) {
	p := e.Peer
	restart := fmt.Sprintf("cortex-peer testnet restart %s --dir %s", p.Name, ev.dir)
	ev.print(map[string]any{"event": "died", "name": p.Name, "pid": e.Pid, "status": e.Status(), "log": p.LogFile, "restart": restart},
		"%s died (pid %d, %s); its log: %s; the other peers keep running. Restart it with: %s (or kill -HUP %d to restart every dead peer)",
		p.Name, e.Pid, e.Status(), p.LogFile, restart, os.Getpid())
}

func (ev *testnetEvents) restarted(p *testnet.ProcessPeer) {
	ev.print(map[string]any{"event": "restarted", "name": p.Name, "id": p.ID, "pid": p.Pid(), "data_dir": p.DataDir, "addrs": p.Addrs},
		"%s restarted (pid %d): %s %s", p.Name, p.Pid(), p.ID, p.DataDir)
}

func newTestnetRestartCmd(g *cli.Globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "restart NAME --dir DIR",
		Short: "Start a peer of a running testnet again, with its identity and data",
		Long: `restart asks the testnet running in DIR (the --dir it was started with) to
start its peer NAME (peer1 ... peerN) again, from the same data dir and so with
the same identity, and waits until the peer and the others see each other
again. A peer that is running is stopped first (SIGTERM) and started again, as
'systemctl restart' does: so restart also applies an edit of DIR/NAME/config.toml.
The peer stays the testnet's child, stopped with it. It prints
"NAME restarted (pid PID): ID DATADIR"; --json prints the testnet's answer.

To start every dead peer again at once, send SIGHUP to the testnet process.

Exit status: 0 once the peer is back, 2 for an unknown NAME or a missing --dir,
1 when no testnet runs in DIR or the peer did not come back (its peer.log
says why).`,
		Example: `  cortex-peer testnet restart peer2 --dir /tmp/mesh`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cli.Usage(fmt.Errorf("%s takes one peer name (peer1 ... peerN), got %q", cmd.CommandPath(), args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return cli.Usage(errors.New("--dir is required: the directory the testnet was started with (its peers' data dirs are DIR/peer1 ... DIR/peerN)"))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), restartWait)
			defer cancel()
			reply, err := testnet.RequestRestart(ctx, dir, args[0])
			if errors.Is(err, errdefs.ErrNotFound) {
				return cli.Usage(err)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.JSON {
				return cli.PrintJSON(out, reply)
			}
			if reply.WasRunning {
				fmt.Fprintf(out, "%s was running: stopped it and started it again\n", reply.Name)
			}
			fmt.Fprintf(out, "%s restarted (pid %d): %s %s\n", reply.Name, reply.Pid, reply.ID, reply.DataDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the directory the testnet was started with (required)")
	return cmd
}
