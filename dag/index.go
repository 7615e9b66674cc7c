package dag

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"
)

// The import index remembers, per workspace and directory, what each entry
// was at the last import (for files and symlinks their stat, see fileStat)
// and the CIDs it got, the directory's own included, so an unchanged file is
// never read again (as git's index does) and an unchanged directory is
// neither rebuilt nor rewritten. One record a directory keeps the index
// small to load and cheap to update: an import rewrites only the records of
// directories whose entries changed.
var (
	// dirIndexPrefix + workspace + 0 + directory path -> dirRecord
	dirIndexPrefix = []byte("dag/d/")
	// wsGenPrefix + workspace -> the GC generation in which every CID of
	// the workspace's records was known to be stored (see gcGeneration)
	wsGenPrefix = []byte("dag/w/")
	// legacyIndexPrefix + workspace + 0 + file path: the per-file index of
	// earlier versions, deleted when the workspace is next imported.
	legacyIndexPrefix = []byte("dag/i/")
)

func dirIndexKey(workspace, rel string) []byte {
	k := make([]byte, 0, len(dirIndexPrefix)+len(workspace)+1+len(rel))
	k = append(k, dirIndexPrefix...)
	k = append(k, workspace...)
	k = append(k, 0)
	return append(k, rel...)
}

func wsGenKey(workspace string) []byte {
	return append(append([]byte{}, wsGenPrefix...), workspace...)
}

// A dirRecord is encoded as
//
//	version byte (2)
//	uvarint len, cid bytes    the directory's CID
//	uvarint                   its Tsize
//	uvarint                   the mode its node records (0: none)
//	uvarint                   number of entries, then for each, by name:
//	  uvarint len, name
//	  flags byte              entryKind | recVouched
//	  for files and symlinks: varint size, mtime, ctime; uvarint ino, mode
//	  uvarint len, cid bytes
//	  uvarint                 Tsize
//	then, in records of this version that have them, the subtree's totals:
//	uvarint files, dirs, symlinks, ignored, skipped, bytes
//
// recVersion must change whenever the DAG an import makes of the same tree
// would change (chunker, leaves, directory layout), so that records of the
// old layout are not reused. (2: files and directories record their modes
// when not 0644 and 0755.)
const (
	recVersion = 2
	recVouched = 1 << 4 // the entry's stat vouches for its CID (see racy)
	recKind    = 0x0f
)

type dirRecord struct {
	cid    []byte
	tsize  uint64
	mode   os.FileMode // recorded by its node (see recordedDirMode)
	ents   []recEntry
	tot    totals // of the subtree, if hasTot
	hasTot bool
}

type recEntry struct {
	name    []byte
	kind    entryKind
	vouched bool
	st      fileStat
	cid     []byte
	tsize   uint64
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

// encodeRecord encodes a directory built by this import (its entries
// sorted, those gone during the import removed).
func encodeRecord(d *treeDir) []byte {
	b := make([]byte, 0, 64+len(d.ents)*80)
	b = append(b, recVersion)
	b = appendBytes(b, d.cid.Bytes())
	b = binary.AppendUvarint(b, d.tsize)
	b = binary.AppendUvarint(b, uint64(d.mode))
	b = binary.AppendUvarint(b, uint64(len(d.ents)))
	for i := range d.ents {
		e := &d.ents[i]
		b = appendBytes(b, []byte(e.name))
		flags := byte(e.kind)
		if e.vouched {
			flags |= recVouched
		}
		b = append(b, flags)
		if e.kind != kindDir {
			b = binary.AppendVarint(b, e.st.size)
			b = binary.AppendVarint(b, e.st.mtimeNs)
			b = binary.AppendVarint(b, e.st.ctimeNs)
			b = binary.AppendUvarint(b, e.st.ino)
			b = binary.AppendUvarint(b, uint64(e.st.mode))
		}
		if e.reused {
			b = appendBytes(b, e.oldCid)
		} else {
			b = appendBytes(b, e.cid.Bytes())
		}
		b = binary.AppendUvarint(b, e.tsize)
	}
	for _, v := range []uint64{d.tot.files, d.tot.dirs, d.tot.symlinks, d.tot.ignored, d.tot.skipped, d.tot.bytes} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

var errBadRecord = errors.New("malformed index record")

// decodeRecord decodes a record; its slices alias b. A malformed record is
// an error, and the caller then does without it.
func decodeRecord(b []byte) (dirRecord, error) {
	var r dirRecord
	if len(b) == 0 || b[0] != recVersion {
		return r, errBadRecord
	}
	b = b[1:]
	bad := false
	uv := func() uint64 {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			bad = true
			return 0
		}
		b = b[k:]
		return v
	}
	sv := func() int64 {
		v, k := binary.Varint(b)
		if k <= 0 {
			bad = true
			return 0
		}
		b = b[k:]
		return v
	}
	bs := func() []byte {
		n := uv()
		if bad || n > uint64(len(b)) {
			bad = true
			return nil
		}
		v := b[:n:n]
		b = b[n:]
		return v
	}
	r.cid = bs()
	r.tsize = uv()
	mode := uv()
	n := uv()
	if bad || !validCid(r.cid) || n > uint64(len(b)) || mode > 0o777 {
		return r, errBadRecord
	}
	r.mode = os.FileMode(mode)
	r.ents = make([]recEntry, 0, n)
	for range n {
		var e recEntry
		e.name = bs()
		if bad || len(b) == 0 {
			return r, errBadRecord
		}
		flags := b[0]
		b = b[1:]
		e.kind, e.vouched = entryKind(flags&recKind), flags&recVouched != 0
		if e.kind > kindSymlink {
			return r, errBadRecord
		}
		if e.kind != kindDir {
			e.st.size, e.st.mtimeNs, e.st.ctimeNs = sv(), sv(), sv()
			e.st.ino, e.st.mode = uv(), uint32(uv())
		}
		e.cid = bs()
		e.tsize = uv()
		if bad || !validCid(e.cid) {
			return r, errBadRecord
		}
		if k := len(r.ents); k > 0 && bytes.Compare(r.ents[k-1].name, e.name) >= 0 {
			return r, errBadRecord // entries must be sorted for the merge with a scan
		}
		r.ents = append(r.ents, e)
	}
	if len(b) != 0 {
		t := &r.tot
		t.files, t.dirs, t.symlinks, t.ignored, t.skipped, t.bytes = uv(), uv(), uv(), uv(), uv(), uv()
		if bad || len(b) != 0 || t.dirs == 0 {
			return r, errBadRecord
		}
		r.hasTot = true
	}
	return r, nil
}

// validCid checks the shape of a binary CIDv1 without allocating: version,
// codec, then a multihash whose length matches.
func validCid(b []byte) bool {
	next := func() (uint64, bool) {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, false
		}
		b = b[k:]
		return v, true
	}
	v, ok1 := next()
	_, ok2 := next()
	_, ok3 := next()
	n, ok4 := next()
	return ok1 && ok2 && ok3 && ok4 && v == 1 && n == uint64(len(b))
}

// indexSnapshot is a workspace's index as an import loads it.
type indexSnapshot struct {
	gen     uint64            // the GC generation at load
	trusted bool              // the records' CIDs are all stored (no GC since they were verified)
	wsGen   []byte            // the workspace's generation mark as stored, nil if none
	records map[string][]byte // directory path -> record
	legacy  [][]byte          // keys of the per-file index of earlier versions
}

// loadIndex reads a workspace's index: one record a directory.
func (s *Store) loadIndex(workspace string) (*indexSnapshot, error) {
	snap := &indexSnapshot{records: map[string][]byte{}}
	prefix := dirIndexKey(workspace, "")
	legacy := append(append(append([]byte{}, legacyIndexPrefix...), workspace...), 0)
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if snap.gen, err = readGen(txn, gcGenKey); err != nil {
			return err
		}
		it, err := txn.Get(wsGenKey(workspace))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if snap.wsGen, err = it.ValueCopy(nil); err != nil {
				return err
			}
			g, k := binary.Uvarint(snap.wsGen)
			snap.trusted = k > 0 && g == snap.gen
		}
		iter := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		for iter.Rewind(); iter.Valid(); iter.Next() {
			v, err := iter.Item().ValueCopy(nil)
			if err != nil {
				iter.Close()
				return err
			}
			snap.records[string(iter.Item().Key()[len(prefix):])] = v
		}
		iter.Close()
		iter = txn.NewIterator(badger.IteratorOptions{Prefix: legacy})
		defer iter.Close()
		for iter.Rewind(); iter.Valid(); iter.Next() {
			snap.legacy = append(snap.legacy, iter.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load index of %s: %w", workspace, err)
	}
	return snap, nil
}

// saveIndex writes the records that changed, deletes those of directories
// that are gone (left in snap.records by the import), and marks the
// workspace as verified in generation snap.gen: the generation read before
// the import, so a GC that started since leaves the mark stale.
func (s *Store) saveIndex(workspace string, snap *indexSnapshot, put map[string][]byte) error {
	mark := binary.AppendUvarint(nil, snap.gen)
	if len(put) == 0 && len(snap.records) == 0 && len(snap.legacy) == 0 && bytes.Equal(mark, snap.wsGen) {
		return nil
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for rel := range snap.records {
		if err := wb.Delete(dirIndexKey(workspace, rel)); err != nil {
			return fmt.Errorf("save index of %s: %w", workspace, err)
		}
	}
	for _, k := range snap.legacy {
		if err := wb.Delete(k); err != nil {
			return fmt.Errorf("save index of %s: %w", workspace, err)
		}
	}
	for rel, v := range put {
		if err := wb.Set(dirIndexKey(workspace, rel), v); err != nil {
			return fmt.Errorf("save index of %s: %w", workspace, err)
		}
	}
	if !bytes.Equal(mark, snap.wsGen) {
		if err := wb.Set(wsGenKey(workspace), mark); err != nil {
			return fmt.Errorf("save index of %s: %w", workspace, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("save index of %s: %w", workspace, err)
	}
	return nil
}

// The GC generation counts collections. Index records verified in the
// current generation name blocks that no GC has run over since, so their
// CIDs are trusted without a look in the blockstore; older ones are checked.
var gcGenKey = []byte("dag/gcgen")

func readGen(txn *badger.Txn, key []byte) (uint64, error) {
	it, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var gen uint64
	err = it.Value(func(v []byte) error {
		gen, _ = binary.Uvarint(v)
		return nil
	})
	return gen, err
}

func (s *Store) gcGeneration() (uint64, error) {
	var gen uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		gen, err = readGen(txn, gcGenKey)
		return err
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
	return s.markCompleteAt(root, gen)
}

// markCompleteAt marks root complete as of generation gen, read before its
// blocks were known to be stored: if a GC started since, the mark is stale
// from the start. An existing mark is not rewritten.
func (s *Store) markCompleteAt(root cid.Cid, gen uint64) error {
	key := completeKey(root)
	mark := binary.AppendUvarint(nil, gen)
	var have []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if err != nil {
			return err
		}
		have, err = it.ValueCopy(nil)
		return err
	})
	if err == nil && bytes.Equal(have, mark) {
		return nil
	}
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(key, mark)
	})
}

// Complete reports whether every block of root's DAG is known to be here
// (a fetch or an import finished it, and no GC ran over it since).
func (s *Store) Complete(root cid.Cid) bool { return s.isComplete(root) }

func (s *Store) isComplete(root cid.Cid) bool {
	var gen, marked uint64
	found := false
	_ = s.db.View(func(txn *badger.Txn) error {
		var err error
		if gen, err = readGen(txn, gcGenKey); err != nil {
			return err
		}
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

// RenameIndex moves the import index named from to the name to, replacing
// what to held: an import whose index name depends on the root it makes
// writes under a temporary name first. A missing from leaves to empty.
func (s *Store) RenameIndex(from, to string) error {
	if from == to {
		return nil
	}
	type kv struct{ k, v []byte }
	var moved, stale []kv
	var mark []byte
	err := s.db.View(func(txn *badger.Txn) error {
		collect := func(prefix []byte, out *[]kv) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				*out = append(*out, kv{it.Item().KeyCopy(nil)[len(prefix):], v})
			}
			return nil
		}
		if err := collect(dirIndexKey(from, ""), &moved); err != nil {
			return err
		}
		if err := collect(dirIndexKey(to, ""), &stale); err != nil {
			return err
		}
		it, err := txn.Get(wsGenKey(from))
		if err == nil {
			mark, err = it.ValueCopy(nil)
		}
		if errors.Is(err, badger.ErrKeyNotFound) {
			err = nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("rename index %s: %w", from, err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	keep := make(map[string]bool, len(moved))
	for _, e := range moved {
		keep[string(e.k)] = true
	}
	for _, e := range stale {
		if keep[string(e.k)] {
			continue // overwritten below
		}
		if err := wb.Delete(dirIndexKey(to, string(e.k))); err != nil {
			return fmt.Errorf("rename index %s: %w", from, err)
		}
	}
	for _, e := range moved {
		if err := wb.Set(dirIndexKey(to, string(e.k)), e.v); err != nil {
			return fmt.Errorf("rename index %s: %w", from, err)
		}
		if err := wb.Delete(dirIndexKey(from, string(e.k))); err != nil {
			return fmt.Errorf("rename index %s: %w", from, err)
		}
	}
	if mark == nil {
		if err := wb.Delete(wsGenKey(to)); err != nil {
			return fmt.Errorf("rename index %s: %w", from, err)
		}
	} else {
		if err := wb.Set(wsGenKey(to), mark); err != nil {
			return fmt.Errorf("rename index %s: %w", from, err)
		}
		if err := wb.Delete(wsGenKey(from)); err != nil {
			return fmt.Errorf("rename index %s: %w", from, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("rename index %s: %w", from, err)
	}
	return nil
}

// DropIndex deletes the import index named name.
func (s *Store) DropIndex(name string) error {
	var keys [][]byte
	prefix := dirIndexKey(name, "")
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("drop index %s: %w", name, err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range append(keys, wsGenKey(name)) {
		if err := wb.Delete(k); err != nil {
			return fmt.Errorf("drop index %s: %w", name, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("drop index %s: %w", name, err)
	}
	return nil
}
