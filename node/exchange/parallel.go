package exchange

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// A file's leaves are fetched from every provider at once: the leaves are
// cut into segments of a few MiB, and each provider's streams take the
// next segment as they finish one, so a fast provider serves more of the
// file than a slow one. When no segment is left untaken, an idle stream
// takes a copy of the segment that has been in flight longest on another
// provider (the end game), so one slow provider does not hold up the end;
// the first copy to bring a leaf wins. A provider that sends a wrong block
// is not asked again in this fetch (as on bitswap), one that lacks a leaf
// or goes quiet is dropped, and its segment goes back to the queue.

// Parallel-fetch tuning.
const (
	segmentBytes       = 4 << 20 // leaves a stream asks for at once
	segmentMaxLeaves   = 256
	streamsPerProvider = 2 // a provider's next segment is asked while one streams
	providerProbe      = 5 * time.Second
	providerIdleMax    = 15 * time.Second // a provider silent this long is dropped
	reprobeEvery       = time.Second      // without a provider
	providerReprobe    = 5 * time.Second  // with some: for newcomers
)

// FileLeaves makes the inner nodes of the file root local, through the
// connected peers, and lists its leaves (dag.Store.FileLeaves). A root that
// is not here is first asked of every connected peer at once: when none
// has it for stall (0: the configured stall timeout), the error is
// ErrNotFound naming the peers asked.
func (e *Exchange) FileLeaves(ctx context.Context, root cid.Cid, stall time.Duration) ([]dag.FileLeaf, int64, error) {
	if stall <= 0 {
		stall = e.cfg.StallTimeout
	}
	call := e.begin(ctx, root, stall)
	defer call.end()
	if has, _ := e.dags.Blocks().Has(ctx, root); !has {
		if err := e.locate(call.ctx, root, stall, call.scope, call.touch); err != nil {
			return nil, 0, call.failed(err)
		}
		call.touch()
	}
	leaves, size, err := e.dags.FileLeaves(call.ctx, root, touching{call.sess, call.touch})
	if err != nil {
		return nil, 0, call.failed(err)
	}
	return leaves, size, nil
}

// locate asks the connected peers for root until one sends it (then
// stored), for at most stall; it keeps the call's stall watch quiet
// (touch), so that its own verdict, not_found, is the one heard.
func (e *Exchange) locate(ctx context.Context, root cid.Cid, stall time.Duration, scope *fetchScope, touch func()) error {
	deadline := time.Now().Add(stall)
	var asked []peer.ID
	for {
		touch()
		found, all := e.findProviders(ctx, root, scope, nil)
		asked = mergePeers(asked, all)
		if len(found) > 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no connected peer has %s (asked %d: %v): %w", root, len(asked), asked, errdefs.ErrNotFound)
		}
		select {
		case <-time.After(reprobeEvery):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// FetchLeaves fetches the leaves of the file root (listed by FileLeaves)
// from every connected peer that holds root, at once, and hands each
// verified block to deliver exactly once; deliver is called from several
// goroutines at a time, and must copy what it keeps of a block's bytes,
// which are reused once it returns. It returns the bytes of leaves each provider
// delivered. It fails when no leaf arrives for stall (0: the
// configured stall timeout), and with ErrNotFound, naming the peers asked,
// when no connected peer holds root for that long.
func (e *Exchange) FetchLeaves(ctx context.Context, root cid.Cid, leaves []dag.FileLeaf, stall time.Duration, deliver func(dag.FileLeaf, dag.VerifiedBlock) error) (map[peer.ID]int64, error) {
	if stall <= 0 {
		stall = e.cfg.StallTimeout
	}
	res := map[peer.ID]int64{}
	if len(leaves) == 0 {
		return res, nil
	}
	call := e.begin(ctx, root, stall)
	defer call.end()
	ctx = call.ctx
	sch := newSegments(leaves)
	var mu sync.Mutex // guards res while streams run
	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	idle := min(stall, providerIdleMax)
	serving := map[peer.ID]bool{} // providers with streams running
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var asked []peer.ID
	deadline := time.Now().Add(stall)
	reprobe := time.NewTicker(reprobeEvery)
	defer reprobe.Stop()
	lastProbe := time.Time{}
	for !sch.finished() {
		// Start streams on every provider not serving yet: at the start,
		// when every provider has gone, and now and then for peers that
		// connected meanwhile.
		if sch.providers() == 0 || time.Since(lastProbe) >= providerReprobe {
			lastProbe = time.Now()
			if sch.providers() == 0 {
				for p := range serving {
					if !call.scope.isBad(p) {
						delete(serving, p) // dropped for a stall: it may serve again
					}
				}
			}
			found, all := e.findProviders(ctx, root, call.scope, serving)
			asked = mergePeers(asked, all)
			if len(found) > 0 {
				deadline = time.Now().Add(stall)
			}
			for _, p := range found {
				serving[p] = true
				sch.providerCame()
				var count atomic.Int64
				var running atomic.Int32
				running.Store(streamsPerProvider)
				for range streamsPerProvider {
					wg.Go(func() {
						err := e.serveSegments(ctx, p, sch, idle, call.touch, deliver, &count)
						if running.Add(-1) == 0 {
							mu.Lock()
							if n := count.Load(); n > 0 {
								res[p] += n
							}
							mu.Unlock()
							sch.providerGone()
						}
						switch {
						case err == nil, ctx.Err() != nil:
						case errors.Is(err, errDeliver):
							fail(err)
						case errors.Is(err, errdefs.ErrInvalid):
							call.scope.markBad(ctx, p, err.Error())
						default:
							e.log.Debug("leaves: provider dropped for this fetch", "peer", p, "root", root, "err", err)
						}
					})
				}
			}
			if sch.providers() == 0 && time.Now().After(deadline) {
				cancel()
				wg.Wait()
				return res, fmt.Errorf("no connected peer has %s (asked %d: %v): %w", root, len(asked), asked, errdefs.ErrNotFound)
			}
		}
		select {
		case <-sch.done:
		case err := <-failed:
			cancel()
			wg.Wait()
			return res, err
		case <-ctx.Done():
			wg.Wait()
			return res, call.failed(ctx.Err())
		case <-sch.gone:
		case <-reprobe.C:
		}
	}
	cancel()
	wg.Wait()
	select {
	case err := <-failed: // a delivery that failed as the last leaves came
		return res, err
	default:
	}
	return res, nil
}

// errDeliver marks a failure of the caller's deliver (a full disk): it
// ends the fetch rather than moving to another provider.
var errDeliver = errors.New("deliver")

// serveSegments runs one stream's loop on provider p: take a segment,
// fetch its leaves not yet delivered, until none is left or p fails.
func (e *Exchange) serveSegments(ctx context.Context, p peer.ID, sch *segments, idle time.Duration, touch func(), deliver func(dag.FileLeaf, dag.VerifiedBlock) error, count *atomic.Int64) error {
	for {
		seg, ok := sch.take(ctx, p)
		if !ok {
			return nil
		}
		idx := sch.pending(seg)
		if len(idx) == 0 {
			sch.release(seg, p, true)
			continue
		}
		keys := make([]cid.Cid, len(idx))
		for i, j := range idx {
			keys[i] = sch.leaves[j].Cid
		}
		_, err := e.fetchLeavesFrom(ctx, p, keys, idle, func(i int, b dag.VerifiedBlock) error {
			touch()
			l := sch.leaves[idx[i]]
			if !sch.claim(idx[i]) {
				return nil // another copy of the segment brought it first
			}
			err := deliver(l, b)
			sch.delivered(idx[i], err == nil)
			if err != nil {
				return fmt.Errorf("%w: %w", errDeliver, err)
			}
			count.Add(l.Size)
			return nil
		}, func(int) { touch() }, func() bool { return sch.allCame(seg) })
		sch.release(seg, p, err == nil)
		if err != nil {
			return err
		}
	}
}

// segments is the work queue of a FetchLeaves.
type segments struct {
	leaves  []dag.FileLeaf
	bounds  []int         // segment i is leaves[bounds[i]:bounds[i+1]]
	got     []atomic.Bool // delivered
	claimed []atomic.Bool // taken for delivery by one copy of its segment

	mu       sync.Mutex
	next     int               // the first segment never taken
	requeued []int             // segments given back unfinished
	holders  map[int][]peer.ID // segments in flight
	since    map[int]time.Time // when each was first taken
	complete []bool            // segments whose leaves all came
	nDone    int               // how many
	nprov    int               // providers with streams running
	wake     chan struct{}     // closed and replaced at each change
	done     chan struct{}     // closed when every leaf came
	doneOnce sync.Once
	gone     chan struct{} // a provider's streams all ended
}

func newSegments(leaves []dag.FileLeaf) *segments {
	s := &segments{leaves: leaves, got: make([]atomic.Bool, len(leaves)), claimed: make([]atomic.Bool, len(leaves)), holders: map[int][]peer.ID{},
		since: map[int]time.Time{}, wake: make(chan struct{}), done: make(chan struct{}), gone: make(chan struct{}, 1)}
	s.bounds = append(s.bounds, 0)
	var bytes int64
	for i, l := range leaves {
		if i > s.bounds[len(s.bounds)-1] && (bytes+l.Size > segmentBytes || i-s.bounds[len(s.bounds)-1] >= segmentMaxLeaves) {
			s.bounds = append(s.bounds, i)
			bytes = 0
		}
		bytes += l.Size
	}
	s.bounds = append(s.bounds, len(leaves))
	s.complete = make([]bool, s.count())
	return s
}

func (s *segments) count() int { return len(s.bounds) - 1 }

// changedLocked wakes whoever waits for a change.
func (s *segments) changedLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *segments) finished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nDone == s.count()
}

func (s *segments) providers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nprov
}

func (s *segments) providerCame() {
	s.mu.Lock()
	s.nprov++
	s.mu.Unlock()
}

// providerGone is called once a provider's last stream has ended.
func (s *segments) providerGone() {
	s.mu.Lock()
	s.nprov--
	s.changedLocked()
	s.mu.Unlock()
	select {
	case s.gone <- struct{}{}:
	default:
	}
}

// pending lists the leaves of segment seg that have not come yet.
func (s *segments) pending(seg int) []int {
	var out []int
	for i := s.bounds[seg]; i < s.bounds[seg+1]; i++ {
		if !s.got[i].Load() {
			out = append(out, i)
		}
	}
	return out
}

// allCame reports whether every leaf of segment seg was delivered.
func (s *segments) allCame(seg int) bool {
	for i := s.bounds[seg]; i < s.bounds[seg+1]; i++ {
		if !s.got[i].Load() {
			return false
		}
	}
	return true
}

// claim takes leaf i for delivery, reporting false when another copy of
// its segment took it first.
func (s *segments) claim(i int) bool { return s.claimed[i].CompareAndSwap(false, true) }

// delivered marks leaf i as delivered, or gives it back when its delivery
// failed.
func (s *segments) delivered(i int, ok bool) {
	if ok {
		s.got[i].Store(true)
	} else {
		s.claimed[i].Store(false)
	}
}

// take gives provider p a segment to fetch: a new one, one given back, or
// in the end game a copy of the one in flight longest on another
// provider. It waits while every segment is in flight on p or already
// held twice, and reports false when every leaf came or ctx ended.
func (s *segments) take(ctx context.Context, p peer.ID) (int, bool) {
	for {
		s.mu.Lock()
		if s.nDone == s.count() {
			s.mu.Unlock()
			return 0, false
		}
		seg := -1
		switch {
		case len(s.requeued) > 0:
			seg = s.requeued[0]
			s.requeued = s.requeued[1:]
		case s.next < s.count():
			seg = s.next
			s.next++
		default:
			var oldest time.Time
			for c, hs := range s.holders {
				if len(hs) != 1 || slices.Contains(hs, p) {
					continue
				}
				if seg < 0 || s.since[c].Before(oldest) {
					seg, oldest = c, s.since[c]
				}
			}
		}
		if seg >= 0 {
			if len(s.holders[seg]) == 0 {
				s.since[seg] = time.Now()
			}
			s.holders[seg] = append(s.holders[seg], p)
			s.mu.Unlock()
			return seg, true
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, false
		}
	}
}

// release ends p's hold on seg: finished when its fetch ended well (every
// leaf asked came, from p or from the other copy); otherwise the segment
// goes back to the queue when nobody else holds it.
func (s *segments) release(seg int, p peer.ID, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.holders[seg]
	if i := slices.Index(hs, p); i >= 0 {
		hs = slices.Delete(hs, i, i+1)
	}
	if len(hs) == 0 {
		delete(s.holders, seg)
		delete(s.since, seg)
	} else {
		s.holders[seg] = hs
	}
	complete := s.allCame(seg)
	switch {
	case complete && !s.complete[seg]:
		s.complete[seg] = true
		s.nDone++
		if s.nDone == s.count() {
			s.doneOnce.Do(func() { close(s.done) })
		}
	case !complete && !ok && len(hs) == 0:
		s.requeued = append(s.requeued, seg)
	}
	s.changedLocked()
}

// findProviders asks every connected peer that is neither bad for this
// fetch nor serving it already whether it holds root, at once, and returns
// those that do, and every peer asked.
func (e *Exchange) findProviders(ctx context.Context, root cid.Cid, scope *fetchScope, serving map[peer.ID]bool) (found, asked []peer.ID) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range e.host.Connected() {
		if serving[p] || scope.isBad(p) {
			continue
		}
		asked = append(asked, p)
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, providerProbe)
			defer cancel()
			n, err := e.fetchLeavesFrom(pctx, p, []cid.Cid{root}, providerProbe, func(_ int, b dag.VerifiedBlock) error {
				if has, _ := e.dags.Blocks().Has(ctx, root); !has {
					return e.dags.Blocks().PutVerified([]dag.VerifiedBlock{b})
				}
				return nil
			}, func(int) {}, nil)
			if n == 1 && err == nil {
				mu.Lock()
				found = append(found, p)
				mu.Unlock()
			} else if errors.Is(err, errdefs.ErrInvalid) {
				scope.markBad(ctx, p, err.Error())
			}
		})
	}
	wg.Wait()
	return found, asked
}

func mergePeers(a, b []peer.ID) []peer.ID {
	for _, p := range b {
		if !slices.Contains(a, p) {
			a = append(a, p)
		}
	}
	return a
}

// throttled paces writes to limit's rate (nil: unpaced): the serving
// side's bandwidth cap.
type throttled struct {
	ctx   context.Context
	w     io.Writer
	limit *rate.Limiter
}

func (t throttled) Write(p []byte) (int, error) {
	if t.limit == nil {
		return t.w.Write(p)
	}
	written := 0
	for len(p) > 0 {
		n := min(len(p), t.limit.Burst())
		if err := t.limit.WaitN(t.ctx, n); err != nil {
			return written, err
		}
		k, err := t.w.Write(p[:n])
		written += k
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}
