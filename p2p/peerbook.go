package p2p

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cortex-peer/cortex-peer/protocol"
)

// MaxBookEntries bounds the peer book; heartbeats from further new peers are
// ignored until old entries are forgotten.
const MaxBookEntries = 10_000

// forgetAfterExpiries is how many expiry periods an expired entry is kept
// (shown with include_expired) before it is forgotten.
const forgetAfterExpiries = 20

// PeerEntry is what the book knows of one peer.
type PeerEntry struct {
	ID        peer.ID
	Heartbeat protocol.Heartbeat
	Addrs     []ma.Multiaddr
	LastSeen  time.Time
	Expired   bool
}

// Book holds the latest heartbeat of every peer of the mesh. Entries expire
// when no heartbeat arrived within the expiry; List hides them.
type Book struct {
	expiry time.Duration

	mu      sync.Mutex
	entries map[peer.ID]*PeerEntry
}

// NewBook returns an empty book whose entries expire after expiry.
func NewBook(expiry time.Duration) *Book {
	return &Book{expiry: expiry, entries: map[peer.ID]*PeerEntry{}}
}

// Observe records a heartbeat received at time at from peer id. It ignores
// heartbeats older than the one held (replays, reordering) and reports
// whether the peer was new or had expired.
func (b *Book) Observe(id peer.ID, hb protocol.Heartbeat, at time.Time) (fresh bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[id]
	if ok && !newer(hb, e.Heartbeat) {
		return false
	}
	if !ok && len(b.entries) >= MaxBookEntries {
		return false
	}
	fresh = !ok || at.Sub(e.LastSeen) > b.expiry
	b.entries[id] = &PeerEntry{ID: id, Heartbeat: hb, Addrs: decodeAddrs(hb.Addrs), LastSeen: at}
	return fresh
}

// newer reports whether a is a later heartbeat than b from the same peer: a
// later process start, or the same start and a higher sequence number.
func newer(a, b protocol.Heartbeat) bool {
	if !a.StartedAt.Equal(b.StartedAt) {
		return a.StartedAt.After(b.StartedAt)
	}
	return a.Seq > b.Seq
}

func decodeAddrs(raw [][]byte) []ma.Multiaddr {
	out := make([]ma.Multiaddr, 0, len(raw))
	for _, r := range raw {
		a, err := ma.NewMultiaddrBytes(r)
		if err != nil {
			continue // an address we cannot parse is useless, not fatal
		}
		out = append(out, a)
	}
	return out
}

// List returns the peers seen within the expiry (and, with includeExpired,
// the expired ones still remembered), sorted by peer id. Entries expired for
// long are forgotten.
func (b *Book) List(now time.Time, includeExpired bool) []PeerEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]PeerEntry, 0, len(b.entries))
	for id, e := range b.entries {
		age := now.Sub(e.LastSeen)
		if age > forgetAfterExpiries*b.expiry {
			delete(b.entries, id)
			continue
		}
		c := *e
		c.Expired = age > b.expiry
		if c.Expired && !includeExpired {
			continue
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b PeerEntry) int { return bytes.Compare([]byte(a.ID), []byte(b.ID)) })
	return out
}

// Get returns the entry of one peer, expired or not.
func (b *Book) Get(id peer.ID, now time.Time) (PeerEntry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[id]
	if !ok {
		return PeerEntry{}, false
	}
	c := *e
	c.Expired = now.Sub(e.LastSeen) > b.expiry
	return c, true
}
