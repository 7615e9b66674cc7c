package dag

import (
	"log/slog"

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
	log    *slog.Logger
}

// Option configures a Store.
type Option func(*Store)

// WithLogger logs what the store does on its own (removing the scratch
// files of interrupted merges and exports) to log; by default nowhere.
func WithLogger(log *slog.Logger) Option { return func(s *Store) { s.log = log } }

// NewStore uses db, which the caller opens and closes.
func NewStore(db *badger.DB, opts ...Option) *Store {
	bs := NewBlockstore(db)
	s := &Store{
		db:     db,
		blocks: bs,
		dags:   merkledag.NewDAGService(blockservice.New(bs, offline.Exchange(bs))),
		log:    slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// PackDir is the directory of the packs that hold file chunks, beside the
// badger directory; "" for a store in memory.
func (s *Store) PackDir() string { return s.blocks.packDir() }

// Blocks is the blockstore, for the exchange that serves and fills it.
func (s *Store) Blocks() *Blockstore { return s.blocks }
