package peercmds

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/cmd/internal/cli"
	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/datadir"
	"github.com/cortex-peer/cortex-peer/node/datadir/locate"
	"github.com/cortex-peer/cortex-peer/node/sdnotify"
	"github.com/cortex-peer/cortex-peer/node/update/supervise"
	"github.com/cortex-peer/cortex-peer/p2p"
)

// openDataDir opens the peer's data dir named by --data (or its defaults)
// and reads its config.
func openDataDir(g *cli.Globals) (datadir.Dir, datadir.FileConfig, error) {
	root, err := locate.Resolve(g.Data)
	if err != nil {
		return datadir.Dir{}, datadir.FileConfig{}, err
	}
	return datadir.Load(root)
}

func parseLabels(in []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range in {
		k, v, err := datadir.ParseLabel(s)
		if err != nil {
			return nil, cli.Usage(err)
		}
		out[k] = v
	}
	return out, nil
}

func newInitCmd(g *cli.Globals) *cobra.Command {
	var (
		meshKeyFile string
		listen      []string
		bootstrap   []string
		labels      []string
		noMDNS      bool
		heartbeat   time.Duration
		roots       []string
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: cli.PeerVerbShort("init"),
		Long: `init creates the data directory (mode 0700) with an ed25519 identity (the
peer id, stable across restarts), a documented config file (config.toml), an API
token and a mesh key. Without --mesh-key a new mesh is started; to join an
existing mesh, copy its key (printed by 'cortex-peer mesh-key' on a member) into
a file and pass it with --mesh-key.

The API and MCP read and write files only inside [api] allowed_roots: by
default your home (under sudo, the home of the user who ran sudo, not root's)
and the system's temporary directory. Add others with --allowed-root, or later
in config.toml.`,
		Example: `  cortex-peer init
  sudo cortex-peer init --data /var/lib/cortex-peer --allowed-root /srv/project
  cortex-peer init --data /srv/b --mesh-key mesh.key --listen /ip4/0.0.0.0/tcp/4102`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root, err := locate.Resolve(g.Data)
			if err != nil {
				return err
			}
			lbl, err := parseLabels(labels)
			if err != nil {
				return err
			}
			opts := datadir.InitOptions{Listen: listen, Bootstrap: bootstrap, Labels: lbl, DisableMDNS: noMDNS, HeartbeatInterval: heartbeat}
			if len(roots) > 0 {
				opts.AllowedRoots = datadir.DefaultAllowedRoots()
				for _, r := range roots {
					abs, err := filepath.Abs(r)
					if err != nil {
						return cli.Usage(fmt.Errorf("--allowed-root %s: %w", r, err))
					}
					opts.AllowedRoots = append(opts.AllowedRoots, abs)
				}
			}
			if meshKeyFile != "" {
				if opts.MeshKey, err = os.ReadFile(meshKeyFile); err != nil {
					return fmt.Errorf("read mesh key: %w", err)
				}
			}
			d, err := datadir.Init(root, opts)
			if err != nil {
				return err
			}
			sk, err := d.Identity()
			if err != nil {
				return err
			}
			id, err := peerIDOf(sk)
			if err != nil {
				return err
			}
			if g.JSON {
				return cli.PrintJSON(cmd.OutOrStdout(), map[string]any{"id": id, "data_dir": root, "new_mesh": meshKeyFile == ""})
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "initialized peer %s in %s\n", id, root)
			if meshKeyFile == "" {
				fmt.Fprintf(out, "started a new mesh; to add a machine, copy the output of\n  cortex-peer mesh-key --data %s\ninto a file there and run cortex-peer init --mesh-key FILE\n", root)
			} else {
				fmt.Fprintf(out, "joined the mesh of %s\n", meshKeyFile)
			}
			fmt.Fprintf(out, "start it with: cortex-peer join --data %s\n", root)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&meshKeyFile, "mesh-key", "", "file holding the key of an existing mesh to join")
	f.StringArrayVar(&listen, "listen", nil, "multiaddr to listen on (repeatable; replaces the default list)")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, "full multiaddr of a mesh member to join through (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "label key=value announced to the mesh (repeatable)")
	f.BoolVar(&noMDNS, "no-mdns", false, "turn local-network discovery off in the config")
	f.DurationVar(&heartbeat, "heartbeat", 0, "heartbeat interval (default 5s; peers expire after three)")
	f.StringArrayVar(&roots, "allowed-root", nil, "directory the API and MCP may also read and write, besides your home and the temp dir (repeatable)")
	return cmd
}

func newJoinCmd(g *cli.Globals) *cobra.Command {
	var (
		listen    []string
		bootstrap []string
		labels    []string
		noMDNS    bool
		logLevel  string
		logFormat string
		mcpListen string
	)
	cmd := &cobra.Command{
		Use:   "join",
		Short: cli.PeerVerbShort("join"),
		Long: `join starts the peer of the data directory: it listens, joins the mesh
through its bootstrap peers, mDNS and the DHT, announces its capabilities, and
serves the local API on DIR/api.sock. SIGINT or SIGTERM drains it first (no new
tasks; running ones may end within [process] drain_deadline, then are stopped
and handed back; every result is delivered), then stops it; a second SIGINT
or SIGTERM stops it at once.
--listen and --bootstrap add to the config file's lists for this run.
--mcp-listen 127.0.0.1:PORT also serves MCP as streamable HTTP at
http://127.0.0.1:PORT/mcp (loopback only; bearer token from DIR/api.token).`,
		Example: `  cortex-peer join
  cortex-peer join --data /srv/b --bootstrap /ip4/10.0.0.5/tcp/4101/p2p/12D3KooW...`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, fc, err := openDataDir(g)
			if err != nil {
				return err
			}
			fc.P2P.Listen = append(fc.P2P.Listen, listen...)
			fc.P2P.Bootstrap = append(fc.P2P.Bootstrap, bootstrap...)
			lbl, err := parseLabels(labels)
			if err != nil {
				return err
			}
			for k, v := range lbl {
				fc.Labels[k] = v
			}
			if noMDNS {
				fc.P2P.MDNS = false
			}
			if logLevel != "" {
				fc.Log.Level = logLevel
			}
			if logFormat != "" {
				fc.Log.Format = logFormat
			}
			if mcpListen != "" {
				fc.MCP.Listen = mcpListen
			}
			cfg, err := node.ConfigFromFile(d, fc)
			if err != nil {
				return err
			}
			log := node.NewLogger(cmd.ErrOrStderr(), fc.Log.Level, fc.Log.Format)
			supervised := os.Getenv(supervise.EnvSupervised) != ""
			if !supervised && wantsSupervisor(cfg) {
				return superviseJoin(cmd, cfg, log)
			}
			cfg.Update.Supervised = supervised
			if os.Getenv("GOMEMLIMIT") == "" && fc.Process.MemoryLimitMiB > 0 {
				debug.SetMemoryLimit(int64(fc.Process.MemoryLimitMiB) << 20)
			}
			// libp2p's own logs: errors only, or warnings when debugging.
			libp2pLevel := slog.LevelError
			if fc.Log.Level == "debug" {
				libp2pLevel = slog.LevelWarn
			}
			p2p.RouteLibp2pLogs(log, libp2pLevel)
			if path := os.Getenv("CORTEX_CPU_PROFILE"); path != "" {
				// A CPU profile of the whole run, for `go tool pprof`.
				stop, err := startCPUProfile(path)
				if err != nil {
					return err
				}
				defer stop()
			}
			// Every SIGINT and SIGTERM is counted from here: the first
			// drains the peer, a second stops it at once.
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)
			n, err := node.New(cfg, log)
			if err != nil {
				return err
			}
			// Under systemd (Type=notify) the peer says when it serves,
			// feeds the watchdog while healthy, and says when it stops.
			// Under the update supervisor the same messages go to it.
			notify := sdnotify.New(sdnotify.FromEnv(n.Healthy), log)
			defer notify.Close()
			if os.Getenv(supervise.EnvTrial) != "" {
				// A new version on probation says READY only once it
				// passes the whole health check.
				if err := waitHealthy(cmd.Context(), n, sigs, log); err != nil {
					n.Close()
					return err
				}
			}
			if err := notify.Ready(); err != nil {
				log.Warn("cannot tell systemd the peer is ready", "err", err)
			}
			watchdog := make(chan error, 1)
			wctx, stopWatchdog := context.WithCancel(cmd.Context())
			go func() { watchdog <- notify.Serve(wctx) }()
			select {
			case sig := <-sigs:
				_ = notify.Status("draining")
				log.Info("draining before stopping: no new tasks; running ones may end (send SIGTERM or SIGINT again to stop now)",
					"signal", sig.String(), "deadline", cfg.DrainDeadline)
				dctx, cancel := context.WithCancel(context.Background())
				go func() {
					select {
					case <-sigs:
						log.Warn("second signal: stopping now; tasks still running here are killed")
						cancel()
					case <-dctx.Done():
					}
				}()
				if _, err := n.Drain(dctx, 0, true, nil); err != nil && dctx.Err() == nil {
					log.Warn("drain failed; stopping", "err", err)
				}
				cancel()
			case <-n.StopRequested():
				log.Info("drained; stopping")
			}
			log.Info("stopping peer")
			_ = notify.Stopping()
			stopWatchdog()
			<-watchdog
			if err := n.Close(); err != nil {
				return err
			}
			if n.RestartRequested() {
				log.Info("restarting into the current release")
				return cli.ExitStatus(supervise.ExitRestart)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&listen, "listen", nil, "extra multiaddr to listen on (repeatable)")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, "extra full multiaddr of a mesh member to join through (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "extra label key=value for this run (repeatable)")
	f.BoolVar(&noMDNS, "no-mdns", false, "no local-network discovery for this run")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (default from config)")
	f.StringVar(&logFormat, "log-format", "", "text or json (default from config)")
	f.StringVar(&mcpListen, "mcp-listen", "", "serve MCP over HTTP on this loopback host:port, e.g. 127.0.0.1:7777 (overrides [mcp] listen)")
	return cmd
}

func newMeshKeyCmd(g *cli.Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "mesh-key",
		Short: cli.PeerVerbShort("mesh-key"),
		Long: `mesh-key prints the private-network key of the mesh. Anyone holding it can
join the mesh: copy it over a trusted channel, into a file on the other machine,
and run 'cortex-peer init --mesh-key FILE' there.`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, fc, err := openDataDir(g)
			if err != nil {
				return err
			}
			key, err := d.ReadMeshKey(fc)
			if err != nil {
				return err
			}
			if key == nil {
				return fmt.Errorf("this peer has no mesh key (p2p.mesh_key_file is empty in %s): it runs on an allowlist", d.Path(datadir.ConfigFile))
			}
			if _, err := p2p.DecodeMeshKey(key); err != nil {
				return err
			}
			if g.JSON {
				return cli.PrintJSON(cmd.OutOrStdout(), map[string]any{"mesh_key": string(key)})
			}
			_, err = cmd.OutOrStdout().Write(key)
			return err
		},
	}
}

// startCPUProfile writes a CPU profile to path (with the pid appended, so
// that the peers of a testnet sharing one environment do not clash) until
// stop.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("CORTEX_CPU_PROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("CORTEX_CPU_PROFILE: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
