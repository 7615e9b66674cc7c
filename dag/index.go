package dag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"
)

// The import index remembers, per workspace and path, the stat of a file
// when it was last imported and the CID it got, so an unchanged file is
// never read again (as git's index does).
var indexPrefix = []byte("dag/i/") // + workspace + 0 + relpath -> indexEntry

type indexEntry struct {
	size, mtimeNs, ctimeNs int64
	ino                    uint64
	mode                   uint32
	tsize                  uint64 // the file link's cumulative block size
	gcGen                  uint64 // GC generation when written, see gcGeneration
	cid                    cid.Cid
}

func statEntry(info fs.FileInfo) indexEntry {
	e := indexEntry{size: info.Size(), mtimeNs: info.ModTime().UnixNano(), mode: uint32(info.Mode())}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		e.ino = st.Ino
		e.ctimeNs = st.Ctim.Nano()
	}
	return e
}

// sameStat reports whether a file still has the stat it had when indexed.
func (e indexEntry) sameStat(o indexEntry) bool {
	return e.size == o.size && e.mtimeNs == o.mtimeNs && e.ctimeNs == o.ctimeNs && e.ino == o.ino && e.mode == o.mode
}

func (e indexEntry) marshal() []byte {
	b := make([]byte, 0, 40+len(e.cid.Bytes()))
	b = binary.AppendVarint(b, e.size)
	b = binary.AppendVarint(b, e.mtimeNs)
	b = binary.AppendVarint(b, e.ctimeNs)
	b = binary.AppendUvarint(b, e.ino)
	b = binary.AppendUvarint(b, uint64(e.mode))
	b = binary.AppendUvarint(b, e.tsize)
	b = binary.AppendUvarint(b, e.gcGen)
	return append(b, e.cid.Bytes()...)
}

func unmarshalIndexEntry(b []byte) (indexEntry, error) {
	var e indexEntry
	var n int
	next := func() int64 {
		v, k := binary.Varint(b)
		if k <= 0 {
			n = -1
			return 0
		}
		b = b[k:]
		return v
	}
	nextU := func() uint64 {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			n = -1
			return 0
		}
		b = b[k:]
		return v
	}
	e.size, e.mtimeNs, e.ctimeNs = next(), next(), next()
	e.ino, e.mode = nextU(), uint32(nextU())
	e.tsize, e.gcGen = nextU(), nextU()
	if n < 0 {
		return e, errors.New("short index entry")
	}
	c, err := cid.Cast(b)
	if err != nil {
		return e, fmt.Errorf("index entry: %w", err)
	}
	e.cid = c
	return e, nil
}

func indexKey(workspace, rel string) []byte {
	k := make([]byte, 0, len(indexPrefix)+len(workspace)+1+len(rel))
	k = append(k, indexPrefix...)
	k = append(k, workspace...)
	k = append(k, 0)
	return append(k, rel...)
}

// loadIndex reads a workspace's whole index; it is small (one entry a file).
func (s *Store) loadIndex(workspace string) (map[string]indexEntry, error) {
	out := map[string]indexEntry{}
	prefix := indexKey(workspace, "")
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			rel := string(it.Item().Key()[len(prefix):])
			err := it.Item().Value(func(v []byte) error {
				e, err := unmarshalIndexEntry(v)
				if err == nil {
					out[rel] = e
				}
				return nil // a bad entry only costs a re-read
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load index of %s: %w", workspace, err)
	}
	return out, nil
}

// saveIndex replaces a workspace's index with entries.
func (s *Store) saveIndex(workspace string, old, entries map[string]indexEntry) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for rel := range old {
		if _, ok := entries[rel]; !ok {
			if err := wb.Delete(indexKey(workspace, rel)); err != nil {
				return err
			}
		}
	}
	for rel, e := range entries {
		if o, ok := old[rel]; ok && o.sameStat(e) && o.cid.Equals(e.cid) && o.gcGen == e.gcGen {
			continue
		}
		if err := wb.Set(indexKey(workspace, rel), e.marshal()); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("save index of %s: %w", workspace, err)
	}
	return nil
}

// The GC generation counts collections. An index entry written in the
// current generation names blocks that no GC has run over since, so its CID
// is trusted without a look in the blockstore; older entries are checked.
var gcGenKey = []byte("dag/gcgen")

func (s *Store) gcGeneration() (uint64, error) {
	var gen uint64
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(gcGenKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			gen, _ = binary.Uvarint(v)
			return nil
		})
	})
	return gen, err
}

func (s *Store) bumpGCGeneration() error {
	gen, err := s.gcGeneration()
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(gcGenKey, binary.AppendUvarint(nil, gen+1))
	})
}

// A root whose every block is known to be local (it was imported here, or
// fetched to the end) is marked with the current GC generation, so a later
// fetch of it returns at once instead of walking the whole DAG. A GC moves
// the generation on, which invalidates every mark.
var completePrefix = []byte("dag/c/") // + cid bytes -> GC generation

func completeKey(c cid.Cid) []byte { return append(append([]byte{}, completePrefix...), c.Bytes()...) }

func (s *Store) markComplete(root cid.Cid) error {
	gen, err := s.gcGeneration()
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(completeKey(root), binary.AppendUvarint(nil, gen))
	})
}

func (s *Store) isComplete(root cid.Cid) bool {
	gen, err := s.gcGeneration()
	if err != nil {
		return false
	}
	var marked uint64
	found := false
	_ = s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(completeKey(root))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			marked, _ = binary.Uvarint(v)
			found = true
			return nil
		})
	})
	return found && marked == gen
}
