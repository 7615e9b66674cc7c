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

// gater decides who may connect: when the allowlist is not empty only the
// peers on it, and never a peer blocked at run time (Host.Block), on dial and
// after the secure handshake (when the remote's identity is proven).
type gater struct {
	allowed map[peer.ID]struct{} // nil: every holder of the mesh key
	log     *slog.Logger
	logged  firstSight

	mu      sync.RWMutex
	blocked map[peer.ID]struct{}
}

var _ connmgr.ConnectionGater = (*gater)(nil)

func newGater(allowlist []peer.ID, log *slog.Logger) *gater {
	g := &gater{log: log, blocked: map[peer.ID]struct{}{}}
	if len(allowlist) > 0 {
		g.allowed = make(map[peer.ID]struct{}, len(allowlist))
		for _, id := range allowlist {
			g.allowed[id] = struct{}{}
		}
	}
	return g
}

// block refuses p from now on; it reports whether p was not blocked before.
func (g *gater) block(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, was := g.blocked[p]
	g.blocked[p] = struct{}{}
	return !was
}

func (g *gater) unblock(p peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.blocked, p)
}

func (g *gater) isBlocked(p peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	_, ok := g.blocked[p]
	return ok
}

func (g *gater) allow(p peer.ID, dir string) bool {
	if g.isBlocked(p) {
		return false
	}
	if g.allowed == nil {
		return true
	}
	if _, ok := g.allowed[p]; ok {
		return true
	}
	if g.logged.first(p) {
		g.log.Warn("refused peer not on the allowlist", "peer", p, "direction", dir)
	}
	return false
}

func (g *gater) InterceptPeerDial(p peer.ID) bool { return g.allow(p, "outbound") }

func (g *gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return !g.isBlocked(p) }

func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g *gater) InterceptSecured(dir network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allow(p, dir.String())
}

func (g *gater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	return !g.isBlocked(c.RemotePeer()), 0
}
