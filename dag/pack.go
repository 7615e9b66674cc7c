package dag

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"golang.org/x/sys/unix"
)

// Large files are not copied into badger block by block: their bytes are
// copied once, in the kernel (copy_file_range), into a pack file beside the
// store, then chunked and hashed from that copy, and each leaf is stored as
// a reference into the pack (badger's user-meta byte says which). Writing a
// gigabyte through badger's memory-mapped value log cost three times as
// much as hashing it. The copy is immutable, so the CIDs are those of its
// bytes, whatever happens to the source meanwhile; reads check each block's
// hash, so a pack damaged by a crash reads as missing blocks, never as wrong
// ones. A pack is deleted when no block refers to it (after a GC).

// packMinSize: files at least this large are packed.
const packMinSize = 32 << 20

// packMeta marks a badger value that is a pack reference, not block bytes.
const packMeta byte = 1

// packRef locates a block in a pack. It carries a CRC-32C of the block's
// bytes, checked on every read instead of the block's hash (a pack lies
// outside badger's own checksums, and a crash can leave a reference to
// bytes that never reached the disk). References written before they had
// one are checked by hash.
type packRef struct {
	pack   string // file name: 32 hex digits
	offset int64
	length int
	sum    uint32 // CRC-32C of the bytes, if hasSum
	hasSum bool
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (r packRef) encode() []byte {
	b := append([]byte(nil), r.pack...)
	b = binary.AppendUvarint(b, uint64(r.offset))
	b = binary.AppendUvarint(b, uint64(r.length))
	if r.hasSum {
		b = binary.BigEndian.AppendUint32(b, r.sum)
	}
	return b
}

func decodePackRef(b []byte) (packRef, error) {
	if len(b) < 32 {
		return packRef{}, errors.New("pack reference too short")
	}
	r := packRef{pack: string(b[:32])}
	if _, err := hex.DecodeString(r.pack); err != nil {
		return packRef{}, fmt.Errorf("pack reference: %w", err)
	}
	off, n := binary.Uvarint(b[32:])
	if n <= 0 {
		return packRef{}, errors.New("pack reference: bad offset")
	}
	length, m := binary.Uvarint(b[32+n:])
	if m <= 0 || length > MaxBlockSize || off > 1<<62 {
		return packRef{}, errors.New("pack reference: bad length")
	}
	r.offset, r.length = int64(off), int(length)
	switch rest := b[32+n+m:]; len(rest) {
	case 0:
	case 4:
		r.sum, r.hasSum = binary.BigEndian.Uint32(rest), true
	default:
		return packRef{}, errors.New("pack reference: trailing bytes")
	}
	return r, nil
}

// packDir is where packs live: beside badger's directory. "" when the store
// has no directory (in memory): nothing is packed then.
func (s *Blockstore) packDir() string {
	opts := s.db.Opts()
	if opts.InMemory || opts.Dir == "" {
		return ""
	}
	return filepath.Clean(opts.Dir) + ".packs"
}

// readRefChecked reads the block c at r and checks its CRC, or its hash.
func (s *Blockstore) readRefChecked(c cid.Cid, r packRef) ([]byte, error) {
	return s.readRefCheckedInto(c, r, nil)
}

// readRefCheckedInto is readRefChecked reading into buf when it is large
// enough.
func (s *Blockstore) readRefCheckedInto(c cid.Cid, r packRef, buf []byte) ([]byte, error) {
	data, err := s.readRefInto(r, buf)
	if err != nil {
		return nil, err
	}
	if r.hasSum {
		if crc32.Checksum(data, castagnoli) != r.sum {
			return nil, fmt.Errorf("pack %s at %d: bytes do not match their checksum", r.pack, r.offset)
		}
		return data, nil
	}
	got, err := c.Prefix().Sum(data)
	if err != nil || !got.Equals(c) {
		return nil, fmt.Errorf("pack %s at %d: bytes do not hash to %s", r.pack, r.offset, c)
	}
	return data, nil
}

// readRefInto reads the bytes a reference points to, unchecked, into buf
// when it is large enough.
func (s *Blockstore) readRefInto(r packRef, buf []byte) ([]byte, error) {
	f, err := s.packs.get(s.packDir(), r.pack)
	if err != nil {
		return nil, err
	}
	defer s.packs.put(f)
	data := buf[:0]
	if cap(data) < r.length {
		data = make([]byte, r.length)
	}
	data = data[:r.length]
	if _, err := f.ReadAt(data, r.offset); err != nil {
		return nil, err
	}
	return data, nil
}

// maxOpenPacks bounds the packs kept open for reading while unused.
const maxOpenPacks = 256

// packFiles keeps packs open for reading, so that reading a block costs one
// pread, not an open and a close besides. A pack removed meanwhile is
// closed once its last reader is done.
type packFiles struct {
	mu   sync.Mutex
	open map[string]*packFile
}

type packFile struct {
	*directReader
	users int
	gone  bool // removed from open; close when users drops to 0
}

func (p *packFiles) get(dir, name string) (*packFile, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pf, ok := p.open[name]; ok {
		pf.users++
		return pf, nil
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	if p.open == nil {
		p.open = map[string]*packFile{}
	}
	if len(p.open) >= maxOpenPacks {
		for n, pf := range p.open {
			if pf.users == 0 {
				pf.close()
				delete(p.open, n)
			}
		}
	}
	pf := &packFile{directReader: newDirectReader(f), users: 1}
	p.open[name] = pf
	return pf, nil
}

func (p *packFiles) put(pf *packFile) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pf.users--; pf.users == 0 && pf.gone {
		pf.close()
	}
}

// forget closes a pack that is being removed, once its readers are done.
func (p *packFiles) forget(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pf, ok := p.open[name]
	if !ok {
		return
	}
	delete(p.open, name)
	pf.gone = true
	if pf.users == 0 {
		pf.close()
	}
}

// newPack creates an empty pack file.
func (s *Blockstore) newPack() (*os.File, string, error) {
	dir := s.packDir()
	if dir == "" {
		return nil, "", errors.New("the store keeps no packs")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	name := hex.EncodeToString(id[:])
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	return f, name, err
}

// copyIntoPack copies the first size bytes of src into the pack f, in the
// kernel where it can (copy_file_range), else in user space. It uses
// explicit offsets, so src may be read meanwhile by ReadAt.
func copyIntoPack(ctx context.Context, src, f *os.File, size int64) error {
	var roff, woff int64
	for roff < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := unix.CopyFileRange(int(src.Fd()), &roff, int(f.Fd()), &woff, int(min(size-roff, 64<<20)), 0)
		if err != nil || n == 0 {
			break // a filesystem that cannot: copy the rest in user space
		}
	}
	if roff < size {
		if _, err := io.Copy(io.NewOffsetWriter(f, woff), io.NewSectionReader(src, roff, size-roff)); err != nil {
			return err
		}
	}
	return nil
}

// errNoDirect: the pack's file system refuses O_DIRECT writes.
var errNoDirect = errors.New("direct writes not supported")

// directChunk is the size of one O_DIRECT write; a multiple of any block
// size a file system may ask offsets and lengths to be aligned to.
const directChunk = 4 << 20

// copyDirect copies the first size bytes of src into the pack at path with
// O_DIRECT writes, which go from the buffer to the disk without the page
// cache. The kernel's copy (copyIntoPack) fills a gigabyte of page cache
// for a gigabyte file, and writing it back later took more CPU than hashing
// it: a second large import while the first one's pages were still dirty
// took 4 s instead of 1.5 here. It returns errNoDirect, having written
// nothing, where the file system does not take such writes.
func copyDirect(ctx context.Context, src *os.File, path string, size int64) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return errNoDirect
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := writeDirectMapped(ctx, src, fd, size); !errors.Is(err, errNoMapping) {
		if err != nil {
			return err
		}
		return unix.Ftruncate(fd, size)
	}
	// An anonymous mapping is page-aligned, as O_DIRECT wants its buffers.
	buf, err := unix.Mmap(-1, 0, directChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(directChunk), size-off))
		if _, err := src.ReadAt(buf[:n], off); err != nil {
			return err
		}
		// The last write is padded to a block; the file is cut to size after.
		w := alignUp(n)
		clear(buf[n:w])
		if err := pwriteAll(fd, buf[:w], off); err != nil {
			if off == 0 && errors.Is(err, unix.EINVAL) {
				return errNoDirect
			}
			return err
		}
		off += int64(n)
	}
	return unix.Ftruncate(fd, size)
}

// errNoMapping: the source cannot be mapped; it is copied through a buffer.
var errNoMapping = errors.New("source cannot be mapped")

// mapWindow is how much of a source writeDirectMapped maps at a time: the
// pages of a mapping count in the process's resident memory while it is
// mapped, even though they are the page cache's.
const mapWindow = 2 * directChunk

// writeDirectMapped writes the first size bytes of src to fd (O_DIRECT)
// from read-only mappings of src, mapWindow at a time: the kernel takes the
// source's pages for the writes itself, instead of this process copying
// them into a buffer first, which cost a quarter of a CPU-second per GiB
// here. Only the kernel reads the mappings, so a source cut short meanwhile
// makes a write fail (EFAULT) rather than fault this process. The last
// write is rounded up to a page, which the mapping covers (zeros past the
// end).
//
// A source the page cache does not hold is brought into it this way, at
// the cost of a cold read (direct.go). Reading it past the cache instead,
// for the copy and the chunkers, was slower: 3.2-4.0 s for 1 GiB against
// 2.7-3.1 s, the chunkers' synchronous reads waiting on the disk where the
// cache's readahead does not.
func writeDirectMapped(ctx context.Context, src *os.File, fd int, size int64) error {
	page := int64(os.Getpagesize())
	if size <= 0 || mapWindow%page != 0 {
		return errNoMapping
	}
	for at := int64(0); at < size; at += mapWindow {
		mapped := min(int64(mapWindow), (size-at+page-1)/page*page)
		m, err := unix.Mmap(int(src.Fd()), at, int(mapped), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			if at == 0 {
				return errNoMapping
			}
			return err
		}
		err = writeDirectFrom(ctx, fd, m, at)
		unix.Munmap(m)
		if err != nil {
			if at == 0 && errors.Is(err, unix.EINVAL) {
				return errNoDirect
			}
			return err
		}
	}
	return nil
}

// writeDirectFrom writes m at off, directChunk at a time.
func writeDirectFrom(ctx context.Context, fd int, m []byte, off int64) error {
	for i := 0; i < len(m); i += directChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := pwriteAll(fd, m[i:min(i+directChunk, len(m))], off+int64(i)); err != nil {
			return err
		}
	}
	return nil
}

// pwriteAll writes all of b at off.
func pwriteAll(fd int, b []byte, off int64) error {
	for done := 0; done < len(b); {
		k, err := unix.Pwrite(fd, b[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		done += k
	}
	return nil
}

// putPacked stores references to blocks in a pack, in one batch.
func (s *Blockstore) putPacked(refs map[string]packRef) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	if err := setPackRefs(wb, refs); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("store pack references: %w", err)
	}
	s.signal.fire()
	return nil
}

// setPackRefs adds references to packed blocks, by multihash, to wb.
func setPackRefs(wb *badger.WriteBatch, refs map[string]packRef) error {
	for h, r := range refs {
		if err := wb.SetEntry(badger.NewEntry(blockKey(mh.Multihash(h)), r.encode()).WithMeta(packMeta)); err != nil {
			return fmt.Errorf("store pack reference: %w", err)
		}
	}
	return nil
}

// Compaction: a pack in which at least compactDeadMin bytes and more than
// half of the bytes belong to no block any more is rewritten: its live
// blocks are appended to the current pack and it is removed. Without it a
// shared pack would keep every block it ever held until its last one went.
const compactDeadMin = 32 << 20

// compactLiveMax bounds the live bytes one GC moves (and so the references
// it holds: at most this over packAppendMin); the rest waits for the next.
const compactLiveMax = 256 << 20

// tidyPacks deletes the packs no block refers to any more (after a GC, or
// left by an import cut short) and compacts the mostly dead ones, except
// packs modified since notBefore: an import may be writing them.
func (s *Blockstore) tidyPacks(notBefore time.Time) error {
	dir := s.packDir()
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	live, err := s.liveBytesByPack(nil)
	if err != nil {
		return err
	}
	compact := map[string]bool{}
	var moving int64
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(notBefore) {
			continue
		}
		used, ok := live[name]
		if !ok {
			if err := s.removePack(name); err != nil {
				return err
			}
			continue
		}
		if dead := info.Size() - used; dead >= compactDeadMin && dead > used && moving+used <= compactLiveMax {
			compact[name] = true
			moving += used
		}
	}
	if len(compact) == 0 {
		return nil
	}
	return s.compactPacks(compact)
}

func (s *Blockstore) removePack(name string) error {
	s.packs.forget(name)
	if err := os.Remove(filepath.Join(s.packDir(), name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// liveBytesByPack sums, per pack, the bytes of the blocks that refer to it;
// with visit set, it is called with every reference besides.
func (s *Blockstore) liveBytesByPack(visit func(key []byte, r packRef) error) (map[string]int64, error) {
	live := map[string]int64{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: blockPrefix, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if it.Item().UserMeta() != packMeta {
				continue
			}
			if err := it.Item().Value(func(v []byte) error {
				r, err := decodePackRef(v)
				if err != nil {
					return nil // unreadable: the block reads as missing anyway
				}
				live[r.pack] += int64(r.length)
				if visit != nil {
					return visit(it.Item().Key(), r)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return live, err
}

// compactPacks moves the live blocks of the named packs to the current
// pack, then removes each pack all of whose blocks moved. A block that
// cannot be read or fails its check stays where it is, with its pack.
func (s *Blockstore) compactPacks(names map[string]bool) error {
	type move struct {
		key []byte
		ref packRef
	}
	var moves []move
	if _, err := s.liveBytesByPack(func(key []byte, r packRef) error {
		if names[r.pack] {
			moves = append(moves, move{key: bytes.Clone(key), ref: r})
		}
		return nil
	}); err != nil {
		return err
	}
	stuck := map[string]bool{}
	for len(moves) > 0 {
		n := min(len(moves), packBatch)
		batch := moves[:n]
		moves = moves[n:]
		var bs []blocks.Block
		for _, m := range batch {
			h := mh.Multihash(m.key[len(blockPrefix):])
			c := cid.NewCidV1(cid.Raw, h)
			data, err := s.readRefChecked(c, m.ref)
			if err != nil {
				stuck[m.ref.pack] = true
				continue
			}
			b, err := blocks.NewBlockWithCid(data, c)
			if err != nil {
				stuck[m.ref.pack] = true
				continue
			}
			bs = append(bs, b)
		}
		if len(bs) == 0 {
			continue
		}
		refs, err := s.appendPacked(bs)
		if err != nil {
			return fmt.Errorf("compact packs: %w", err)
		}
		if err := s.putPacked(refs); err != nil {
			return fmt.Errorf("compact packs: %w", err)
		}
	}
	for name := range names {
		if !stuck[name] {
			if err := s.removePack(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// packBatch is how many pack references are written at once.
const packBatch = 1024

// chunkIntoPack packs a large file: it is copied into a new pack while its
// bytes are chunked and hashed, so the import costs the longer of the two,
// not their sum. A file the page cache holds is copied by the kernel and
// chunked from the cache (chunkAndCopy); one it does not hold is read once
// past it, for both (chunkUncached). If the source's size or times changed
// meanwhile, the chunks are taken again from the copy, which nothing else
// writes: the leaves are always the pack's bytes. The leaves this store lacks are then stored as
// references into the pack; a pack no leaf ended up in (the file was here
// already) is removed at once.
func (im *importer) chunkIntoPack(ctx context.Context, src *os.File, size int64) ([]leaf, error) {
	bs := im.s.blocks
	before, err := fstatOf(src)
	if err != nil {
		return nil, err
	}
	pack, name, err := bs.newPack()
	if err != nil {
		return nil, fmt.Errorf("new pack: %w", err)
	}
	defer pack.Close()
	stored := 0
	defer func() {
		if stored == 0 {
			os.Remove(pack.Name())
		}
	}()
	leaves, err := im.chunkUncached(ctx, src, pack.Name(), size)
	if err != nil {
		return nil, err
	}
	if leaves == nil {
		if leaves, err = im.chunkAndCopy(ctx, src, pack, size); err != nil {
			return nil, err
		}
	}
	if after, err := fstatOf(src); err != nil || after != before {
		// Written to while we read it: chunk the copy instead.
		if leaves, err = im.chunkSplit(ctx, pack, size); err != nil {
			return nil, err
		}
	}
	// The leaves lie in the pack in order; those the store lacks are
	// stored as references to their place.
	refs := map[string]packRef{}
	flush := func() error {
		if err := bs.putPacked(refs); err != nil {
			return err
		}
		for _, r := range refs {
			im.batch.newBlocks.Add(1)
			im.batch.newBytes.Add(int64(r.length))
		}
		stored += len(refs)
		clear(refs)
		return nil
	}
	var off int64
	for _, l := range leaves {
		// The CRC was taken of the bytes hashed, which are the pack's: the
		// source's bytes if its stat did not change during the copy, else
		// the copy's own.
		r := packRef{pack: name, offset: off, length: int(l.fileBytes), sum: l.sum, hasSum: true}
		off += int64(l.fileBytes)
		if has, err := bs.Has(ctx, l.cid); err != nil {
			return nil, err
		} else if !has {
			refs[string(l.cid.Hash())] = r
		}
		if len(refs) == packBatch {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return leaves, nil
}

// chunkAndCopy has the kernel copy src into the pack while the chunkers
// read it, both through the page cache.
func (im *importer) chunkAndCopy(ctx context.Context, src, pack *os.File, size int64) ([]leaf, error) {
	copied := make(chan error, 1)
	cctx, stopCopy := context.WithCancel(ctx)
	defer stopCopy()
	go func() {
		err := copyDirect(cctx, src, pack.Name(), size)
		if errors.Is(err, errNoDirect) {
			err = copyIntoPack(cctx, src, pack, size)
		}
		copied <- err
	}()
	leaves, err := im.chunkSplit(ctx, src, size)
	if err != nil {
		stopCopy()
		<-copied
		return nil, err
	}
	if err := <-copied; err != nil {
		return nil, fmt.Errorf("copy into a pack: %w", err)
	}
	return leaves, nil
}

// Blocks from outside (bitswap, the bulk stream, CARs) and chunks of files
// under packMinSize are appended to a shared pack when they are raw leaves
// at least packAppendMin long: smaller ones stay in badger, where their
// reference would be a good part of their size. Badger writes its value log
// through a memory mapping, which on these machines cost 1.5 to 10 times a
// write(2) of the same bytes; a fetch of the Go tree spent a sixth of its
// CPU time there. A pack takes appends up to packRotateSize.
const (
	packAppendMin  = 4 << 10
	packRotateSize = 1 << 30
)

// packAppender is the pack that blocks are appended to now.
type packAppender struct {
	mu   sync.Mutex
	name string // "" until the first append, and after a rotation
	size int64
}

// packable reports whether b goes to a pack rather than into badger.
func (s *Blockstore) packable(c cid.Cid, size int) bool {
	return size >= packAppendMin && c.Prefix().Codec == cid.Raw && s.packDir() != ""
}

// appendPacked appends the blocks' bytes to the current pack and returns
// their references, by multihash.
func (s *Blockstore) appendPacked(bs []blocks.Block) (map[string]packRef, error) {
	a := s.appender
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.name == "" || a.size >= packRotateSize {
		f, name, err := s.newPack()
		if err != nil {
			return nil, err
		}
		f.Close()
		a.name, a.size = name, 0
	}
	f, err := os.OpenFile(filepath.Join(s.packDir(), a.name), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w := packWriters.Get().(*bufio.Writer)
	w.Reset(f)
	defer func() { w.Reset(nil); packWriters.Put(w) }()
	refs := make(map[string]packRef, len(bs))
	size := a.size
	for _, b := range bs {
		data := b.RawData()
		if _, err := w.Write(data); err != nil {
			name := a.name
			a.name = "" // as below
			return nil, fmt.Errorf("append to pack %s: %w", name, err)
		}
		refs[string(b.Cid().Hash())] = packRef{pack: a.name, offset: size, length: len(data), sum: crc32.Checksum(data, castagnoli), hasSum: true}
		size += int64(len(data))
	}
	if err := w.Flush(); err != nil {
		// What was written is dead space; the next append goes to a new pack
		// rather than after bytes of unknown length.
		name := a.name
		a.name = ""
		return nil, fmt.Errorf("append to pack %s: %w", name, err)
	}
	a.size = size
	return refs, nil
}

// packWriters buffer appends to packs: a MiB each, so not one a batch.
var packWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 1<<20) }}

// rotatePack makes the next append start a new pack, so that a GC never
// removes a pack that is still being appended to.
func (s *Blockstore) rotatePack() {
	s.appender.mu.Lock()
	s.appender.name = ""
	s.appender.mu.Unlock()
}
