package exchange

import (
	"log/slog"
	"time"

	"github.com/ipfs/boxo/bitswap/message"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/p2p"
)

// The wants a peer sends are paced: each costs the bitswap server a lookup
// in the store (13 µs here) and a place in the peer's ledger, so a member
// of the mesh that sends want lists of blocks nobody has, as fast as it
// can, would keep a core busy. An honest fetch asks for a file's leaves
// (1 MiB each) as it goes: 4,096 wants a second is 4 GiB/s, and the burst
// covers a 16 GiB file asked for at once. Wants past the budget are
// dropped (an honest peer's bitswap asks again a second later); blocks and
// presences in the same message go through.
const (
	wantsPerSecond = 4096
	wantsBurst     = 16384
	// A peer's pace is forgotten after this long without a want.
	wantIdle = time.Minute
)

type wantBudget struct {
	log   *slog.Logger
	rates *p2p.PeerRates
}

func newWantBudget(log *slog.Logger) *wantBudget {
	return &wantBudget{log: log, rates: p2p.NewPeerRates(wantsPerSecond, wantsBurst, wantIdle)}
}

// admit returns msg, or msg without its wants when p has spent its budget.
func (b *wantBudget) admit(p peer.ID, msg message.BitSwapMessage) message.BitSwapMessage {
	wants := 0
	for _, e := range msg.Wantlist() {
		if !e.Cancel {
			wants++
		}
	}
	if wants == 0 {
		return msg
	}
	ok, first := b.rates.Allow(p, wants, time.Now())
	if ok {
		return msg
	}
	if first {
		b.log.Warn("peer sends bitswap wants past its budget; dropping the excess", "peer", p, "wants_per_second", wantsPerSecond)
	}
	out := message.New(msg.Full())
	for _, e := range msg.Wantlist() {
		if e.Cancel {
			out.Cancel(e.Cid)
		}
	}
	for _, blk := range msg.Blocks() {
		out.AddBlock(blk)
	}
	for _, bp := range msg.BlockPresences() {
		out.AddBlockPresence(bp.Cid, bp.Type)
	}
	out.SetPendingBytes(msg.PendingBytes())
	return out
}
