package dag

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// MaxBlockSize is the largest block accepted from anywhere (wire, CAR,
// import). Chunks are at most 1 MiB, so 2 MiB leaves room for dag-pb nodes.
const MaxBlockSize = 2 << 20

// Key prefixes of the dag package in the shared badger store.
var (
	blockPrefix = []byte("dag/b/") // + multihash -> block bytes
	pinPrefix   = []byte("dag/p/") // + cid bytes -> pin name
)

// emptySHA256 is the multihash of zero bytes: a block with this digest is
// known without storage or transfer. It matters because boxo's bitswap
// server answers a want for a zero-length block with HAVE and never sends
// it, so a fetch of any tree with an empty file would otherwise hang.
var emptySHA256 = func() mh.Multihash {
	d := sha256.Sum256(nil)
	m, _ := mh.Encode(d[:], mh.SHA2_256)
	return m
}()

// Blockstore keeps blocks in badger, keyed by multihash, and implements
// boxo's blockstore.Blockstore so bitswap can serve and fill it. Identity
// CIDs and the empty block are answered without storage.
type Blockstore struct {
	// room, when set, refuses a write of need bytes the disk has no room
	// for (SetRoomCheck).
	room     func(need int64) error
	db       *badger.DB
	appender *packAppender
	signal   *storeSignal // fired after each arrival, for readers that wait
	flight   *inFlight    // blocks handed to waiting readers before their store
	packs    *packFiles   // packs open for reading
}

// NewBlockstore uses db, which the caller opens and closes.
func NewBlockstore(db *badger.DB) *Blockstore {
	return &Blockstore{db: db, appender: &packAppender{}, signal: &storeSignal{}, flight: &inFlight{}, packs: &packFiles{}}
}

func blockKey(h mh.Multihash) []byte {
	return append(append(make([]byte, 0, len(blockPrefix)+len(h)), blockPrefix...), h...)
}

// inline returns the data of blocks that need no storage: identity CIDs
// carry their data, and the empty block is known.
func inline(c cid.Cid) ([]byte, bool) {
	h := c.Hash()
	if bytes.Equal(h, emptySHA256) {
		return []byte{}, true
	}
	dec, err := mh.Decode(h)
	if err == nil && dec.Code == mh.IDENTITY {
		return dec.Digest, true
	}
	return nil, false
}

// Has reports whether the block is present.
func (s *Blockstore) Has(_ context.Context, c cid.Cid) (bool, error) {
	if _, ok := inline(c); ok {
		return true, nil
	}
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(blockKey(c.Hash()))
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("has %s: %w", c, err)
	}
	return true, nil
}

// Get returns the block; a missing one is ipld.ErrNotFound (which bitswap
// and merkledag expect) wrapping errdefs.ErrNotFound.
func (s *Blockstore) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	data, err := s.ReadInto(c, nil)
	if err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(data, c)
}

// ReadInto returns the bytes of block c, read into buf when it is large
// enough (the result then shares buf's memory), checked as Get checks
// them: for a caller that serves many blocks and reuses one buffer.
func (s *Blockstore) ReadInto(c cid.Cid, buf []byte) ([]byte, error) {
	if data, ok := inline(c); ok {
		return data, nil
	}
	var data []byte
	var packed bool
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(blockKey(c.Hash()))
		if err != nil {
			return err
		}
		packed = it.UserMeta() == packMeta
		if packed {
			data, err = it.ValueCopy(nil) // the reference: a few bytes
		} else {
			data, err = it.ValueCopy(buf[:0])
		}
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, notFound(c)
	}
	if err != nil {
		return nil, fmt.Errorf("get block %s: %w", c, err)
	}
	if packed {
		r, err := decodePackRef(data)
		if err == nil {
			data, err = s.readRefCheckedInto(c, r, buf)
		}
		if err != nil {
			// A damaged or missing pack: the block is not here.
			return nil, fmt.Errorf("%w: %v", notFound(c), err)
		}
	}
	return data, nil
}

// notFoundError is both ipld.ErrNotFound (for boxo) and errdefs.ErrNotFound.
type notFoundError struct{ ipld.ErrNotFound }

func (e notFoundError) Unwrap() []error { return []error{e.ErrNotFound, errdefs.ErrNotFound} }

func notFound(c cid.Cid) error { return notFoundError{ipld.ErrNotFound{Cid: c}} }

// GetSize returns the size of the block's data.
func (s *Blockstore) GetSize(_ context.Context, c cid.Cid) (int, error) {
	if data, ok := inline(c); ok {
		return len(data), nil
	}
	var size int
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(blockKey(c.Hash()))
		if err != nil {
			return err
		}
		if it.UserMeta() == packMeta {
			return it.Value(func(v []byte) error {
				r, err := decodePackRef(v)
				size = r.length
				return err
			})
		}
		size = int(it.ValueSize())
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return -1, notFound(c)
	}
	if err != nil {
		return -1, fmt.Errorf("size of %s: %w", c, err)
	}
	return size, nil
}

// VerifyBlock checks a block from outside: size cap and hash.
func VerifyBlock(b blocks.Block) error {
	if len(b.RawData()) > MaxBlockSize {
		return fmt.Errorf("block %s: %d bytes over the cap of %d: %w", b.Cid(), len(b.RawData()), MaxBlockSize, errdefs.ErrInvalid)
	}
	if pre := b.Cid().Prefix(); pre.MhType == mh.SHA2_256 && (pre.MhLength == -1 || pre.MhLength == sha256.Size) {
		// The common case, hashed a slice at a time: one call over a MiB
		// in assembly cannot be preempted, and the garbage collector
		// spins on every core while it waits for it.
		dec, err := mh.Decode(b.Cid().Hash())
		if err != nil {
			return fmt.Errorf("block %s: %v: %w", b.Cid(), err, errdefs.ErrInvalid)
		}
		h := sha256.New()
		for data := b.RawData(); len(data) > 0; {
			n := min(len(data), hashSlice)
			h.Write(data[:n])
			data = data[n:]
		}
		if !bytes.Equal(h.Sum(nil), dec.Digest) {
			return fmt.Errorf("block %s: data does not hash to it: %w", b.Cid(), errdefs.ErrInvalid)
		}
		return nil
	}
	got, err := b.Cid().Prefix().Sum(b.RawData())
	if err != nil {
		return fmt.Errorf("block %s: %v: %w", b.Cid(), err, errdefs.ErrInvalid)
	}
	if !got.Equals(b.Cid()) {
		return fmt.Errorf("block %s: data hashes to %s: %w", b.Cid(), got, errdefs.ErrInvalid)
	}
	return nil
}

// hashSlice is how much of a block is hashed between chances to preempt.
const hashSlice = 64 << 10

// Put verifies and stores a block from outside (bitswap, CAR).
func (s *Blockstore) Put(ctx context.Context, b blocks.Block) error {
	return s.PutMany(ctx, []blocks.Block{b})
}

// PutMany verifies and stores blocks in one batch.
func (s *Blockstore) PutMany(_ context.Context, bs []blocks.Block) error {
	for _, b := range bs {
		if err := VerifyBlock(b); err != nil {
			return err
		}
	}
	s.handOver(bs...)
	return s.putTrusted(bs)
}

// SetRoomCheck makes every write of blocks (put, import, fetch) first ask
// room whether the disk has space for need more bytes; its error refuses
// the write. The store's owner keeps space free this way for the
// database's own writes, which it cannot survive failing (badger writes
// through memory maps: a full disk is a SIGBUS). Call it before use.
func (s *Blockstore) SetRoomCheck(room func(need int64) error) { s.room = room }

func (s *Blockstore) checkRoom(need int64) error {
	if s.room == nil {
		return nil
	}
	return s.room(need)
}

// VerifiedBlock is a block whose bytes were checked against its CID; only
// Verify makes one, so a store of one need not hash it again.
type VerifiedBlock struct{ b blocks.Block }

// Verify checks b (VerifyBlock) and returns it as verified.
func Verify(b blocks.Block) (VerifiedBlock, error) {
	if err := VerifyBlock(b); err != nil {
		return VerifiedBlock{}, err
	}
	return VerifiedBlock{b}, nil
}

// Block is the verified block.
func (v VerifiedBlock) Block() blocks.Block { return v.b }

// Copy is the block with its bytes copied into buf (grown if short), for
// a caller that keeps it past the life of the bytes it came in.
func (v VerifiedBlock) Copy(buf []byte) VerifiedBlock {
	data := append(buf[:0], v.b.RawData()...)
	b, _ := blocks.NewBlockWithCid(data, v.b.Cid()) // verified already
	return VerifiedBlock{b}
}

// PutVerified stores blocks verified on receipt, in one batch. Unlike Put
// it hands nothing to waiting exports (they read the store), so the
// blocks' bytes are the caller's again once it returns.
func (s *Blockstore) PutVerified(vs []VerifiedBlock) error {
	bs := make([]blocks.Block, len(vs))
	for i, v := range vs {
		bs[i] = v.b
	}
	return s.putTrusted(bs)
}

// putTrusted stores blocks whose CIDs this process computed itself.
func (s *Blockstore) putTrusted(bs []blocks.Block) error {
	var need int64
	for _, b := range bs {
		need += int64(len(b.RawData()))
	}
	if err := s.checkRoom(need); err != nil {
		return fmt.Errorf("store blocks: %w", err)
	}
	var packed []blocks.Block
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, b := range bs {
		if _, ok := inline(b.Cid()); ok {
			continue
		}
		if s.packable(b.Cid(), len(b.RawData())) {
			packed = append(packed, b)
			continue
		}
		if err := wb.Set(blockKey(b.Cid().Hash()), b.RawData()); err != nil {
			return fmt.Errorf("store block %s: %w", b.Cid(), err)
		}
	}
	if len(packed) > 0 {
		refs, err := s.appendPacked(packed)
		if err != nil {
			return fmt.Errorf("store blocks: %w", err)
		}
		if err := setPackRefs(wb, refs); err != nil {
			return fmt.Errorf("store blocks: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("store blocks: %w", err)
	}
	s.signal.fire()
	return nil
}

// DeleteBlock removes a block.
func (s *Blockstore) DeleteBlock(_ context.Context, c cid.Cid) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(blockKey(c.Hash())) }); err != nil {
		return fmt.Errorf("delete block %s: %w", c, err)
	}
	return nil
}

// AllKeysChan lists every stored block as a raw CID (the codec is not kept).
func (s *Blockstore) AllKeysChan(ctx context.Context) (<-chan cid.Cid, error) {
	ch := make(chan cid.Cid, 64)
	go func() {
		defer close(ch)
		_ = s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: blockPrefix})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				h := mh.Multihash(bytes.Clone(it.Item().Key()[len(blockPrefix):]))
				select {
				case ch <- cid.NewCidV1(cid.Raw, h):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
	}()
	return ch, nil
}
