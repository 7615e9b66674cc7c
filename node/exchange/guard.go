package exchange

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/boxo/bitswap/message"
	pb "github.com/ipfs/boxo/bitswap/message/pb"
	bsnetwork "github.com/ipfs/boxo/bitswap/network"
	bsexchange "github.com/ipfs/boxo/exchange"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// ErrUntrustedPeers classifies a fetch that failed because the peers that
// offered the content served blocks that fail verification, and no other
// peer supplied it. It wraps errdefs.ErrUnavailable: the fetch can succeed
// once an honest peer that holds the content is connected.
var ErrUntrustedPeers = fmt.Errorf("only untrusted peers offered the content: %w", errdefs.ErrUnavailable)

// lateBlockGrace is how long the keys a finished fetch asked for are still
// recognised: a block that an honest peer sent just before the fetch ended
// must not be taken for garbage when it arrives afterwards.
const lateBlockGrace = 30 * time.Second

// A peerGuard sits between bitswap and its network so that a fetch stops
// asking a peer that served it bad blocks.
//
// Why here: bitswap's wire does not say which want a block answers. The
// receiver computes a block's CID from its bytes, so a peer that serves
// wrong bytes for X is seen as sending some block Y that nobody wanted, and
// boxo drops it silently and keeps asking that peer for X. Sessions have no
// API to exclude a peer. So the guard inspects every incoming message:
//   - a block over dag.MaxBlockSize is dropped (its hash may be right, but
//     the store would refuse it) and its sender is bad;
//   - a block whose CID no active fetch asked for (nor a recently finished
//     one), and that is not stored here, is garbage, and its sender is bad;
//   - for a fetch that holds a peer as bad, the peer's HAVEs for the keys
//     of that fetch become DONT_HAVEs, so the fetch's session never sends
//     it a want-block again; and when a peer turns bad, a DONT_HAVE from it
//     for every key the fetch still lacks is injected, so wants already sent
//     to it move to other peers at once.
//
// The exclusion is per fetch: other fetches, the bitswap server (this
// peer's blocks served to the bad peer) and the connection are untouched.
// A garbage block cannot be tied to one fetch, so it counts against the
// sender in every fetch active when it came.
type peerGuard struct {
	bsnetwork.BitSwapNetwork
	blocks    *dag.Blockstore
	connected func() []peer.ID
	log       *slog.Logger

	wants *wantBudget // paces the wants each peer sends

	mu        sync.Mutex
	receivers []bsnetwork.Receiver
	active    map[*fetchScope]struct{}
	retired   []retired // oldest first
}

type retired struct {
	s     *fetchScope
	until time.Time
}

func newPeerGuard(net bsnetwork.BitSwapNetwork, bs *dag.Blockstore, connected func() []peer.ID, log *slog.Logger) *peerGuard {
	return &peerGuard{
		BitSwapNetwork: net,
		blocks:         bs,
		connected:      connected,
		log:            log,
		wants:          newWantBudget(log),
		active:         map[*fetchScope]struct{}{},
	}
}

// Start hands the network receivers that see messages through the guard.
func (g *peerGuard) Start(rs ...bsnetwork.Receiver) {
	wrapped := make([]bsnetwork.Receiver, len(rs))
	for i, r := range rs {
		wrapped[i] = guardReceiver{g: g, Receiver: r}
	}
	g.mu.Lock()
	g.receivers = rs
	g.mu.Unlock()
	g.BitSwapNetwork.Start(wrapped...)
}

type guardReceiver struct {
	g *peerGuard
	bsnetwork.Receiver
}

func (r guardReceiver) ReceiveMessage(ctx context.Context, p peer.ID, msg message.BitSwapMessage) {
	r.Receiver.ReceiveMessage(ctx, p, r.g.filter(ctx, p, r.g.wants.admit(p, msg)))
}

// A fetchScope is one fetch as the guard sees it: what it asked for and
// which peers it no longer trusts. Its maps are guarded by the guard's mu.
type fetchScope struct {
	g     *peerGuard
	root  cid.Cid
	asked map[cid.Cid]bool // every key asked for; true once a block came
	bad   map[peer.ID]string
	fail  func(error) // ends the fetch with this cause
	ended bool
}

// begin registers a fetch of root; fail is called (at most once per bad
// peer) when every connected peer is bad for it. end must follow.
func (g *peerGuard) begin(root cid.Cid, fail func(error)) *fetchScope {
	s := &fetchScope{g: g, root: root, asked: map[cid.Cid]bool{}, bad: map[peer.ID]string{}, fail: fail}
	g.mu.Lock()
	g.active[s] = struct{}{}
	g.mu.Unlock()
	return s
}

// end unregisters the fetch; its keys stay known for lateBlockGrace.
func (s *fetchScope) end() {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.ended {
		return
	}
	s.ended = true
	delete(g.active, s)
	now := time.Now()
	g.pruneLocked(now)
	g.retired = append(g.retired, retired{s: s, until: now.Add(lateBlockGrace)})
}

func (g *peerGuard) pruneLocked(now time.Time) {
	i := 0
	for i < len(g.retired) && now.After(g.retired[i].until) {
		g.retired[i] = retired{}
		i++
	}
	g.retired = g.retired[i:]
}

// askedLocked reports whether any active or recently finished fetch asked
// for c.
func (g *peerGuard) askedLocked(c cid.Cid) bool {
	for s := range g.active {
		if _, ok := s.asked[c]; ok {
			return true
		}
	}
	g.pruneLocked(time.Now())
	for _, r := range g.retired {
		if _, ok := r.s.asked[c]; ok {
			return true
		}
	}
	return false
}

// excludedLocked reports whether p's HAVE for c must read as DONT_HAVE:
// some active fetch asked for c, and every one that did holds p as bad.
func (g *peerGuard) excludedLocked(p peer.ID, c cid.Cid) bool {
	asked := false
	for s := range g.active {
		if _, ok := s.asked[c]; !ok {
			continue
		}
		asked = true
		if _, bad := s.bad[p]; !bad {
			return false
		}
	}
	return asked
}

// filter checks an incoming message and returns what bitswap may see.
func (g *peerGuard) filter(ctx context.Context, p peer.ID, msg message.BitSwapMessage) message.BitSwapMessage {
	blks := msg.Blocks()
	haves := msg.Haves()
	if len(blks) == 0 && len(haves) == 0 {
		return msg
	}
	var drop map[cid.Cid]bool
	var reason string
	var unknown []blocks.Block
	g.mu.Lock()
	if len(g.active) == 0 {
		// Nothing is being fetched: bitswap drops every block as unwanted.
		g.mu.Unlock()
		return msg
	}
	for _, b := range blks {
		if len(b.RawData()) > dag.MaxBlockSize {
			if drop == nil {
				drop = map[cid.Cid]bool{}
			}
			drop[b.Cid()] = true
			reason = fmt.Sprintf("block %s of %d bytes, over the cap of %d", b.Cid(), len(b.RawData()), dag.MaxBlockSize)
			continue
		}
		known := false
		for s := range g.active {
			if _, ok := s.asked[b.Cid()]; ok {
				s.asked[b.Cid()] = true
				known = true
			}
		}
		if !known && !g.askedLocked(b.Cid()) {
			unknown = append(unknown, b)
		}
	}
	g.mu.Unlock()
	// A block nobody asked for may still be a late duplicate of one that
	// is stored by now; only one that is neither is garbage.
	for _, b := range unknown {
		if has, err := g.blocks.Has(ctx, b.Cid()); err == nil && !has {
			reason = fmt.Sprintf("bytes that hash to %s, which no fetch asked for", b.Cid())
			break
		}
	}
	var scopes []*fetchScope
	if reason != "" {
		g.mu.Lock()
		for s := range g.active {
			scopes = append(scopes, s)
		}
		g.mu.Unlock()
	}
	for _, s := range scopes {
		s.markBad(ctx, p, reason)
	}

	// HAVEs from a peer that every interested fetch distrusts are turned
	// into DONT_HAVEs.
	var convert map[cid.Cid]bool
	g.mu.Lock()
	for _, c := range haves {
		if g.excludedLocked(p, c) {
			if convert == nil {
				convert = map[cid.Cid]bool{}
			}
			convert[c] = true
		}
	}
	g.mu.Unlock()
	if drop == nil && convert == nil {
		return msg
	}
	out := message.New(msg.Full())
	for _, e := range msg.Wantlist() {
		if e.Cancel {
			out.Cancel(e.Cid)
		} else {
			out.AddEntry(e.Cid, e.Priority, e.WantType, e.SendDontHave)
		}
	}
	for _, b := range blks {
		if !drop[b.Cid()] {
			out.AddBlock(b)
		}
	}
	for _, bp := range msg.BlockPresences() {
		t := bp.Type
		if convert[bp.Cid] {
			t = pb.Message_DontHave
		}
		out.AddBlockPresence(bp.Cid, t)
	}
	out.SetPendingBytes(msg.PendingBytes())
	return out
}

// markBad stops the fetch from asking p for the rest of it. The first time
// for a peer it logs at Warn, moves the fetch's outstanding wants off p,
// and ends the fetch if no other connected peer is left.
func (s *fetchScope) markBad(ctx context.Context, p peer.ID, reason string) {
	g := s.g
	g.mu.Lock()
	if _, dup := s.bad[p]; dup || s.ended {
		g.mu.Unlock()
		return
	}
	s.bad[p] = reason
	dh := message.New(false)
	for c, got := range s.asked {
		if !got {
			dh.AddDontHave(c)
		}
	}
	receivers := slices.Clone(g.receivers)
	g.mu.Unlock()
	g.log.Warn("peer served a bad block; not asking it again in this fetch", "peer", p, "root", s.root, "reason", reason)
	if !dh.Empty() {
		for _, r := range receivers {
			r.ReceiveMessage(ctx, p, dh)
		}
	}
	if s.allBad() {
		s.fail(s.err())
	}
}

// isBad reports whether p served this fetch a bad block.
func (s *fetchScope) isBad(p peer.ID) bool {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	_, bad := s.bad[p]
	return bad
}

// allBad reports whether every connected peer is bad for this fetch.
func (s *fetchScope) allBad() bool {
	for _, p := range s.g.connected() {
		if !s.isBad(p) {
			return false
		}
	}
	return true
}

// err is the fetch's failure naming its bad peers, nil when there are none.
func (s *fetchScope) err() error {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	if len(s.bad) == 0 {
		return nil
	}
	peers := make([]string, 0, len(s.bad))
	for p := range s.bad {
		peers = append(peers, p.String())
	}
	slices.Sort(peers)
	return fmt.Errorf("fetch %s: peers %v served blocks that fail verification and are not asked again in this fetch; no other peer supplied it, connect one that holds it and retry: %w",
		s.root, peers, ErrUntrustedPeers)
}

// fetcher wraps a bitswap session so the guard knows what the fetch asks.
func (s *fetchScope) fetcher(f bsexchange.Fetcher) dag.Fetcher { return scopedFetcher{s: s, f: f} }

type scopedFetcher struct {
	s *fetchScope
	f bsexchange.Fetcher
}

func (sf scopedFetcher) GetBlocks(ctx context.Context, keys []cid.Cid) (<-chan blocks.Block, error) {
	g := sf.s.g
	g.mu.Lock()
	for _, k := range keys {
		if _, ok := sf.s.asked[k]; !ok {
			sf.s.asked[k] = false
		}
	}
	g.mu.Unlock()
	return sf.f.GetBlocks(ctx, keys)
}
