// Package exchange moves blocks between peers: it serves this peer's blocks
// to the mesh and fetches missing ones, over bitswap and over the bulk CAR
// stream (/cortex/blocks), with a guard that stops a fetch from asking a
// peer that served it bad blocks. It knows the peer only through the libp2p
// host and the block store it is given; it must not import node.
package exchange

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/boxo/bitswap"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"golang.org/x/time/rate"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// DefaultStallTimeout ends a fetch when no block arrived for this long.
const DefaultStallTimeout = 60 * time.Second

// Bitswap tuning for a small mesh.
const (
	bitswapRebroadcast      = time.Second
	bitswapOutstandingBytes = 32 << 20
	bitswapMessageSize      = 1 << 20
	bitswapWorkers          = 16
	bitswapMaxWants         = 1 << 16
)

// Config configures the exchange.
type Config struct {
	// StallTimeout ends a fetch when no block arrived for this long; a
	// fetch may ask for another.
	StallTimeout time.Duration
	// ServeBytesPerSecond caps the rate at which this peer serves blocks
	// on the bulk and leaves streams, all requesters together (0: no cap).
	ServeBytesPerSecond int64
}

// DefaultConfig is the exchange's default configuration.
func DefaultConfig() Config { return Config{StallTimeout: DefaultStallTimeout} }

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.StallTimeout <= 0 {
		return fmt.Errorf("exchange: stall timeout must be positive: %w", errdefs.ErrInvalid)
	}
	if c.ServeBytesPerSecond < 0 {
		return fmt.Errorf("exchange: serve bytes per second %d: %w", c.ServeBytesPerSecond, errdefs.ErrInvalid)
	}
	return nil
}

// Host is what the exchange uses of the peer's libp2p host.
type Host interface {
	Libp2p() host.Host
	Connected() []peer.ID
}

// Exchange serves this peer's blocks to the mesh and fetches missing ones.
type Exchange struct {
	cfg  Config
	host Host
	dags *dag.Store
	log  *slog.Logger

	bs    *bitswap.Bitswap
	guard *peerGuard // between bs and the network: per-fetch bad peers
	// serveLimit paces the bulk and leaves streams served (nil: unpaced).
	serveLimit *rate.Limiter

	// ctx ends at Close: bulk exports in flight watch it.
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	err    error
}

// New starts bitswap on h over dags and serves the bulk protocol. Close
// stops both.
func New(cfg Config, h Host, dags *dag.Store, log *slog.Logger) (*Exchange, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	guard := newPeerGuard(bsnet.NewFromIpfsHost(h.Libp2p()), dags.Blocks(), h.Connected, log)
	// No content routing: wants go to the connected peers of the mesh. A
	// mesh is small, so a want nobody answered is re-sent after a second,
	// not boxo's minute; larger messages and queues keep a bulk fetch of
	// many small blocks from crawling.
	bs := bitswap.New(ctx, guard, nil, dags.Blocks(),
		bitswap.RebroadcastDelay(bitswapRebroadcast),
		bitswap.ProviderSearchDelay(bitswapRebroadcast),
		bitswap.MaxOutstandingBytesPerPeer(bitswapOutstandingBytes),
		bitswap.WithTargetMessageSize(bitswapMessageSize),
		bitswap.EngineBlockstoreWorkerCount(bitswapWorkers),
		bitswap.TaskWorkerCount(bitswapWorkers),
		// boxo drops wants beyond 1024 per peer by default, and a dropped
		// want waits for a rebroadcast: a pipelined fetch keeps more
		// outstanding than that.
		bitswap.MaxQueuedWantlistEntriesPerPeer(bitswapMaxWants),
	)
	e := &Exchange{cfg: cfg, host: h, dags: dags, log: log, bs: bs, guard: guard, ctx: ctx, cancel: cancel}
	if cfg.ServeBytesPerSecond > 0 {
		e.serveLimit = rate.NewLimiter(rate.Limit(cfg.ServeBytesPerSecond), int(min(cfg.ServeBytesPerSecond, 256<<10)))
	}
	// Registered here rather than in a Serve loop: a peer that sees this
	// one's heartbeat may ask for blocks at once.
	h.Libp2p().SetStreamHandler(libp2pproto.ID(protocol.BlocksProtocol), e.serveBlocks)
	h.Libp2p().SetStreamHandler(libp2pproto.ID(protocol.LeavesProtocol), e.serveLeaves)
	return e, nil
}

// Close stops serving and fetching. Safe to call twice.
func (e *Exchange) Close() error {
	e.once.Do(func() {
		e.host.Libp2p().RemoveStreamHandler(libp2pproto.ID(protocol.BlocksProtocol))
		e.host.Libp2p().RemoveStreamHandler(libp2pproto.ID(protocol.LeavesProtocol))
		e.err = e.bs.Close()
		e.cancel()
	})
	return e.err
}

// Fetch makes root local, failing when no block arrives for stall (0: the
// configured stall timeout). A peer that serves a block failing
// verification (on either path) is not asked again in this fetch; when no
// other connected peer is left, the fetch fails with ErrUntrustedPeers
// naming it.
func (e *Exchange) Fetch(ctx context.Context, root cid.Cid, stall time.Duration, progress func(dag.FetchProgress)) (dag.FetchProgress, error) {
	return e.FetchAgainst(ctx, cid.Undef, root, stall, progress)
}

// FetchAgainst is Fetch of a root that shares most of its tree with base,
// complete here (see dag.Store.FetchAgainst): only the changed part is
// walked and asked for. An undefined base is a plain fetch.
func (e *Exchange) FetchAgainst(ctx context.Context, base, root cid.Cid, stall time.Duration, progress func(dag.FetchProgress)) (dag.FetchProgress, error) {
	call := e.begin(ctx, root, stall)
	defer call.end()
	ctx, scope, touch, sess := call.ctx, call.scope, call.touch, call.sess
	// A tree this peer lacks entirely comes faster as one stream from a
	// peer that has it; bitswap then fetches whatever is still missing.
	var bulk dag.FetchProgress
	var full error // the store refused the stream's blocks
	stream := func(base cid.Cid) {
		blocks, err := e.fetchBulk(ctx, base, root, scope, func(b int) {
			touch()
			bulk.FetchedBytes += int64(b)
			if progress != nil {
				progress(bulk)
			}
		})
		bulk.Fetched += blocks
		if storeFull(err) {
			full = err
			return
		}
		if err != nil && ctx.Err() == nil {
			e.log.Debug("bulk fetch unavailable; using bitswap", "root", root, "base", base, "err", err)
		}
	}
	has, _ := e.dags.Blocks().Has(ctx, root)
	switch {
	case has:
	case base.Defined() && e.dags.Complete(base):
		// What changed since base, in one round trip rather than one a
		// level of the tree.
		stream(base)
	default:
		if err := e.dags.FetchOne(ctx, root, sess); err == nil {
			bulk.Fetched++
			if size, err := e.dags.Blocks().GetSize(ctx, root); err == nil {
				bulk.FetchedBytes += int64(size)
			}
			touch()
		}
		if e.lacksMostOf(ctx, root) {
			// The stream carries the root again: count it there, once.
			bulk = dag.FetchProgress{}
			stream(cid.Undef)
		}
	}
	if full != nil {
		return bulk, fmt.Errorf("fetch %s: %w", root, full)
	}
	p, err := e.dags.FetchAgainst(ctx, base, root, sess, func(p dag.FetchProgress) {
		touch()
		p.Fetched += bulk.Fetched
		p.FetchedBytes += bulk.FetchedBytes
		if progress != nil {
			progress(p)
		}
	})
	p.Fetched += bulk.Fetched
	p.FetchedBytes += bulk.FetchedBytes
	// A walk that found root complete (the bulk stream brought the whole
	// DAG) counted no block: the DAG is at least what came.
	p.Blocks = max(p.Blocks, p.Fetched)
	if err != nil {
		return p, call.failed(err)
	}
	return p, nil
}

// watchStall cancels ctx (through cancel) when touch was not called for
// stall (0: the configured stall timeout), with the guard's verdict when it
// has one (a peer that served bad blocks); stop ends the watch.
func (e *Exchange) watchStall(ctx context.Context, root cid.Cid, stall time.Duration, scope *fetchScope, cancel context.CancelCauseFunc) (touch, stop func()) {
	if stall <= 0 {
		stall = e.cfg.StallTimeout
	}
	var mu sync.Mutex
	last := time.Now()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(stall / 10)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				mu.Lock()
				idle := time.Since(last)
				mu.Unlock()
				if idle > stall {
					if err := scope.err(); err != nil {
						cancel(err)
						return
					}
					cancel(fmt.Errorf("no block of %s arrived for %s: is a peer that holds it connected? %w", root, stall, errdefs.ErrUnavailable))
					return
				}
			}
		}
	}()
	touch = func() {
		mu.Lock()
		last = time.Now()
		mu.Unlock()
	}
	var once sync.Once
	return touch, func() { once.Do(func() { close(done) }) }
}

// FetchRange makes local the blocks that hold bytes [off, off+n) of the
// file root, and the nodes above them (see dag.Store.FetchRange), from the
// connected peers, every block verified; a peer that serves a bad one is
// not asked again in this call. It fails when no block arrives for stall
// (0: the configured stall timeout).
func (e *Exchange) FetchRange(ctx context.Context, root cid.Cid, off, n int64, stall time.Duration) error {
	call := e.begin(ctx, root, stall)
	defer call.end()
	if err := e.dags.FetchRange(call.ctx, root, off, n, touching{call.sess, call.touch}); err != nil {
		return call.failed(err)
	}
	return nil
}

// fetchCall is one fetch of root: a context cancelled by a stall or by the
// guard (a peer that served bad blocks), the guard's scope, the stall
// watch's touch, and a bitswap session under both.
type fetchCall struct {
	ctx   context.Context
	scope *fetchScope
	touch func()
	sess  dag.Fetcher
	end   func()
}

// begin starts a fetch of root that fails when no block arrives for stall
// (0: the configured stall timeout); end it with end.
func (e *Exchange) begin(ctx context.Context, root cid.Cid, stall time.Duration) *fetchCall {
	ctx, cancel := context.WithCancelCause(ctx)
	scope := e.guard.begin(root, cancel)
	touch, stop := e.watchStall(ctx, root, stall, scope, cancel)
	return &fetchCall{ctx: ctx, scope: scope, touch: touch, sess: scope.fetcher(e.bs.NewSession(ctx)),
		end: func() { stop(); scope.end(); cancel(nil) }}
}

// failed says why the fetch failed with err: the stall or the guard's
// verdict when either ended it, which says more than what it broke.
func (c *fetchCall) failed(err error) error {
	if cause := context.Cause(c.ctx); cause != nil && c.ctx.Err() != nil {
		return cause
	}
	if berr := c.scope.err(); berr != nil {
		return fmt.Errorf("%w (then: %v)", berr, err)
	}
	return err
}

// touching calls touch at every block its fetcher delivers.
type touching struct {
	f     dag.Fetcher
	touch func()
}

func (t touching) GetBlocks(ctx context.Context, keys []cid.Cid) (<-chan blocks.Block, error) {
	in, err := t.f.GetBlocks(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make(chan blocks.Block)
	go func() {
		defer close(out)
		for b := range in {
			t.touch()
			select {
			case out <- b:
			case <-ctx.Done():
				for range in { // drain: the session closes it when ctx ends
				}
				return
			}
		}
	}()
	return out, nil
}

// FetchAll makes every root local, each fetch failing when no block
// arrives for stall (0: the configured stall timeout), and sums what came
// over the mesh.
func (e *Exchange) FetchAll(ctx context.Context, stall time.Duration, roots ...cid.Cid) (dag.FetchProgress, error) {
	var sum dag.FetchProgress
	for _, root := range roots {
		p, err := e.Fetch(ctx, root, stall, nil)
		if err != nil {
			return sum, err
		}
		sum.Blocks += p.Blocks
		sum.Fetched += p.Fetched
		sum.FetchedBytes += p.FetchedBytes
	}
	return sum, nil
}

// lacksMostOf reports whether this peer holds less than half of the tree
// at root (which must be local), judged by the root's direct children. A
// delta (a few changed paths) goes to bitswap instead.
func (e *Exchange) lacksMostOf(ctx context.Context, root cid.Cid) bool {
	present, total, err := e.dags.Coverage(ctx, root)
	return err == nil && total > 0 && 2*present < total
}

// CountHeld is how many of the blocks named (raw CIDs) this peer holds, for
// a block probe; a malformed CID is an error.
func (e *Exchange) CountHeld(ctx context.Context, raw [][]byte) (int, error) {
	have := 0
	for _, b := range raw {
		c, err := cid.Cast(b)
		if err != nil {
			return 0, fmt.Errorf("probe: %v: %w", err, errdefs.ErrInvalid)
		}
		if ok, err := e.dags.Blocks().Has(ctx, c); err == nil && ok {
			have++
		}
	}
	return have, nil
}

// Sample picks up to n blocks of root, for a block probe.
func (e *Exchange) Sample(ctx context.Context, root cid.Cid, n int) ([]cid.Cid, error) {
	return e.dags.Sample(ctx, root, n)
}
