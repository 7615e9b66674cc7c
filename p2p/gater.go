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

// allowlistGater refuses every peer not on its list, on dial and after the
// secure handshake (when the remote's identity is proven).
type allowlistGater struct {
	allowed map[peer.ID]struct{}
	log     *slog.Logger

	mu     sync.Mutex
	logged map[peer.ID]struct{}
}

var _ connmgr.ConnectionGater = (*allowlistGater)(nil)

func newAllowlistGater(ids []peer.ID, log *slog.Logger) *allowlistGater {
	g := &allowlistGater{allowed: make(map[peer.ID]struct{}, len(ids)), log: log, logged: map[peer.ID]struct{}{}}
	for _, id := range ids {
		g.allowed[id] = struct{}{}
	}
	return g
}

func (g *allowlistGater) allow(p peer.ID, dir string) bool {
	if _, ok := g.allowed[p]; ok {
		return true
	}
	g.mu.Lock()
	_, seen := g.logged[p]
	if !seen && len(g.logged) < maxRefusalsLogged {
		g.logged[p] = struct{}{}
	}
	g.mu.Unlock()
	if !seen {
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
