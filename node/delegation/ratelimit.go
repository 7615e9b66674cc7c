package delegation

import (
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// Requests on the task protocol are paced per peer: a member of the mesh
// (it holds the mesh key) that submits, queries or delivers as fast as it
// can gets the excess refused as unavailable, at the cost of one token
// check, and the peer's time goes to its honest peers. An honest
// coordinator stays far below: a request per task per call.
const (
	taskRequestsPerSecond = 200
	taskRequestsBurst     = 400
	// A peer's pace is forgotten after this long without a request.
	rateIdle = time.Minute
)

// peerRates paces the task-protocol requests of each peer.
type peerRates struct {
	mu    sync.Mutex
	peers map[peer.ID]*peerRate
	last  time.Time // of the last prune
}

type peerRate struct {
	limit  *rate.Limiter
	seen   time.Time
	warned bool // the excess was logged once
}

// allow takes a token for a request from p; first reports whether this is
// p's first refusal since its pace was last forgotten, to log it once.
func (r *peerRates) allow(p peer.ID, now time.Time) (ok, first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.peers == nil {
		r.peers = map[peer.ID]*peerRate{}
	}
	if now.Sub(r.last) > rateIdle {
		for id, e := range r.peers {
			if now.Sub(e.seen) > rateIdle {
				delete(r.peers, id)
			}
		}
		r.last = now
	}
	e := r.peers[p]
	if e == nil {
		e = &peerRate{limit: rate.NewLimiter(taskRequestsPerSecond, taskRequestsBurst)}
		r.peers[p] = e
	}
	e.seen = now
	if e.limit.AllowN(now, 1) {
		return true, false
	}
	first = !e.warned
	e.warned = true
	return false, first
}

// onceAPeer logs a kind of misbehaviour at warning level the first time
// each peer shows it, at debug level after that, so that a hostile peer
// cannot flood the log.
type onceAPeer struct {
	log  *slog.Logger
	mu   sync.Mutex
	seen map[peer.ID]bool
}

// maxWarnedPeers bounds what onceAPeer remembers: past it, it starts over
// (a peer may then be logged once more).
const maxWarnedPeers = 4096

func (o *onceAPeer) warn(p peer.ID, msg string, args ...any) {
	o.mu.Lock()
	first := !o.seen[p]
	if first {
		if o.seen == nil || len(o.seen) >= maxWarnedPeers {
			o.seen = map[peer.ID]bool{}
		}
		o.seen[p] = true
	}
	o.mu.Unlock()
	args = append(args, "peer", p)
	if first {
		o.log.Warn(msg, args...)
		return
	}
	o.log.Debug(msg, args...)
}
