package p2p

import (
	"log/slog"
	"sync"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// maxRefusalsLogged bounds the memory spent remembering which refused peers
// were already logged; beyond it refusals are still enforced, just not logged.
const maxRefusalsLogged = 1024

// firstSight remembers peers seen for a reason (a refusal, a rejected
// message), up to maxRefusalsLogged of them, so each is logged once.
type firstSight struct {
	mu   sync.Mutex
	seen map[peer.ID]struct{}
}

// first reports whether p is seen here for the first time. Once the set is
// full it reports false: nothing new is logged rather than everything.
func (f *firstSight) first(p peer.ID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[peer.ID]struct{}{}
	}
	if _, ok := f.seen[p]; ok || len(f.seen) >= maxRefusalsLogged {
		return false
	}
	f.seen[p] = struct{}{}
	return true
}

// allowlistGater refuses every peer not on its list, on dial and after the
// secure handshake (when the remote's identity is proven).
type allowlistGater struct {
	allowed map[peer.ID]struct{}
	log     *slog.Logger
	logged  firstSight
}

var _ connmgr.ConnectionGater = (*allowlistGater)(nil)

func newAllowlistGater(ids []peer.ID, log *slog.Logger) *allowlistGater {
	g := &allowlistGater{allowed: make(map[peer.ID]struct{}, len(ids)), log: log}
	for _, id := range ids {
		g.allowed[id] = struct{}{}
	}
	return g
}

func (g *allowlistGater) allow(p peer.ID, dir string) bool {
	if _, ok := g.allowed[p]; ok {
		return true
	}
	if g.logged.first(p) {
		g.log.Warn("refused peer not on the allowlist", "peer", p, "direction", dir)
	}
	return false
}

func (g *allowlistGater) InterceptPeerDial(p peer.ID) bool { return g.allow(p, "outbound") }

func (g *allowlistGater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

func (g *allowlistGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g *allowlistGater) InterceptSecured(dir network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allow(p, dir.String())
}

func (g *allowlistGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}
