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
// Await): a read of a block that is not here yet waits for the next store
// of blocks, then looks again, until Await says the block will not come.

// storeSignal is closed and replaced after every store of blocks, waking
// the readers that wait for a block.
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

// Stored returns a channel closed at the next store of blocks here.
func (s *Blockstore) Stored() <-chan struct{} { return s.signal.wait() }

// awaitingBlockstore is the blockstore as an export that may wait sees it.
type awaitingBlockstore struct {
	*Blockstore
	await func(ctx context.Context, c cid.Cid) error
}

func (a awaitingBlockstore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	for {
		b, err := a.Blockstore.Get(ctx, c)
		if !ipld.IsNotFound(err) {
			return b, err
		}
		if werr := a.await(ctx, c); werr != nil {
			return nil, werr
		}
	}
}

// awaiting is a view of s whose reads wait for missing blocks with await.
func (s *Store) awaiting(await func(ctx context.Context, c cid.Cid) error) *Store {
	bs := awaitingBlockstore{Blockstore: s.blocks, await: await}
	v := *s
	v.dags = merkledag.NewDAGService(blockservice.New(bs, offline.Exchange(bs)))
	return &v
}
