package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/node/datadir"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// apiTimeout bounds one call of a client verb to the local API.
const apiTimeout = 30 * time.Second

func dialPeer(g *globals) (*apiclient.Client, error) {
	root, err := datadir.Resolve(g.data)
	if err != nil {
		return nil, err
	}
	return apiclient.Dial(root)
}

// openDataDir opens the peer's data dir named by --data (or its defaults)
// and reads its config.
func openDataDir(g *globals) (datadir.Dir, datadir.FileConfig, error) {
	root, err := datadir.Resolve(g.data)
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
			return nil, usageError{err}
		}
		out[k] = v
	}
	return out, nil
}

func newInitCmd(g *globals) *cobra.Command {
	var (
		meshKeyFile string
		listen      []string
		bootstrap   []string
		labels      []string
		noMDNS      bool
		heartbeat   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a peer: identity, config file, API token and mesh key",
		Long: `init creates the data directory (mode 0700) with an ed25519 identity (the
peer id, stable across restarts), a documented config file (config.toml), an API
token and a mesh key. Without --mesh-key a new mesh is started; to join an
existing mesh, copy its key (printed by 'cortex-peer mesh-key' on a member) into
a file and pass it with --mesh-key.`,
		Example: `  cortex-peer init
  cortex-peer init --data /srv/b --mesh-key mesh.key --listen /ip4/0.0.0.0/tcp/4102`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root, err := datadir.Resolve(g.data)
			if err != nil {
				return err
			}
			lbl, err := parseLabels(labels)
			if err != nil {
				return err
			}
			opts := datadir.InitOptions{Listen: listen, Bootstrap: bootstrap, Labels: lbl, DisableMDNS: noMDNS, HeartbeatInterval: heartbeat}
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
			if g.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"id": id, "data_dir": root, "new_mesh": meshKeyFile == ""})
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
	return cmd
}

func newJoinCmd(g *globals) *cobra.Command {
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
		Short: "Run the peer in the foreground until SIGINT or SIGTERM",
		Long: `join starts the peer of the data directory: it listens, joins the mesh
through its bootstrap peers, mDNS and the DHT, announces its capabilities, and
serves the local API on DIR/api.sock. SIGINT or SIGTERM stops it cleanly.
--listen and --bootstrap add to the config file's lists for this run.
--mcp-listen 127.0.0.1:PORT also serves MCP as streamable HTTP at
http://127.0.0.1:PORT/mcp (loopback only; bearer token from DIR/api.token).`,
		Example: `  cortex-peer join
  cortex-peer join --data /srv/b --bootstrap /ip4/10.0.0.5/tcp/4101/p2p/12D3KooW...`,
		Args: noArgs,
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
			if os.Getenv("GOMEMLIMIT") == "" && fc.Process.MemoryLimitMiB > 0 {
				debug.SetMemoryLimit(int64(fc.Process.MemoryLimitMiB) << 20)
			}
			// libp2p's own logs: errors only, or warnings when debugging.
			libp2pLevel := slog.LevelError
			if fc.Log.Level == "debug" {
				libp2pLevel = slog.LevelWarn
			}
			p2p.RouteLibp2pLogs(log, libp2pLevel)
			n, err := node.New(cfg, log)
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			log.Info("stopping peer")
			return n.Close()
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

func withAPI[T any](cmd *cobra.Command, g *globals, call func(context.Context, *apiclient.Client) (T, error)) (T, error) {
	var zero T
	c, err := dialPeer(g)
	if err != nil {
		return zero, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), apiTimeout)
	defer cancel()
	return call(ctx, c)
}

func newIDCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "id",
		Short: "Print the peer's id and the addresses others can bootstrap from",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := withAPI(cmd, g, func(ctx context.Context, c *apiclient.Client) (*apiv1.IdentityResponse, error) {
				return c.Identity(ctx)
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				addrs := id.GetAddrs()
				if addrs == nil {
					addrs = []string{}
				}
				return printJSON(out, map[string]any{"id": id.GetId(), "addrs": addrs})
			}
			fmt.Fprintln(out, id.GetId())
			for _, a := range id.GetAddrs() {
				fmt.Fprintf(out, "  %s\n", a)
			}
			return nil
		},
	}
}

// peerJSON is the stable JSON shape of one peer in `peers --json`.
type peerJSON struct {
	ID           string                `json:"id"`
	Addrs        []string              `json:"addrs"`
	Labels       map[string]string     `json:"labels"`
	Version      string                `json:"version"`
	Protocols    []string              `json:"protocols"`
	Capabilities protocol.Capabilities `json:"capabilities"`
	Capacity     protocol.Capacity     `json:"capacity"`
	LastSeen     time.Time             `json:"last_seen"`
	Connected    bool                  `json:"connected"`
	Expired      bool                  `json:"expired,omitempty"`
	Images       []string              `json:"images"`
}

func toPeerJSON(p *apiv1.PeerInfo) peerJSON {
	j := peerJSON{
		ID:           p.GetId(),
		Addrs:        p.GetAddrs(),
		Labels:       p.GetLabels(),
		Version:      p.GetVersion(),
		Protocols:    p.GetProtocols(),
		Capabilities: capsFromAPI(p.GetCapabilities()),
		Capacity:     capacityFromAPI(p.GetCapacity()),
		LastSeen:     p.GetLastSeen().AsTime(),
		Connected:    p.GetConnected(),
		Expired:      p.GetExpired(),
		Images:       p.GetImages(),
	}
	if j.Images == nil {
		j.Images = []string{}
	}
	if j.Addrs == nil {
		j.Addrs = []string{}
	}
	if j.Labels == nil {
		j.Labels = map[string]string{}
	}
	if j.Protocols == nil {
		j.Protocols = []string{}
	}
	return j
}

func capsFromAPI(c *apiv1.Capabilities) protocol.Capabilities {
	return protocol.Capabilities{Containerd: c.GetContainerd(), GVisor: c.GetGvisor(), Chromium: c.GetChromium(), Gopls: c.GetGopls()}
}

func capacityFromAPI(c *apiv1.Capacity) protocol.Capacity {
	return protocol.Capacity{
		CPUs:                 c.GetCpus(),
		MemoryTotalBytes:     c.GetMemoryTotalBytes(),
		MemoryAvailableBytes: c.GetMemoryAvailableBytes(),
		RunningTasks:         c.GetRunningTasks(),
	}
}

func newPeersCmd(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List the peers of the mesh with their labels, capabilities and capacity",
		Long: `peers lists the peers whose capability heartbeat this peer has received
within the heartbeat expiry. With --all, expired peers still remembered are
listed too.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			peers, err := withAPI(cmd, g, func(ctx context.Context, c *apiclient.Client) ([]*apiv1.PeerInfo, error) { return c.Peers(ctx, all) })
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				list := make([]peerJSON, 0, len(peers))
				for _, p := range peers {
					list = append(list, toPeerJSON(p))
				}
				return printJSON(out, list)
			}
			if len(peers) == 0 {
				fmt.Fprintln(out, "no peers seen yet (check bootstrap addresses and the mesh key)")
				return nil
			}
			tw := newTable(out)
			fmt.Fprintln(tw, "PEER\tVERSION\tLABELS\tCAPABILITIES\tCPUS\tMEM FREE\tTASKS\tCONN\tLAST SEEN")
			now := time.Now()
			for _, p := range peers {
				j := toPeerJSON(p)
				conn := "indirect"
				if j.Connected {
					conn = "direct"
				}
				if j.Expired {
					conn = "expired"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", j.ID, j.Version, formatLabels(j.Labels),
					formatList(j.Capabilities.Names()), j.Capacity.CPUs, formatBytes(j.Capacity.MemoryAvailableBytes),
					j.Capacity.RunningTasks, conn, formatAgo(j.LastSeen, now))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "include peers whose heartbeat expired")
	return cmd
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the local peer's health, capabilities and counters",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := withAPI(cmd, g, func(ctx context.Context, c *apiclient.Client) (*apiv1.StatusResponse, error) { return c.Status(ctx) })
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			caps := capsFromAPI(st.GetCapabilities())
			capa := capacityFromAPI(st.GetCapacity())
			if g.json {
				return printJSON(out, map[string]any{
					"id":              st.GetId(),
					"version":         st.GetVersion(),
					"started_at":      st.GetStartedAt().AsTime(),
					"data_dir":        st.GetDataDir(),
					"listen_addrs":    nonNil(st.GetListenAddrs()),
					"connected_peers": st.GetConnectedPeers(),
					"known_peers":     st.GetKnownPeers(),
					"labels":          st.GetLabels(),
					"capabilities":    caps,
					"capacity":        capa,
					"protocols":       nonNil(st.GetProtocols()),
					"store_bytes":     st.GetStoreBytes(),
					"private_network": st.GetPrivateNetwork(),
					"allowlist_size":  st.GetAllowlistSize(),
				})
			}
			tw := newTable(out)
			admission := "mesh key"
			if !st.GetPrivateNetwork() {
				admission = "allowlist only"
			} else if st.GetAllowlistSize() > 0 {
				admission = fmt.Sprintf("mesh key + allowlist of %d", st.GetAllowlistSize())
			}
			rows := [][2]string{
				{"peer", st.GetId()},
				{"version", st.GetVersion()},
				{"up", time.Since(st.GetStartedAt().AsTime()).Round(time.Second).String()},
				{"data dir", st.GetDataDir()},
				{"listening", formatList(st.GetListenAddrs())},
				{"admission", admission},
				{"peers", fmt.Sprintf("%d known, %d connected", st.GetKnownPeers(), st.GetConnectedPeers())},
				{"labels", formatLabels(st.GetLabels())},
				{"capabilities", formatList(caps.Names())},
				{"capacity", fmt.Sprintf("%d CPUs, %s of %s memory free, %d tasks running", capa.CPUs, formatBytes(capa.MemoryAvailableBytes), formatBytes(capa.MemoryTotalBytes), capa.RunningTasks)},
				{"store", formatBytes(st.GetStoreBytes())},
				{"protocols", formatList(st.GetProtocols())},
			}
			for _, r := range rows {
				fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
			}
			return tw.Flush()
		},
	}
}

func nonNil(xs []string) []string {
	if xs == nil {
		return []string{}
	}
	return xs
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary and the wire protocols it speaks",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if g.json {
				return printJSON(out, map[string]any{"version": node.Version, "go": runtime.Version(), "protocols": protocol.Protocols()})
			}
			fmt.Fprintf(out, "cortex-peer %s (%s, %s/%s)\n", node.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			for _, p := range protocol.Protocols() {
				fmt.Fprintf(out, "  %s\n", p)
			}
			return nil
		},
	}
}

func newMeshKeyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "mesh-key",
		Short: "Print the mesh key, to copy to a machine that should join this mesh",
		Long: `mesh-key prints the private-network key of the mesh. Anyone holding it can
join the mesh: copy it over a trusted channel, into a file on the other machine,
and run 'cortex-peer init --mesh-key FILE' there.`,
		Args: noArgs,
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
			if g.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"mesh_key": string(key)})
			}
			_, err = cmd.OutOrStdout().Write(key)
			return err
		},
	}
}
