package node

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// placement is what a caller asks of the peer that will run a task.
type placement struct {
	Peer    peer.ID           // this peer and no other, when set
	Labels  map[string]string // every one must match the peer's labels
	Require []string          // capability names (protocol.Capabilities.Names)
}

// knownCapabilities are the names --require accepts.
var knownCapabilities = []string{"containerd", "gvisor", "chromium", "gopls"}

func (p placement) validate() error {
	for _, r := range p.Require {
		if !slices.Contains(knownCapabilities, r) {
			return fmt.Errorf("require %q: want one of %s: %w", r, strings.Join(knownCapabilities, ", "), errdefs.ErrInvalid)
		}
	}
	return nil
}

// candidate is one peer that might run a task, as its heartbeat shows it.
type candidate struct {
	ID        peer.ID
	Self      bool
	Labels    map[string]string
	Caps      protocol.Capabilities
	Protocols []string
	CPUs      uint32
	Running   uint32
}

// choose picks the peer to run a task: the asked-for peer, else among the
// peers that match every label and capability (containerd is always
// needed) and speak the task protocol, the least loaded (running tasks per
// CPU), this peer on a tie (its workspace blocks are already here). When no
// peer fits, the error says what each lacked.
func choose(p placement, cands []candidate) (candidate, error) {
	need := append([]string{"containerd"}, p.Require...)
	var fits []candidate
	var why []string
	for _, c := range cands {
		if p.Peer != "" && c.ID != p.Peer {
			continue
		}
		if reason := c.lacks(need, p.Labels); reason != "" {
			why = append(why, fmt.Sprintf("%s %s", shortID(c.ID), reason))
			continue
		}
		fits = append(fits, c)
	}
	if len(fits) == 0 {
		if p.Peer != "" && len(why) == 0 {
			return candidate{}, fmt.Errorf("peer %s is not a live member of the mesh (see cortex-peer peers): %w", p.Peer, errdefs.ErrNotFound)
		}
		return candidate{}, fmt.Errorf("no peer can run this task (needs %s%s): %s: %w",
			strings.Join(need, ", "), labelText(p.Labels), strings.Join(why, "; "), errdefs.ErrUnavailable)
	}
	sort.SliceStable(fits, func(i, j int) bool {
		li, lj := fits[i].load(), fits[j].load()
		if li != lj {
			return li < lj
		}
		return fits[i].Self && !fits[j].Self
	})
	return fits[0], nil
}

// lacks says what c lacks of the capabilities and labels, or "".
func (c candidate) lacks(need []string, labels map[string]string) string {
	var miss []string
	have := c.Caps.Names()
	for _, n := range need {
		if !slices.Contains(have, n) {
			miss = append(miss, "no "+n)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if v, ok := c.Labels[k]; !ok || v != labels[k] {
			miss = append(miss, fmt.Sprintf("label %s=%q", k, c.Labels[k]))
		}
	}
	if !c.Self && !slices.Contains(c.Protocols, protocol.TaskProtocol) {
		miss = append(miss, "does not speak "+protocol.TaskProtocol)
	}
	if len(miss) == 0 {
		return ""
	}
	return "has " + strings.Join(miss, ", ")
}

func (c candidate) load() float64 {
	return float64(c.Running) / float64(max(c.CPUs, 1))
}

func labelText(labels map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		fmt.Fprintf(&b, ", %s=%s", k, labels[k])
	}
	return b.String()
}

// shortID is the tail of a peer id, as people compare them.
func shortID(id peer.ID) string {
	s := id.String()
	if len(s) > 10 {
		return "…" + s[len(s)-8:]
	}
	return s
}
