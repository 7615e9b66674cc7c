package dag

import (
	"context"
	"sync"

	"github.com/ipfs/boxo/blockservice"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// An export can run while its blocks are still arriving (ExportOptions.
// Await): a read of a block that is not here yet waits for the next arrival
// of blocks, then looks again, until Await says the block will not come.
//
// While such an export runs, blocks that arrive from outside are handed to
// it as soon as they are verified (see inFlight), not read back from badger
// after their batch is stored: reading back cost about as much CPU as
// storing, and the export waited for whole batches.

// storeSignal is closed and replaced after every arrival of blocks (handed
// over or stored), waking the readers that wait for a block.
type storeSignal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *storeSignal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *storeSignal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// inFlightCap bounds the bytes of verified blocks kept for waiting exports.
// Past it, blocks are not kept and the exports read them from the store.
const inFlightCap = 32 << 20

// inFlight keeps verified blocks from outside between their receipt and
// their read by a waiting export, while at least one such export runs. A
// block is taken by the first read; a second read of the same block (a
// file that appears twice in a tree) finds it in the store.
type inFlight struct {
	mu      sync.Mutex
	readers int               // exports that wait for blocks
	blocks  map[string][]byte // by multihash
	bytes   int
}

// join and leave count the waiting exports; the kept blocks go when the
// last one leaves.
func (f *inFlight) join() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readers++
}

func (f *inFlight) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readers--; f.readers == 0 {
		f.blocks, f.bytes = nil, 0
	}
}

// keep keeps b if an export waits and there is room, and reports whether it
// did.
func (f *inFlight) keep(b blocks.Block) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	data := b.RawData()
	if f.readers == 0 || f.bytes+len(data) > inFlightCap {
		return false
	}
	k := string(b.Cid().Hash())
	if _, ok := f.blocks[k]; ok {
		return false
	}
	if f.blocks == nil {
		f.blocks = map[string][]byte{}
	}
	f.blocks[k] = data
	f.bytes += len(data)
	return true
}

func (f *inFlight) take(c cid.Cid) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := string(c.Hash())
	data, ok := f.blocks[k]
	if ok {
		delete(f.blocks, k)
		f.bytes -= len(data)
	}
	return data, ok
}

// handOver offers verified blocks from outside to the waiting exports,
// before they are stored, and wakes those exports if any was kept.
func (s *Blockstore) handOver(bs ...blocks.Block) {
	kept := false
	for _, b := range bs {
		kept = s.flight.keep(b) || kept
	}
	if kept {
		s.signal.fire()
	}
}

// awaitingBlockstore is the blockstore as an export that may wait sees it.
type awaitingBlockstore struct {
	*Blockstore
	await func(ctx context.Context, c cid.Cid, arrived <-chan struct{}) error
}

func (a awaitingBlockstore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	for {
		arrived := a.signal.wait() // before the looks: no arrival is missed
		if data, ok := a.flight.take(c); ok {
			return blocks.NewBlockWithCid(data, c)
		}
		b, err := a.Blockstore.Get(ctx, c)
		if !ipld.IsNotFound(err) {
			return b, err
		}
		if werr := a.await(ctx, c, arrived); werr != nil {
			return nil, werr
		}
	}
}

// awaiting is a view of s whose reads wait for missing blocks with await;
// release ends the view's claim on blocks in flight.
func (s *Store) awaiting(await func(ctx context.Context, c cid.Cid, arrived <-chan struct{}) error) (view *Store, release func()) {
	s.blocks.flight.join()
	bs := awaitingBlockstore{Blockstore: s.blocks, await: await}
	v := *s
	v.dags = merkledag.NewDAGService(blockservice.New(bs, offline.Exchange(bs)))
	var once sync.Once
	return &v, func() { once.Do(s.blocks.flight.leave) }
}
