package dag

import (
	"context"
	"errors"
	"fmt"

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

// GC deletes every block not reachable from a pin. Blocks of pinned DAGs
// that are missing locally are skipped, not an error. It must not run
// concurrently with imports or fetches (the node serializes them).
func (s *Store) GC(ctx context.Context) (GCResult, error) {
	pins, err := s.Pins()
	if err != nil {
		return GCResult{}, err
	}
	// From here on, index entries are no longer proof that blocks exist.
	if err := s.bumpGCGeneration(); err != nil {
		return GCResult{}, fmt.Errorf("gc: %w", err)
	}
	live := map[string]struct{}{}
	var mark func(c cid.Cid, depth int) error
	mark = func(c cid.Cid, depth int) error {
		if depth > 2*MaxDepth {
			return nil
		}
		if _, seen := live[string(c.Hash())]; seen {
			return nil
		}
		live[string(c.Hash())] = struct{}{}
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
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := mark(l, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	for _, root := range pins {
		if err := mark(root, 0); err != nil {
			return GCResult{}, fmt.Errorf("gc: %w", err)
		}
	}
	var res GCResult
	var dead [][]byte
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: blockPrefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			h := it.Item().Key()[len(blockPrefix):]
			if _, ok := live[string(h)]; ok {
				res.Kept++
				continue
			}
			dead = append(dead, it.Item().KeyCopy(nil))
			res.RemovedBytes += it.Item().ValueSize()
		}
		return nil
	})
	if err != nil {
		return GCResult{}, fmt.Errorf("gc: %w", err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range dead {
		if err := wb.Delete(k); err != nil {
			return GCResult{}, fmt.Errorf("gc: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return GCResult{}, fmt.Errorf("gc: %w", err)
	}
	res.Removed = len(dead)
	// Reclaim value-log space; "no rewrite needed" is not a failure.
	for s.db.RunValueLogGC(0.5) == nil {
	}
	return res, nil
}
