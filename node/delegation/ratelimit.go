package delegation

import (
	"time"
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
