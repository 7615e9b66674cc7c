package p2p

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// PeerRates paces what each peer may ask for: a token bucket per peer,
// forgotten after idle without use. A member of the mesh (it holds the mesh
// key) that asks as fast as it can gets its excess refused at the cost of
// one token check; the refusal is reported first once, to log it once.
type PeerRates struct {
	perSecond rate.Limit
	burst     int
	idle      time.Duration

	mu    sync.Mutex
	peers map[peer.ID]*peerRate
	last  time.Time // of the last prune
}

type peerRate struct {
	limit  *rate.Limiter
	seen   time.Time
	warned bool // a refusal was reported as first
}

// NewPeerRates paces each peer to perSecond with bursts of burst.
func NewPeerRates(perSecond float64, burst int, idle time.Duration) *PeerRates {
	return &PeerRates{perSecond: rate.Limit(perSecond), burst: burst, idle: idle, peers: map[peer.ID]*peerRate{}}
}

// Allow takes n tokens (at most a burst) for p; first reports whether this
// is p's first refusal since its pace was last forgotten.
func (r *PeerRates) Allow(p peer.ID, n int, now time.Time) (ok, first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.last) > r.idle {
		for id, e := range r.peers {
			if now.Sub(e.seen) > r.idle {
				delete(r.peers, id)
			}
		}
		r.last = now
	}
	e := r.peers[p]
	if e == nil {
		e = &peerRate{limit: rate.NewLimiter(r.perSecond, r.burst)}
		r.peers[p] = e
	}
	e.seen = now
	if e.limit.AllowN(now, min(n, r.burst)) {
		return true, false
	}
	first = !e.warned
	e.warned = true
	return false, first
}
