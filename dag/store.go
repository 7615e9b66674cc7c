package dag

import (
	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/boxo/blockservice"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	ipld "github.com/ipfs/go-ipld-format"
)

// Store is the dag package's view of a peer's badger store: its blocks,
// pins and import index.
type Store struct {
	db     *badger.DB
	blocks *Blockstore
	dags   ipld.DAGService // over the local blocks only
}

// NewStore uses db, which the caller opens and closes.
func NewStore(db *badger.DB) *Store {
	bs := NewBlockstore(db)
	return &Store{
		db:     db,
		blocks: bs,
		dags:   merkledag.NewDAGService(blockservice.New(bs, offline.Exchange(bs))),
	}
}

// PackDir is the directory of the packs that hold file chunks, beside the
// badger directory; "" for a store in memory.
func (s *Store) PackDir() string { return s.blocks.packDir() }

// Blocks is the blockstore, for the exchange that serves and fills it.
func (s *Store) Blocks() *Blockstore { return s.blocks }
