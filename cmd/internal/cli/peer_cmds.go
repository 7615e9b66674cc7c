package cli

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/node/buildinfo"
	"github.com/cortex-peer/cortex-peer/node/datadir/locate"
	"github.com/cortex-peer/cortex-peer/protocol"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// apiTimeout bounds one call of a client verb to the local API.
const apiTimeout = 30 * time.Second

func DialPeer(g *Globals) (*apiclient.Client, error) {
	root, err := locate.Resolve(g.Data)
	if err != nil {
		return nil, err
	}
	return apiclient.Dial(root)
}

func withAPI[T any](cmd *cobra.Command, g *Globals, call func(context.Context, *apiclient.Client) (T, error)) (T, error) {
	var zero T
	c, err := DialPeer(g)
	if err != nil {
		return zero, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), apiTimeout)
	defer cancel()
	return call(ctx, c)
}

func newIDCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "id",
		Short: "Print the peer's id and the addresses others can bootstrap from",
		Args:  NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := withAPI(cmd, g, func(ctx context.Context, c *apiclient.Client) (*apiv1.IdentityResponse, error) {
				return c.Identity(ctx)
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.JSON {
				addrs := id.GetAddrs()
				if addrs == nil {
					addrs = []string{}
				}
				return PrintJSON(out, map[string]any{"id": id.GetId(), "addrs": addrs})
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
	Draining     bool                  `json:"draining"`
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
		Draining:     p.GetDraining(),
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

func newPeersCmd(g *Globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List the peers of the mesh with their labels, capabilities and capacity",
		Long: `peers lists the live peers of the mesh: those whose capability heartbeat
this peer has received within the heartbeat expiry, and those whose heartbeat
is late but that are still connected to this peer (for up to ten expiries,
at least a minute). With --all, expired peers still remembered are listed too.`,
		Args: NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			peers, err := withAPI(cmd, g, func(ctx context.Context, c *apiclient.Client) ([]*apiv1.PeerInfo, error) { return c.Peers(ctx, all) })
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.JSON {
				list := make([]peerJSON, 0, len(peers))
				for _, p := range peers {
					list = append(list, toPeerJSON(p))
				}
				return PrintJSON(out, list)
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
				if j.Draining {
					conn += ",draining"
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

func newStatusCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the local peer's health, capabilities and counters",
		Args:  NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := withAPI(cmd, g, func(ctx context.Context, c *apiclient.Client) (*apiv1.StatusResponse, error) { return c.Status(ctx) })
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			caps := capsFromAPI(st.GetCapabilities())
			capa := capacityFromAPI(st.GetCapacity())
			if g.JSON {
				return PrintJSON(out, map[string]any{
					"id":                  st.GetId(),
					"version":             st.GetVersion(),
					"started_at":          st.GetStartedAt().AsTime(),
					"data_dir":            st.GetDataDir(),
					"listen_addrs":        nonNil(st.GetListenAddrs()),
					"connected_peers":     st.GetConnectedPeers(),
					"known_peers":         st.GetKnownPeers(),
					"labels":              st.GetLabels(),
					"capabilities":        caps,
					"capacity":            capa,
					"protocols":           nonNil(st.GetProtocols()),
					"store_bytes":         st.GetStoreBytes(),
					"private_network":     st.GetPrivateNetwork(),
					"allowlist_size":      st.GetAllowlistSize(),
					"mesh_bytes_received": st.GetMeshBytesReceived(),
					"mesh_bytes_sent":     st.GetMeshBytesSent(),
					"draining":            st.GetDraining(),
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
				{"mesh traffic", fmt.Sprintf("%s received, %s sent", formatBytes(st.GetMeshBytesReceived()), formatBytes(st.GetMeshBytesSent()))},
				{"protocols", formatList(st.GetProtocols())},
			}
			if st.GetDraining() {
				rows = append(rows, [2]string{"draining", "yes: taking no tasks ('cortex-peer eligible' undoes a drain --stay)"})
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

func newVersionCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary and the wire protocols it speaks",
		Args:  NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if g.JSON {
				return PrintJSON(out, map[string]any{"version": buildinfo.Version, "go": runtime.Version(), "protocols": protocol.Protocols()})
			}
			fmt.Fprintf(out, "cortex-peer %s (%s, %s/%s)\n", buildinfo.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			for _, p := range protocol.Protocols() {
				fmt.Fprintf(out, "  %s\n", p)
			}
			return nil
		},
	}
}
