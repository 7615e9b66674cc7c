package delegation

import (
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
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
