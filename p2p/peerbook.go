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

// forgetAfterExpiries is how many expiry periods after its last heartbeat
// an expired entry is kept (shown with include_expired) before it is
// forgotten.
const forgetAfterExpiries = 20

// A connected peer whose heartbeats are late is still live, but not for
// ever: past maxSilentExpiries expiry periods without a heartbeat, and never
// before minMaxSilence, its entry expires even though it is connected. By
// then what it last announced (capacity, images, labels) is too old to place
// work on, and a peer that keeps a connection open but cannot get one
// heartbeat through in that time is broken. The floor keeps the short
// expiries of test meshes (1 s) from turning a starved machine's late
// heartbeats into a dead peer again.
const (
	maxSilentExpiries = 10
	minMaxSilence     = time.Minute
)

// PeerEntry is what the book knows of one peer.
type PeerEntry struct {
	ID        peer.ID
	Heartbeat protocol.Heartbeat
	Addrs     []ma.Multiaddr
	LastSeen  time.Time
	Expired   bool
}

// Book holds the latest heartbeat of every peer of the mesh. An entry
// expires when no heartbeat arrived within the expiry and its peer is not
// connected (or has sent none for much longer, see maxSilentExpiries); List
// hides expired entries.
//
// A heartbeat is evidence that a peer is alive, not the only one: on a
// starved machine heartbeats arrive late while the connection to the peer is
// up and its streams are answered. Such a peer stays live.
type Book struct {
	expiry    time.Duration
	connected func(peer.ID) bool

	mu      sync.Mutex
	entries map[peer.ID]*PeerEntry
}

// NewBook returns an empty book whose entries expire after expiry unless
// connected reports their peer connected. connected is called with the
// book's lock held, so it must not call the book; nil means liveness is
// judged by heartbeats alone.
func NewBook(expiry time.Duration, connected func(peer.ID) bool) *Book {
	return &Book{expiry: expiry, connected: connected, entries: map[peer.ID]*PeerEntry{}}
}

// maxSilence is how long a connected peer may go without a heartbeat.
func (b *Book) maxSilence() time.Duration {
	return max(maxSilentExpiries*b.expiry, minMaxSilence)
}

// expired reports whether e is expired at now: its last heartbeat is older
// than the expiry and its peer is not connected, or older than maxSilence.
func (b *Book) expired(e *PeerEntry, now time.Time) bool {
	age := now.Sub(e.LastSeen)
	switch {
	case age <= b.expiry:
		return false
	case age > b.maxSilence() || b.connected == nil:
		return true
	default:
		return !b.connected(e.ID)
	}
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
	fresh = !ok || b.expired(e, at)
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

// List returns the live peers (and, with includeExpired, the expired ones
// still remembered), sorted by peer id. Entries expired for long are
// forgotten.
func (b *Book) List(now time.Time, includeExpired bool) []PeerEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]PeerEntry, 0, len(b.entries))
	for id, e := range b.entries {
		c := *e
		c.Expired = b.expired(e, now)
		if c.Expired && now.Sub(e.LastSeen) > forgetAfterExpiries*b.expiry {
			delete(b.entries, id)
			continue
		}
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
	c.Expired = b.expired(e, now)
	return c, true
}
