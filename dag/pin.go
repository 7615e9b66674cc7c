package dag

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Pins name the roots a peer still needs; GC keeps everything reachable
// from them. A name holds one root: re-importing a workspace moves its pin.

func pinKey(name string) []byte { return append(append([]byte{}, pinPrefix...), name...) }

// Pin points name at root.
func (s *Store) Pin(name string, root cid.Cid) error {
	if name == "" {
		return fmt.Errorf("pin: empty name: %w", errdefs.ErrInvalid)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(pinKey(name), root.Bytes()) }); err != nil {
		return fmt.Errorf("pin %s: %w", name, err)
	}
	return nil
}

// Unpin removes a pin; a missing one is ErrNotFound.
func (s *Store) Unpin(name string) error {
	err := s.db.Update(func(txn *badger.Txn) error {
		if _, err := txn.Get(pinKey(name)); err != nil {
			return err
		}
		return txn.Delete(pinKey(name))
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("unpin %s: %w", name, errdefs.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("unpin %s: %w", name, err)
	}
	return nil
}

// Pins lists the pins by name.
func (s *Store) Pins() (map[string]cid.Cid, error) {
	out := map[string]cid.Cid{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pinPrefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			name := string(it.Item().Key()[len(pinPrefix):])
			err := it.Item().Value(func(v []byte) error {
				c, err := cid.Cast(v)
				if err == nil {
					out[name] = c
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list pins: %w", err)
	}
	return out, nil
}

// GCResult counts what a collection removed.
type GCResult struct {
	Kept, Removed int
	RemovedBytes  int64
}

// GC marks live blocks in badger, not in memory: a store of millions of
// blocks would otherwise need a set of millions of hashes for the whole
// collection. A mark is gcMarkPrefix + multihash with no value. Marks are
// cleared when a collection starts (a collection killed midway leaves some,
// and a stale mark would keep a dead block alive) and when it ends.
var gcMarkPrefix = []byte("dag/gcm/")

func gcMarkKey(h []byte) []byte {
	return append(append(make([]byte, 0, len(gcMarkPrefix)+len(h)), gcMarkPrefix...), h...)
}

// gcMarkFlush is how many marks are buffered before they are written; the
// buffer is the only mark state held in memory.
const gcMarkFlush = 1 << 14

// GC deletes every block not reachable from a pin. Blocks of pinned DAGs
// that are missing locally are skipped, not an error. It must not run
// concurrently with imports or fetches (the node serializes them). Its
// memory does not grow with the store: marks and deletions stream through
// badger, and only the path being walked (at most 2*MaxDepth nodes' links)
// and gcMarkFlush pending marks are held.
func (s *Store) GC(ctx context.Context) (GCResult, error) {
	start := time.Now()
	s.blocks.rotatePack()
	pins, err := s.Pins()
	if err != nil {
		return GCResult{}, err
	}
	// From here on, index entries are no longer proof that blocks exist.
	if err := s.bumpGCGeneration(); err != nil {
		return GCResult{}, fmt.Errorf("gc: %w", err)
	}
	if err := s.clearGCMarks(); err != nil {
		return GCResult{}, fmt.Errorf("gc: clear marks of an earlier collection: %w", err)
	}
	res, err := s.gcMarkSweep(ctx, pins)
	// The marks go whatever happened; if this fails too, the next GC
	// clears them before it marks.
	if cerr := s.clearGCMarks(); cerr != nil && err == nil {
		err = fmt.Errorf("gc: clear marks: %w", cerr)
	}
	if err != nil {
		return GCResult{}, err
	}
	// Packs whose blocks are all gone go too; mostly dead ones are
	// rewritten.
	if err := s.blocks.tidyPacks(start); err != nil {
		return res, fmt.Errorf("gc: packs: %w", err)
	}
	// Reclaim value-log space; "no rewrite needed" is not a failure.
	for s.db.RunValueLogGC(0.5) == nil {
	}
	return res, nil
}

// gcMarker writes marks in batches and answers whether a hash is marked.
type gcMarker struct {
	db      *badger.DB
	wb      *badger.WriteBatch
	pending map[string]struct{} // written to wb, not yet flushed
}

func (m *gcMarker) marked(h []byte) (bool, error) {
	if _, ok := m.pending[string(h)]; ok {
		return true, nil
	}
	err := m.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(gcMarkKey(h))
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (m *gcMarker) mark(h []byte) error {
	if m.wb == nil {
		m.wb = m.db.NewWriteBatch()
	}
	if err := m.wb.Set(gcMarkKey(h), nil); err != nil {
		return err
	}
	m.pending[string(h)] = struct{}{}
	if len(m.pending) >= gcMarkFlush {
		return m.flush()
	}
	return nil
}

func (m *gcMarker) flush() error {
	if m.wb == nil {
		return nil
	}
	err := m.wb.Flush()
	m.wb = nil
	clear(m.pending)
	return err
}

func (m *gcMarker) cancel() {
	if m.wb != nil {
		m.wb.Cancel()
	}
}

// gcMarkSweep marks what the pins reach, then deletes unmarked blocks.
func (s *Store) gcMarkSweep(ctx context.Context, pins map[string]cid.Cid) (GCResult, error) {
	m := &gcMarker{db: s.db, pending: map[string]struct{}{}}
	defer m.cancel()
	var mark func(c cid.Cid, depth int) error
	mark = func(c cid.Cid, depth int) error {
		if depth > 2*MaxDepth {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		h := c.Hash()
		if seen, err := m.marked(h); err != nil || seen {
			return err
		}
		if err := m.mark(h); err != nil {
			return err
		}
		if c.Prefix().Codec != cid.DagProtobuf {
			return nil
		}
		if has, _ := s.blocks.Has(ctx, c); !has {
			return nil
		}
		links, err := s.links(ctx, c)
		if err != nil {
			return nil // a bad node keeps itself; its children are unreachable
		}
		for _, l := range links {
			if err := mark(l, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	for _, root := range pins {
		if err := mark(root, 0); err != nil {
			return GCResult{}, fmt.Errorf("gc: mark: %w", err)
		}
	}
	if err := m.flush(); err != nil {
		return GCResult{}, fmt.Errorf("gc: mark: %w", err)
	}
	// Sweep: one read snapshot walks the blocks and looks up their marks;
	// deletions stream through a write batch, which flushes as it fills.
	var res GCResult
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: blockPrefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			h := it.Item().Key()[len(blockPrefix):]
			_, err := txn.Get(gcMarkKey(h))
			if err == nil {
				res.Kept++
				continue
			}
			if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
			res.Removed++
			size := it.Item().ValueSize()
			if it.Item().UserMeta() == packMeta { // the block's bytes are in a pack
				_ = it.Item().Value(func(v []byte) error {
					if r, err := decodePackRef(v); err == nil {
						size = int64(r.length)
					}
					return nil
				})
			}
			res.RemovedBytes += size
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return GCResult{}, fmt.Errorf("gc: sweep: %w", err)
	}
	return res, nil
}

// clearGCMarks deletes every mark, streaming.
func (s *Store) clearGCMarks() error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: gcMarkPrefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return wb.Flush()
}
