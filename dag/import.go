package dag

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	chunk "github.com/ipfs/boxo/chunker"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/hamt"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/cortex-peer/cortex-peer/dag/ignore"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Import tuning.
const (
	// shardThreshold: a directory whose links would exceed this many bytes
	// becomes a HAMT, as in Kubo.
	shardThreshold = 256 << 10
	hamtFanout     = 256
	// batchBytes is how much block data is written to badger at once.
	batchBytes = 16 << 20
)

// ImportOptions tune an import. The zero value is ready to use.
type ImportOptions struct {
	// Workers hash files in parallel; default GOMAXPROCS.
	Workers int
	// NoIndex reads every file, ignoring and not updating the index.
	NoIndex bool
	// Progress, if set, is called after each file with running totals. It is
	// called from several goroutines and must be cheap.
	Progress func(ImportProgress)
}

// ImportProgress are running totals of an import.
type ImportProgress struct {
	Files, FilesRead int
	BytesRead        int64
}

// ImportResult describes an imported tree.
type ImportResult struct {
	Root      cid.Cid
	Files     int   // regular files in the tree
	Dirs      int   // directories, the root included
	Symlinks  int   // symbolic links
	Bytes     int64 // bytes of the regular files
	FilesRead int   // files read because the index did not vouch for them
	BytesRead int64
	NewBlocks int   // blocks the store did not have
	NewBytes  int64 // their bytes
	Ignored   int   // paths excluded by .cortexignore
	Skipped   int   // devices, sockets and pipes, which a workspace cannot hold
}

type entryKind int

const (
	kindFile entryKind = iota
	kindDir
	kindSymlink
)

type treeEntry struct {
	name  string
	rel   string // slash-separated path from the root
	kind  entryKind
	info  fs.FileInfo
	dir   []*treeEntry // children, for directories
	cid   cid.Cid
	tsize uint64 // cumulative size of the subtree's blocks, for links
	size  uint64 // file bytes
}

// Import turns the directory dir into a UnixFS DAG in the store and returns
// its root. Unchanged files (same size, mtime, ctime, inode and mode as at
// the last import of dir) are not read again.
func (s *Store) Import(ctx context.Context, dir string, opts ImportOptions) (ImportResult, error) {
	return s.importDir(ctx, dir, opts, false)
}

// importDir imports dir; with dryRun it only computes the root's CID.
func (s *Store) importDir(ctx context.Context, dir string, opts ImportOptions, dryRun bool) (ImportResult, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	info, err := os.Lstat(abs)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	if !info.IsDir() {
		return ImportResult{}, fmt.Errorf("import %s: not a directory: %w", dir, errdefs.ErrInvalid)
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	im := &importer{s: s, root: abs, opts: opts, batch: &blockBatch{s: s, dryRun: dryRun}}
	if !opts.NoIndex {
		if im.index, err = s.loadIndex(abs); err != nil {
			return ImportResult{}, err
		}
		if im.gcGen, err = s.gcGeneration(); err != nil {
			return ImportResult{}, err
		}
	}
	top := &treeEntry{rel: "", kind: kindDir, info: info}
	if err := im.scan(ctx, top, ignore.New()); err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	if err := im.hashFiles(ctx); err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	if err := im.buildDir(ctx, top); err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	if err := im.batch.flush(); err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	if !opts.NoIndex {
		if err := s.saveIndex(abs, im.index, im.newIndex); err != nil {
			return ImportResult{}, err
		}
	}
	if !dryRun {
		if err := s.markComplete(top.cid); err != nil {
			return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
		}
	}
	r := im.res
	r.Root = top.cid
	r.NewBlocks = int(im.batch.newBlocks.Load())
	r.NewBytes = im.batch.newBytes.Load()
	r.FilesRead = int(im.filesRead.Load())
	r.BytesRead = im.bytesRead.Load()
	return r, nil
}

type importer struct {
	s     *Store
	root  string
	opts  ImportOptions
	batch *blockBatch

	gcGen    uint64
	index    map[string]indexEntry // as loaded
	newIndex map[string]indexEntry // as it will be saved
	files    []*treeEntry          // to hash
	res      ImportResult

	filesDone atomic.Int64
	filesRead atomic.Int64
	bytesRead atomic.Int64
}

// scan walks the tree depth-first, honouring .cortexignore files, and
// resolves files the index vouches for.
func (im *importer) scan(ctx context.Context, d *treeEntry, ign *ignore.Matcher) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if im.newIndex == nil {
		im.newIndex = map[string]indexEntry{}
	}
	im.res.Dirs++
	full := filepath.Join(im.root, filepath.FromSlash(d.rel))
	ents, err := os.ReadDir(full)
	if err != nil {
		return err
	}
	for _, de := range ents {
		if de.Name() == ignore.FileName && de.Type().IsRegular() {
			content, err := os.ReadFile(filepath.Join(full, de.Name()))
			if err != nil {
				return err
			}
			ign = ign.Child(d.rel, content)
		}
	}
	for _, de := range ents {
		rel := path.Join(d.rel, de.Name())
		if ign.Match(rel, de.IsDir()) {
			im.res.Ignored++
			continue
		}
		info, err := de.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed while we walked
			}
			return err
		}
		e := &treeEntry{name: de.Name(), rel: rel, info: info}
		switch {
		case info.IsDir():
			e.kind = kindDir
			if err := im.scan(ctx, e, ign); err != nil {
				return err
			}
		case info.Mode()&fs.ModeSymlink != 0:
			e.kind = kindSymlink
			im.res.Symlinks++
		case info.Mode().IsRegular():
			e.kind = kindFile
			im.res.Files++
			im.res.Bytes += info.Size()
			st := statEntry(info)
			if old, ok := im.index[rel]; ok && old.sameStat(st) && im.stillStored(ctx, old) {
				e.cid, e.size, e.tsize = old.cid, uint64(info.Size()), old.tsize
				old.gcGen = im.gcGen
				im.newIndex[rel] = old
				break
			}
			im.files = append(im.files, e)
		default:
			im.res.Skipped++
			continue
		}
		d.dir = append(d.dir, e)
	}
	return nil
}

// stillStored reports whether an index entry's blocks can be trusted to be
// in the store: surely if no GC ran since it was written, else if its root
// block is there.
func (im *importer) stillStored(ctx context.Context, e indexEntry) bool {
	if e.gcGen == im.gcGen {
		return true
	}
	has, _ := im.s.blocks.Has(ctx, e.cid)
	return has
}

// hashFiles reads and hashes the files the index did not vouch for, on
// several workers.
func (im *importer) hashFiles(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan *treeEntry)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range im.opts.Workers {
		wg.Go(func() {
			for e := range jobs {
				if err := im.hashFile(ctx, e); err != nil {
					cancel(fmt.Errorf("%s: %w", e.rel, err))
					continue
				}
				mu.Lock()
				st := statEntry(e.info)
				st.cid, st.tsize, st.gcGen = e.cid, e.tsize, im.gcGen
				im.newIndex[e.rel] = st
				mu.Unlock()
				im.progress()
			}
		})
	}
feed:
	for _, e := range im.files {
		select {
		case jobs <- e:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

func (im *importer) progress() {
	done := im.filesDone.Add(1)
	if im.opts.Progress != nil {
		im.opts.Progress(ImportProgress{Files: im.res.Files, FilesRead: int(done), BytesRead: im.bytesRead.Load()})
	}
}

// fileCID computes the CID a regular file would import to, storing nothing.
func (s *Store) fileCID(ctx context.Context, f *os.File) (cid.Cid, error) {
	info, err := f.Stat()
	if err != nil {
		return cid.Undef, err
	}
	im := &importer{s: s, batch: &blockBatch{s: s, dryRun: true}}
	e := &treeEntry{info: info}
	if err := im.hashReader(ctx, e, f); err != nil {
		return cid.Undef, err
	}
	return e.cid, nil
}

// hashFile chunks one file and stores its blocks.
func (im *importer) hashFile(ctx context.Context, e *treeEntry) error {
	f, err := os.OpenFile(filepath.Join(im.root, filepath.FromSlash(e.rel)), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return im.hashReader(ctx, e, f)
}

// hashReader chunks a file's content (e.info gives its mode).
func (im *importer) hashReader(ctx context.Context, e *treeEntry, f io.Reader) error {
	im.filesRead.Add(1)
	var mode os.FileMode
	if e.info.Mode()&0o111 != 0 {
		mode = e.info.Mode().Perm()
	}
	var leaves []leaf
	var err error
	if e.info.Size() >= parallelHashSize && im.workers() > 1 {
		leaves, err = im.chunkParallel(ctx, f)
	} else {
		leaves, err = im.chunkSerial(ctx, f)
	}
	if err != nil {
		return err
	}
	var size uint64
	for _, l := range leaves {
		size += l.fileBytes
	}
	e.size = size
	switch {
	case len(leaves) == 0 && mode == 0:
		e.cid, e.tsize = emptyFileCID, 0
		return nil
	case len(leaves) == 1 && mode == 0:
		e.cid, e.tsize = leaves[0].cid, leaves[0].tsize
		return nil
	}
	// Build the tree bottom-up: groups of linksPerNode until one node is left.
	level := leaves
	for {
		last := len(level) <= linksPerNode
		var next []leaf
		for i := 0; i < len(level); i += linksPerNode {
			group := level[i:min(i+linksPerNode, len(level))]
			m := os.FileMode(0)
			if last {
				m = mode
			}
			nd, l, err := fileNode(group, m)
			if err != nil {
				return err
			}
			if err := im.batch.add(nd); err != nil {
				return err
			}
			next = append(next, l)
		}
		if last {
			e.cid, e.tsize = next[0].cid, next[0].tsize
			return nil
		}
		level = next
	}
}

// parallelHashSize: files at least this large are hashed by several
// goroutines while one reads and chunks (chunking is sequential by nature).
const parallelHashSize = 8 << 20

func (im *importer) workers() int {
	if im.opts.Workers > 0 {
		return im.opts.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// chunkSerial chunks and hashes a file on this goroutine.
func (im *importer) chunkSerial(ctx context.Context, f io.Reader) ([]leaf, error) {
	var leaves []leaf
	ch := chunk.NewBuzhash(f)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := ch.NextBytes()
		if errors.Is(err, io.EOF) {
			return leaves, nil
		}
		if err != nil {
			return nil, err
		}
		l, err := im.storeLeaf(data)
		if err != nil {
			return nil, err
		}
		leaves = append(leaves, l)
	}
}

func (im *importer) storeLeaf(data []byte) (leaf, error) {
	b := rawLeaf(data)
	if err := im.batch.add(b); err != nil {
		return leaf{}, err
	}
	im.bytesRead.Add(int64(len(data)))
	return leaf{cid: b.Cid(), fileBytes: uint64(len(data)), tsize: uint64(len(data))}, nil
}

// chunkParallel chunks a large file on one goroutine and hashes and stores
// the chunks on others. At most 2 chunks per hasher are in memory.
func (im *importer) chunkParallel(ctx context.Context, f io.Reader) ([]leaf, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type chunkJob struct {
		i    int
		data []byte
	}
	type chunkDone struct {
		i int
		l leaf
	}
	n := im.workers()
	jobs := make(chan chunkJob, n)
	results := make(chan chunkDone, n)
	var hashers sync.WaitGroup
	for range n {
		hashers.Go(func() {
			for j := range jobs {
				l, err := im.storeLeaf(j.data)
				if err != nil {
					cancel(err)
					continue
				}
				select {
				case results <- chunkDone{j.i, l}:
				case <-ctx.Done():
				}
			}
		})
	}
	var count int
	var readErr error
	go func() {
		defer close(jobs)
		ch := chunk.NewBuzhash(f)
		for i := 0; ; i++ {
			data, err := ch.NextBytes()
			if errors.Is(err, io.EOF) {
				count = i
				return
			}
			if err != nil {
				readErr = err
				cancel(err)
				return
			}
			select {
			case jobs <- chunkJob{i, data}:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		hashers.Wait()
		close(results)
	}()
	var leaves []leaf
	for r := range results {
		for len(leaves) <= r.i {
			leaves = append(leaves, leaf{})
		}
		leaves[r.i] = r.l
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	if readErr != nil {
		return nil, readErr
	}
	return leaves[:count], nil
}

// buildDir builds directory nodes bottom-up.
func (im *importer) buildDir(ctx context.Context, d *treeEntry) error {
	var estimate int
	for _, e := range d.dir {
		switch e.kind {
		case kindDir:
			if err := im.buildDir(ctx, e); err != nil {
				return err
			}
		case kindSymlink:
			target, err := os.Readlink(filepath.Join(im.root, filepath.FromSlash(e.rel)))
			if err != nil {
				return fmt.Errorf("%s: %w", e.rel, err)
			}
			nd, err := symlinkNode(target)
			if err != nil {
				return fmt.Errorf("%s: %w", e.rel, err)
			}
			if err := im.batch.add(nd); err != nil {
				return err
			}
			e.cid, e.tsize = nd.Cid(), uint64(len(nd.RawData()))
		}
		estimate += len(e.name) + e.cid.ByteLen()
	}
	slices.SortFunc(d.dir, func(a, b *treeEntry) int { return strings.Compare(a.name, b.name) })
	if estimate > shardThreshold {
		return im.buildShard(ctx, d)
	}
	nd := ft.EmptyDirNode()
	if err := nd.SetCidBuilder(cidBuilder); err != nil {
		return err
	}
	var tsize uint64
	for _, e := range d.dir {
		if err := nd.AddRawLink(e.name, &ipld.Link{Name: e.name, Cid: e.cid, Size: e.tsize}); err != nil {
			return fmt.Errorf("%s: %w", e.rel, err)
		}
		tsize += e.tsize
	}
	if err := im.batch.add(nd); err != nil {
		return err
	}
	d.cid, d.tsize = nd.Cid(), tsize+uint64(len(nd.RawData()))
	d.dir = nil // free the subtree
	return nil
}

// buildShard builds a HAMT-sharded directory with boxo's hamt, which writes
// its inner nodes through the DAG service; the batch must be flushed first
// so the service sees the children.
func (im *importer) buildShard(ctx context.Context, d *treeEntry) error {
	if err := im.batch.flush(); err != nil {
		return err
	}
	sh, err := hamt.NewShard(im.s.dags, hamtFanout)
	if err != nil {
		return err
	}
	sh.SetCidBuilder(cidBuilder)
	var tsize uint64
	for _, e := range d.dir {
		if err := sh.SetLink(ctx, e.name, &ipld.Link{Name: e.name, Cid: e.cid, Size: e.tsize}); err != nil {
			return fmt.Errorf("%s: %w", e.rel, err)
		}
		tsize += e.tsize
	}
	nd, err := sh.Node()
	if err != nil {
		return fmt.Errorf("%s: shard: %w", d.rel, err)
	}
	d.cid, d.tsize = nd.Cid(), tsize+uint64(len(nd.RawData()))
	d.dir = nil
	return nil
}

// blockBatch collects new blocks from several goroutines and writes them in
// large batches, skipping blocks the store has.
type blockBatch struct {
	s         *Store
	dryRun    bool // compute CIDs only, store nothing
	mu        sync.Mutex
	pending   []blocks.Block
	bytes     int
	newBlocks atomic.Int64
	newBytes  atomic.Int64
}

func (b *blockBatch) add(blk blocks.Block) error {
	if _, ok := inline(blk.Cid()); ok || b.dryRun {
		return nil
	}
	if has, err := b.s.blocks.Has(context.Background(), blk.Cid()); err != nil {
		return err
	} else if has {
		return nil
	}
	b.mu.Lock()
	b.pending = append(b.pending, blk)
	b.bytes += len(blk.RawData())
	var out []blocks.Block
	if b.bytes >= batchBytes {
		out, b.pending, b.bytes = b.pending, nil, 0
	}
	b.mu.Unlock()
	return b.write(out)
}

func (b *blockBatch) flush() error {
	b.mu.Lock()
	out := b.pending
	b.pending, b.bytes = nil, 0
	b.mu.Unlock()
	return b.write(out)
}

func (b *blockBatch) write(out []blocks.Block) error {
	if len(out) == 0 {
		return nil
	}
	// Two workers may hold the same new block (identical chunks); counting
	// it twice only skews the statistic, and badger keeps one.
	for _, blk := range out {
		b.newBlocks.Add(1)
		b.newBytes.Add(int64(len(blk.RawData())))
	}
	return b.s.blocks.putTrusted(out)
}
