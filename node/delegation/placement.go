package delegation

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/runtime/images"
)

// Placement is what a caller asks of the peer that will run a task.
type Placement struct {
	Peer    peer.ID           // this peer and no other, when set
	Labels  map[string]string // every one must match the peer's labels
	Require []string          // capability names (protocol.Capabilities.Names)
}

// knownCapabilities are the names --require accepts.
var knownCapabilities = []string{"containerd", "gvisor", "chromium", "gopls"}

func (p Placement) validate() error {
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
	Images    []string // names of the images it holds
	// Missing is the fraction of the task's workspace blocks the peer lacks
	// (0 without a workspace, or when nobody asked), from a probe.
	Missing float64
	// Draining: the peer takes no new tasks.
	Draining bool
}

// What a peer lacks weighs as a share of a busy CPU in placement: fetching a
// whole workspace costs about as much as sharing a CPU with half a task, and
// pulling an image a quarter. A peer twice as loaded as another but holding
// the workspace still loses to it; an idle one that holds it wins.
const (
	missingWorkspaceCost = 0.5
	missingImageCost     = 0.25
)

// fitting returns the candidates that meet every hard demand of p (the
// asked-for peer, labels, capabilities; containerd is always needed, and the
// task protocol for another peer), or an error that says what each lacked.
func fitting(p Placement, cands []candidate) ([]candidate, error) {
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
			return nil, fmt.Errorf("peer %s is not a live member of the mesh (see cortex-peer peers): %w", p.Peer, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("no peer can run this task (needs %s%s): %s: %w",
			strings.Join(need, ", "), labelText(p.Labels), strings.Join(why, "; "), errdefs.ErrUnavailable)
	}
	return fits, nil
}

// choose picks the peer to run a task among those fitting p: the one of
// least cost, which is its load (running tasks per CPU) plus what it would
// have to fetch (the workspace blocks it lacks, the image when it does not
// hold it); this peer on a tie. image is the task's image, "" when the
// executor's default.
func choose(p Placement, cands []candidate, image string) (candidate, error) {
	fits, err := fitting(p, cands)
	if err != nil {
		return candidate{}, err
	}
	sort.SliceStable(fits, func(i, j int) bool {
		ci, cj := fits[i].cost(image), fits[j].cost(image)
		if ci != cj {
			return ci < cj
		}
		return fits[i].Self && !fits[j].Self
	})
	return fits[0], nil
}

func (c candidate) cost(image string) float64 {
	cost := c.load() + missingWorkspaceCost*c.Missing
	if image != "" && !slices.ContainsFunc(c.Images, func(held string) bool { return images.Refers(held, image) }) {
		cost += missingImageCost
	}
	return cost
}

// lacks says what c lacks of the capabilities and labels, or "".
func (c candidate) lacks(need []string, labels map[string]string) string {
	var miss []string
	if c.Draining {
		return "is draining"
	}
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
