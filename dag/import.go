package dag

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	chunk "github.com/ipfs/boxo/chunker"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/hamt"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"golang.org/x/sys/unix"

	"github.com/cortex-peer/cortex-peer/dag/fswatch"
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
	// racyMaxWait is the longest an import waits for the clock to pass the
	// timestamps of files changed just before it, so that the index can
	// vouch for them (see racy). Beyond it (file systems with timestamps
	// of a second or two) such files are read again by the next import.
	racyMaxWait = 50 * time.Millisecond
)

// ImportOptions tune an import. The zero value is ready to use.
type ImportOptions struct {
	// Workers scan directories and hash files in parallel; default
	// GOMAXPROCS.
	Workers int
	// NoIndex reads every file, ignoring and not updating the index.
	NoIndex bool
	// IndexFrom and IndexTo name the index an import trusts and the one it
	// writes, instead of the directory's own (its absolute path). A copy of
	// a tree whose files keep their stat (an overlay mount of layers the
	// index was written for) imports through the index of the tree it was
	// made from, and its own goes under another name; every record is then
	// written, not only the changed ones.
	IndexFrom, IndexTo string
	// Progress, if set, is called after each file with running totals. It is
	// called from several goroutines and must be cheap.
	Progress func(ImportProgress)
	// Watch, if set, watches the tree from this import on: a later import
	// of the same tree that nothing touched since (no inotify event in any
	// of its directories, no hard-linked file, no GC) returns this one's
	// result without a stat. It is not used with NoIndex, IndexFrom or
	// IndexTo.
	Watch *fswatch.Watcher
	// Refuse, if set, is asked about every directory the import lists,
	// the root included, with a test of the names it holds; a non-empty
	// answer says why the directory must not be imported, and the import
	// fails with ErrRefused naming it. (A peer refuses its data dirs: an
	// identity, a mesh key and a token must never travel in a workspace.)
	// A directory .cortexignore leaves out is never listed nor asked about.
	Refuse func(has func(name string) bool) string

	// topMode records the mode of the directory imported, as of any
	// other: for a merge, which compares a subdirectory with its node. An
	// Import leaves the root's mode out: the root is the directory the
	// user names (a task's is a mount point), and its mode is theirs.
	topMode bool
}

// ErrRefused classifies an import that met a directory ImportOptions.Refuse
// refused.
var ErrRefused = fmt.Errorf("refused to import: %w", errdefs.ErrPermissionDenied)

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
	// Unchanged: the tree is watched and nothing changed in it since the
	// last import, which this result repeats; nothing was scanned.
	Unchanged bool
	// DirsListed counts the directories listed: all of them, unless the
	// tree is watched and the import listed only those that changed.
	DirsListed int
}

type entryKind uint8

const (
	kindFile entryKind = iota
	kindDir
	kindSymlink
)

// treeDir is a directory being imported.
type treeDir struct {
	rel  string          // slash-separated path from the root, "" for the root
	ign  *ignore.Matcher // patterns in force for its entries; nil for none
	ents []treeEntry     // sorted by name; nil once built
	// rec is the directory's record from the last import; recOK says it
	// decoded, sameEntries that every entry has the name and kind it had
	// then and every file and symlink the same stat.
	rec         dirRecord
	recOK       bool
	sameEntries bool

	cid   cid.Cid
	tsize uint64 // cumulative size of the subtree's blocks, for links

	// counts of the directory's own entries
	files, symlinks, ignored, skipped int
	bytes                             int64

	ino  uint64      // its inode, as its parent's listing said
	mode os.FileMode // the mode its node records (recordedDirMode), once listed
	kept bool        // a watched directory nothing changed under: not listed, its record stands
	tot  totals      // of the whole subtree, once built
}

// subdirEntry is the entry of d for its subdirectory name (inode ino),
// under the patterns ign.
func subdirEntry(d *treeDir, name string, ign *ignore.Matcher, ino uint64) treeEntry {
	return treeEntry{name: name, kind: kindDir, sub: &treeDir{rel: path.Join(d.rel, name), ign: ign, ino: ino}}
}

// totals count a subtree, the directory itself included.
type totals struct {
	files, dirs, symlinks, ignored, skipped uint64
	bytes                                   uint64
}

func (t *totals) add(o totals) {
	t.files += o.files
	t.dirs += o.dirs
	t.symlinks += o.symlinks
	t.ignored += o.ignored
	t.skipped += o.skipped
	t.bytes += o.bytes
}

// treeEntry is one entry of a directory being imported.
type treeEntry struct {
	name  string
	kind  entryKind
	st    fileStat // files and symlinks
	sub   *treeDir // directories
	cid   cid.Cid
	tsize uint64

	oldCid  []byte // the CID recorded by the last import, if the kind is the same
	reused  bool   // a file or symlink whose stat the record vouches for: oldCid is its CID
	hash    bool   // a file to read
	vouched bool   // its stat may vouch for its CID in the next import (see racy)
	gone    bool   // removed while the import ran
}

// Import turns the directory dir into a UnixFS DAG in the store and returns
// its root. Unchanged files (same size, mtime, ctime, inode and mode as at
// the last import of dir) are not read again, and directories none of whose
// entries changed are not rebuilt.
func (s *Store) Import(ctx context.Context, dir string, opts ImportOptions) (ImportResult, error) {
	return s.importDir(ctx, dir, opts, false)
}

// importDir imports dir; with dryRun it only computes the root's CID.
func (s *Store) importDir(ctx context.Context, dir string, opts ImportOptions, dryRun bool) (ImportResult, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	if abs == "/" {
		// A whole file system holds /proc, /sys and every user's secrets:
		// refused plainly, rather than failing halfway on some /proc entry.
		return ImportResult{}, fmt.Errorf("import /: the root of the file system is not a workspace; choose a project directory: %w", errdefs.ErrInvalid)
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	// Read the clock before any stat: see racy.
	im := &importer{s: s, root: abs, opts: opts, ref: coarseNow(), batch: &blockBatch{s: s, dryRun: dryRun}, loaded: make(chan struct{})}
	fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return ImportResult{}, fmt.Errorf("import %s: not a directory: %w", dir, errdefs.ErrInvalid)
	}
	if err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, &os.PathError{Op: "open", Path: abs, Err: err})
	}
	top := &treeDir{rel: ""}
	if opts.Watch != nil && !opts.NoIndex && !dryRun && opts.IndexFrom == "" && opts.IndexTo == "" {
		prev, scan := s.watchedImport(opts.Watch, abs, fd, top)
		if scan == nil && prev != nil {
			unix.Close(fd)
			return prev.res, nil
		}
		if scan != nil {
			im.scan = scan
			defer func() { scan.End(false, nil) }() // unless ended with a result below
		}
	}
	// The index loads while the tree is scanned.
	if opts.NoIndex {
		// The generation is read before any block is written (see
		// markCompleteAt).
		if im.gen, err = s.gcGeneration(); err != nil {
			unix.Close(fd)
			return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
		}
		close(im.loaded)
	} else {
		go func() {
			defer close(im.loaded)
			im.idx, im.loadErr = s.loadIndex(im.indexFrom())
			if im.idx != nil {
				im.gen = im.idx.gen
			}
		}()
	}
	defer func() { <-im.loaded }()
	if err := im.scanTree(ctx, top, fd); err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	<-im.loaded
	if im.loadErr != nil {
		return ImportResult{}, im.loadErr
	}
	if err := im.hashFiles(ctx, top); err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	if im.idx != nil {
		im.put = map[string][]byte{}
	}
	if err := im.buildDir(ctx, top); err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	if err := im.batch.flush(); err != nil {
		return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
	}
	// A dry run stores nothing, so the index must not name what it made.
	if !dryRun {
		if im.idx != nil {
			if im.copyIndex() {
				im.idx.records, im.idx.legacy, im.idx.wsGen = nil, nil, nil // nothing of the source to delete
			}
			im.spareKept()
			if err := s.saveIndex(im.indexTo(), im.idx, im.put); err != nil {
				return ImportResult{}, err
			}
		}
		if err := s.markCompleteAt(top.cid, im.gen); err != nil {
			return ImportResult{}, fmt.Errorf("import %s: %w", dir, err)
		}
	}
	r := im.res
	r.Root = top.cid
	r.NewBlocks = int(im.batch.newBlocks.Load())
	r.NewBytes = im.batch.newBytes.Load()
	r.FilesRead = int(im.filesRead.Load())
	r.BytesRead = im.bytesRead.Load()
	r.DirsListed = int(im.listed.Load())
	if im.scan != nil {
		// A file with another link may change through a directory that is
		// not watched: such a tree is scanned every time.
		again := r
		again.FilesRead, again.BytesRead, again.NewBlocks, again.NewBytes = 0, 0, 0, 0
		again.Unchanged, again.DirsListed = true, 0
		im.scan.End(!im.multiLinked.Load(), &watchedResult{res: again, gen: im.gen})
	}
	return r, nil
}

// NewWatcher starts a watcher for ImportOptions.Watch; close it when done.
func NewWatcher() (*fswatch.Watcher, error) {
	return fswatch.New(0, ignore.FileName)
}

// watchedResult is what a watched tree's last import left: its result as a
// re-import with no change reports it, and the GC generation it was made
// in (a GC since may have taken its blocks).
type watchedResult struct {
	res ImportResult
	gen uint64
}

// watchedImport begins a watched import of the tree at abs (open as fd):
// it returns the last import's result if nothing changed since, else the
// scan to add the tree's directories to (nil if the tree cannot be
// watched).
func (s *Store) watchedImport(w *fswatch.Watcher, abs string, fd int, top *treeDir) (*watchedResult, *fswatch.Scan) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil
	}
	top.ino = st.Ino
	still := func(v any) bool {
		prev, ok := v.(*watchedResult)
		if !ok {
			return false
		}
		gen, err := s.gcGeneration()
		return err == nil && gen == prev.gen
	}
	scan, v, err := w.Begin(abs, st.Dev, st.Ino, still)
	if err != nil {
		return nil, nil
	}
	if scan == nil {
		return v.(*watchedResult), nil
	}
	return nil, scan
}

// indexFrom and indexTo are the names of the index read and written.
func (im *importer) indexFrom() string {
	if im.opts.IndexFrom != "" {
		return im.opts.IndexFrom
	}
	return im.root
}

func (im *importer) indexTo() string {
	if im.opts.IndexTo != "" {
		return im.opts.IndexTo
	}
	return im.root
}

// copyIndex is whether the import writes an index other than the one it read.
func (im *importer) copyIndex() bool { return im.indexFrom() != im.indexTo() }

type importer struct {
	s     *Store
	root  string
	opts  ImportOptions
	batch *blockBatch
	ref   int64 // coarseNow before the first stat

	loaded  chan struct{} // closed once idx, gen and loadErr are set
	idx     *indexSnapshot
	gen     uint64 // the GC generation before the import
	loadErr error

	files    []hashJob         // to read, in tree order
	deferred []hashJob         // racy when first met: read last (see hashDeferred)
	put      map[string][]byte // records to write
	res      ImportResult
	mu       sync.Mutex // guards deferred while hashing

	filesDone atomic.Int64
	filesRead atomic.Int64
	bytesRead atomic.Int64

	scan        *fswatch.Scan // when the tree is watched (ImportOptions.Watch)
	multiLinked atomic.Bool   // a regular file with more than one link was seen
	listed      atomic.Int64  // directories listed
	keptMu      sync.Mutex
	kept        map[string]bool // directories kept unlisted (see treeDir.kept)
}

// keepDir keeps the subdirectory d unlisted if the watcher says nothing
// changed under it and its record, with the subtree's totals, can stand
// for it (no GC since it was written).
func (im *importer) keepDir(d *treeDir) bool {
	if im.scan == nil || im.idx == nil || !im.idx.trusted || !im.scan.Keep(d.rel, d.ino) {
		return false
	}
	raw, ok := im.idx.records[d.rel]
	if !ok {
		return false
	}
	rec, err := decodeRecord(raw)
	if err != nil || !rec.hasTot {
		return false
	}
	d.rec, d.recOK, d.sameEntries, d.kept = rec, true, true, true
	im.keptMu.Lock()
	defer im.keptMu.Unlock()
	if im.kept == nil {
		im.kept = map[string]bool{}
	}
	im.kept[d.rel] = true
	return true
}

// spareKept takes the records of kept subtrees out of those left over
// after the build (which saveIndex deletes as gone).
func (im *importer) spareKept() {
	if len(im.kept) == 0 {
		return
	}
	for rel := range im.idx.records {
		for p := rel; p != "" && p != "."; p = path.Dir(p) {
			if im.kept[p] {
				delete(im.idx.records, rel)
				break
			}
		}
	}
}

type hashJob struct {
	d *treeDir
	e *treeEntry
}

func (j hashJob) rel() string { return path.Join(j.d.rel, j.e.name) }

// scanTree lists and stats the tree under top (open as fd), directories in
// parallel on up to opts.Workers goroutines, depth-first on each. Every
// directory is opened relative to its parent's descriptor and never
// through a symlink.
func (im *importer) scanTree(ctx context.Context, top *treeDir, fd int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Listing and stat-ing is system calls that wait on the kernel's
	// locks and caches more than they compute: more goroutines than cores
	// overlap them (a re-import of the Go tree went from 31 to 19 ms with 8
	// on 2 cores).
	sem := make(chan struct{}, scanWorkers(im.opts.Workers)-1) // goroutines besides this one
	var wg sync.WaitGroup
	bufs := sync.Pool{New: func() any { b := make([]byte, direntBufSize); return &b }}
	var visit func(d *treeDir, fd int, buf []byte)
	visit = func(d *treeDir, fd int, buf []byte) {
		defer unix.Close(fd)
		if ctx.Err() != nil {
			return
		}
		if im.scan != nil {
			im.scan.Add(fd, d.rel, d.ino) // before the listing: no change after it is missed
		}
		im.listed.Add(1)
		if d.rel != "" || im.opts.topMode {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				cancel(fmt.Errorf("%s: %w", path.Join(".", d.rel), err))
				return
			}
			d.mode = recordedDirMode(os.FileMode(st.Mode))
		}
		if err := im.scanDir(d, fd, buf); err != nil {
			cancel(fmt.Errorf("%s: %w", path.Join(".", d.rel), err))
			return
		}
		for i := range d.ents {
			e := &d.ents[i]
			if e.kind != kindDir || ctx.Err() != nil || im.keepDir(e.sub) {
				continue
			}
			cfd, err := openDirAt(fd, e.name)
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				e.gone = true // removed or replaced since it was listed
				continue
			}
			if err != nil {
				cancel(fmt.Errorf("%s: %w", path.Join(d.rel, e.name), err))
				return
			}
			select {
			case sem <- struct{}{}:
				wg.Go(func() {
					defer func() { <-sem }()
					b := bufs.Get().(*[]byte)
					defer bufs.Put(b)
					visit(e.sub, cfd, *b)
				})
			default:
				visit(e.sub, cfd, buf)
			}
		}
	}
	visit(top, fd, make([]byte, direntBufSize))
	wg.Wait()
	return context.Cause(ctx)
}

// scanDir lists the directory d (open as fd), honouring .cortexignore
// files, stats its entries and compares them with its record: files the
// record vouches for keep their CID, the others are to be read.
func (im *importer) scanDir(d *treeDir, fd int, buf []byte) error {
	ds, err := readDirents(fd, buf)
	if err != nil {
		return err
	}
	if im.opts.Refuse != nil {
		has := func(name string) bool {
			return slices.ContainsFunc(ds, func(de dirent) bool { return de.name == name })
		}
		if why := im.opts.Refuse(has); why != "" {
			where := d.rel
			if where == "" {
				where = "the directory itself"
			}
			return fmt.Errorf("%s: %s: %w", where, why, ErrRefused)
		}
	}
	ign := d.ign
	for _, de := range ds {
		if de.name == ignore.FileName && (de.typ == unix.DT_REG || de.typ == unix.DT_UNKNOWN) {
			content, err := readFileAt(fd, de.name)
			if err == nil {
				ign = ign.Child(d.rel, content)
			} else if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ELOOP) && !errors.Is(err, errNotRegular) {
				return fmt.Errorf("%s: %w", ignore.FileName, err)
			}
		}
	}
	<-im.loaded
	if im.idx != nil {
		if rec, ok := im.idx.records[d.rel]; ok {
			d.rec, err = decodeRecord(rec)
			d.recOK = err == nil
		}
	}
	// In a watched tree, a file or symlink no event named since the last
	// import, found with the inode its record has, keeps the record's stat
	// (see fswatch.Scan.Quiet): a changed directory costs one listing, not a
	// stat of each of its entries.
	var recorded map[string]fileStat
	if im.scan != nil && d.recOK {
		if quiet := im.scan.Quiet(d.rel); quiet != nil {
			recorded = make(map[string]fileStat, len(d.rec.ents))
			for _, e := range d.rec.ents {
				if e.kind != kindDir && quiet(string(e.name)) {
					recorded[string(e.name)] = e.st
				}
			}
		}
	}
	d.ents = make([]treeEntry, 0, len(ds))
	for _, de := range ds {
		isDir := de.typ == unix.DT_DIR
		var st fileStat
		statted := false
		var links uint64
		if de.typ == unix.DT_UNKNOWN {
			if st, links, err = fstatat(fd, de.name); errors.Is(err, unix.ENOENT) {
				continue // removed since it was listed
			} else if err != nil {
				return fmt.Errorf("%s: %w", de.name, err)
			}
			isDir, statted = st.isDir(), true
		}
		if ign != nil && ign.Match(path.Join(d.rel, de.name), isDir) || isScratch(de.name) {
			d.ignored++
			continue
		}
		if isDir {
			ino := de.ino
			if statted {
				ino = st.ino
			}
			d.ents = append(d.ents, subdirEntry(d, de.name, ign, ino))
			continue
		}
		if prev, ok := recorded[de.name]; ok && !statted && prev.ino == de.ino && de.typ != unix.DT_UNKNOWN && uint32(de.typ) == (prev.mode&unix.S_IFMT)>>12 {
			st, statted = prev, true
		}
		if !statted {
			if st, links, err = fstatat(fd, de.name); errors.Is(err, unix.ENOENT) {
				continue
			} else if err != nil {
				return fmt.Errorf("%s: %w", de.name, err)
			}
		}
		switch {
		case st.isRegular():
			if links > 1 {
				im.multiLinked.Store(true)
			}
			d.ents = append(d.ents, treeEntry{name: de.name, kind: kindFile, st: st})
			d.files++
			d.bytes += st.size
		case st.isSymlink():
			d.ents = append(d.ents, treeEntry{name: de.name, kind: kindSymlink, st: st})
			d.symlinks++
		case st.isDir(): // replaced by a directory since it was listed
			d.ents = append(d.ents, subdirEntry(d, de.name, ign, st.ino))
		default:
			d.skipped++
		}
	}
	slices.SortFunc(d.ents, func(a, b treeEntry) int { return strings.Compare(a.name, b.name) })

	d.sameEntries = d.recOK && len(d.rec.ents) == len(d.ents)
	old := d.rec.ents
	for i := range d.ents {
		e := &d.ents[i]
		for len(old) > 0 && string(old[0].name) < e.name {
			old = old[1:]
		}
		var o *recEntry
		if len(old) > 0 && string(old[0].name) == e.name && old[0].kind == e.kind {
			o = &old[0]
			e.oldCid = o.cid
		}
		if e.kind == kindDir {
			d.sameEntries = d.sameEntries && o != nil
			continue
		}
		if o != nil && o.vouched && o.st == e.st && im.stillStored(o.cid) {
			e.reused, e.vouched, e.tsize = true, true, o.tsize
			continue
		}
		d.sameEntries = false
		if e.kind == kindFile {
			e.hash = true
			continue
		}
		target, err := readlinkAt(fd, e.name)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
			e.gone = true // removed, or replaced by something else, since it was listed
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		nd, err := symlinkNode(target)
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		if err := im.batch.add(nd); err != nil {
			return err
		}
		// A symlink is replaced, never changed in place, but its inode
		// number may be reused: racy applies as to files.
		e.cid, e.tsize, e.vouched = nd.Cid(), uint64(len(nd.RawData())), !e.st.racy(im.ref)
	}
	return nil
}

// stillStored reports whether a recorded CID can be trusted to be in the
// store: surely if no GC ran since the workspace's records were verified,
// else if its root block is there (an import stores a file's blocks
// together, and GC keeps or drops a pinned DAG whole).
func (im *importer) stillStored(c []byte) bool {
	if im.idx.trusted {
		return true
	}
	k, err := cid.Cast(c)
	if err != nil {
		return false
	}
	has, _ := im.s.blocks.Has(context.Background(), k)
	return has
}

// hashFiles reads and hashes the files the index did not vouch for, on
// several workers; files found racy are read last, once the clock has
// moved past their timestamps.
func (im *importer) hashFiles(ctx context.Context, top *treeDir) error {
	var collect func(d *treeDir)
	collect = func(d *treeDir) {
		if d.kept {
			t := d.rec.tot
			im.res.Dirs += int(t.dirs)
			im.res.Files += int(t.files)
			im.res.Symlinks += int(t.symlinks)
			im.res.Bytes += int64(t.bytes)
			im.res.Ignored += int(t.ignored)
			im.res.Skipped += int(t.skipped)
			return
		}
		im.res.Dirs++
		im.res.Files += d.files
		im.res.Symlinks += d.symlinks
		im.res.Bytes += d.bytes
		im.res.Ignored += d.ignored
		im.res.Skipped += d.skipped
		for i := range d.ents {
			e := &d.ents[i]
			switch {
			case e.gone:
			case e.kind == kindDir:
				collect(e.sub)
			case e.hash:
				im.files = append(im.files, hashJob{d, e})
			}
		}
	}
	collect(top)
	// Deferring is pointless when no index will be saved.
	vouch := im.idx != nil && !im.batch.dryRun
	if err := im.hashAll(ctx, im.files, hashPass{ref: im.ref, first: vouch, vouch: vouch}); err != nil {
		return err
	}
	if len(im.deferred) == 0 {
		return nil
	}
	return im.hashDeferred(ctx)
}

// hashDeferred reads the files that were racy when first met. It first
// waits until the kernel's clock has passed their timestamps, if that is
// soon, so that their stat, taken again, can vouch for them in the next
// import; a file stamped further ahead (a clock set wrong, a file system
// with coarse timestamps) is read at once and is read again next time.
func (im *importer) hashDeferred(ctx context.Context) error {
	jobs := im.deferred
	im.deferred = nil
	now := coarseNow()
	var until int64
	for _, j := range jobs {
		if u := j.e.st.racyUntil(); time.Duration(u-now) <= racyMaxWait {
			until = max(until, u)
		}
	}
	deadline := time.Now().Add(2 * racyMaxWait) // in case the clock misbehaves
	for now <= until && time.Now().Before(deadline) {
		t := time.NewTimer(time.Duration(until-now) + time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		now = coarseNow()
	}
	// Each file is vouched for only if its stat, taken now, is not racy.
	return im.hashAll(ctx, jobs, hashPass{ref: coarseNow(), vouch: true})
}

// hashPass says how hashFile treats the stat of the open file: ref is a
// coarseNow reading taken before it; in the first pass a file whose stat is
// racy against ref is put aside in im.deferred, in the second it is read
// but not vouched for, and without vouch nothing is.
type hashPass struct {
	ref          int64
	first, vouch bool
}

// hashAll hashes jobs on opts.Workers goroutines.
func (im *importer) hashAll(ctx context.Context, jobs []hashJob, pass hashPass) error {
	if len(jobs) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := make(chan hashJob)
	var wg sync.WaitGroup
	for range im.opts.Workers {
		wg.Go(func() {
			for j := range ch {
				if err := im.hashFile(ctx, j, pass); err != nil {
					cancel(fmt.Errorf("%s: %w", j.rel(), err))
				}
			}
		})
	}
feed:
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	return context.Cause(ctx)
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
	c, _, err := im.hashReader(ctx, recordedFileMode(info.Mode()), info.Size(), f)
	return c, err
}

// hashFile chunks one file and stores its blocks. The stat the index keeps
// is taken from the open file, before it is read. O_NONBLOCK keeps a file
// replaced by a FIFO since the scan from blocking the open.
func (im *importer) hashFile(ctx context.Context, j hashJob, pass hashPass) error {
	f, err := os.OpenFile(filepath.Join(im.root, filepath.FromSlash(j.rel())), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
		j.e.gone = true // removed or replaced by a symlink since the scan
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := fstatOf(f)
	if err != nil {
		return err
	}
	if !st.isRegular() {
		j.e.gone = true // replaced since the scan; the next import will see what by
		return nil
	}
	j.e.st = st
	racy := st.racy(pass.ref)
	if pass.first && racy {
		im.mu.Lock()
		im.deferred = append(im.deferred, j)
		im.mu.Unlock()
		return nil
	}
	c, tsize, err := im.hashReader(ctx, st.unixfsMode(), st.size, f)
	if err != nil {
		return err
	}
	j.e.cid, j.e.tsize, j.e.vouched = c, tsize, pass.vouch && !racy
	im.progress()
	return nil
}

// hashReader chunks a file's content; mode is the UnixFS mode to record (0
// for none) and size its expected length.
func (im *importer) hashReader(ctx context.Context, mode os.FileMode, size int64, f io.Reader) (cid.Cid, uint64, error) {
	im.filesRead.Add(1)
	var leaves []leaf
	var err error
	if osf, ok := f.(*os.File); ok && size >= packMinSize && !im.batch.dryRun && im.s.blocks.packDir() != "" {
		if err := im.s.blocks.checkRoom(size); err != nil {
			return cid.Undef, 0, err
		}
		leaves, err = im.chunkIntoPack(ctx, osf, size)
	} else if size >= parallelHashSize && im.workers() > 1 {
		leaves, err = im.chunkParallel(ctx, f, im.storeLeaf)
	} else {
		leaves, err = im.chunkSerial(ctx, f)
	}
	if err != nil {
		return cid.Undef, 0, err
	}
	switch {
	case len(leaves) == 0 && mode == 0:
		return emptyFileCID, 0, nil
	case len(leaves) == 1 && mode == 0:
		return leaves[0].cid, leaves[0].tsize, nil
	}
	// Build the tree bottom-up: groups of linksPerNode until one node is
	// left (an empty file with a mode is one node of no links).
	level := leaves
	for {
		last := len(level) <= linksPerNode
		var next []leaf
		for i := 0; i == 0 || i < len(level); i += linksPerNode {
			group := level[i:min(i+linksPerNode, len(level))]
			m := os.FileMode(0)
			if last {
				m = mode
			}
			nd, l, err := fileNode(group, m)
			if err != nil {
				return cid.Undef, 0, err
			}
			if err := im.batch.add(nd); err != nil {
				return cid.Undef, 0, err
			}
			next = append(next, l)
		}
		if last {
			return next[0].cid, next[0].tsize, nil
		}
		level = next
	}
}

// scanWorkers is how many goroutines scan the tree for workers hashers:
// at most 32, since each holds its directories open as it descends.
func scanWorkers(workers int) int { return min(max(8, 4*workers), 32) }

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

// hashLeaf is the leaf a chunk makes, stored nowhere (see chunkIntoPack).
func (im *importer) hashLeaf(data []byte) (leaf, error) {
	im.bytesRead.Add(int64(len(data)))
	return leaf{cid: rawLeaf(data).Cid(), fileBytes: uint64(len(data)), tsize: uint64(len(data)), sum: crc32.Checksum(data, castagnoli)}, nil
}

// chunkParallel chunks a large file on one goroutine and turns the chunks
// into leaves with leafOf (storeLeaf, hashLeaf) on others, in order. At
// most 2 chunks per hasher are in memory.
func (im *importer) chunkParallel(ctx context.Context, f io.Reader, leafOf func([]byte) (leaf, error)) ([]leaf, error) {
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
				l, err := leafOf(j.data)
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

// buildDir builds directory nodes bottom-up. A directory whose entries all
// match its record, subdirectories' CIDs included, keeps its recorded CID
// and costs nothing more; one that changed is rebuilt and its record
// rewritten, and a record that would come out the same is not.
func (im *importer) buildDir(ctx context.Context, d *treeDir) error {
	var old []byte
	if im.idx != nil {
		old = im.idx.records[d.rel]
		delete(im.idx.records, d.rel) // what is left once the tree is built is gone
	}
	if d.kept {
		c, err := cid.Cast(d.rec.cid)
		if err != nil {
			return fmt.Errorf("%s: index: %w", path.Join(".", d.rel), err)
		}
		d.cid, d.tsize, d.tot, d.ents = c, d.rec.tsize, d.rec.tot, nil
		return nil
	}
	d.tot = totals{files: uint64(d.files), dirs: 1, symlinks: uint64(d.symlinks), ignored: uint64(d.ignored), skipped: uint64(d.skipped), bytes: uint64(d.bytes)}
	same := d.sameEntries && im.idx != nil && im.idx.trusted
	n := 0
	for i := range d.ents {
		e := &d.ents[i]
		if e.gone {
			same = false
			continue
		}
		if e.kind == kindDir {
			if err := im.buildDir(ctx, e.sub); err != nil {
				return err
			}
			d.tot.add(e.sub.tot)
			e.cid, e.tsize, e.sub = e.sub.cid, e.sub.tsize, nil
			same = same && string(e.oldCid) == e.cid.KeyString()
		}
		d.ents[n] = *e
		n++
	}
	d.ents = d.ents[:n]
	// A record written before records kept their subtree's totals is
	// written again, so that the directory can be kept unlisted next time.
	same = same && d.rec.hasTot && d.rec.tot == d.tot && d.rec.mode == d.mode
	if same {
		if c, err := cid.Cast(d.rec.cid); err == nil {
			d.cid, d.tsize, d.ents = c, d.rec.tsize, nil
			if im.put != nil && im.copyIndex() {
				im.put[d.rel] = old
			}
			return nil
		}
	}
	var estimate int
	for i := range d.ents {
		e := &d.ents[i]
		if e.reused {
			c, err := cid.Cast(e.oldCid)
			if err != nil {
				return fmt.Errorf("%s: index: %w", path.Join(d.rel, e.name), err)
			}
			e.cid = c
		}
		estimate += len(e.name) + e.cid.ByteLen()
	}
	if estimate > shardThreshold {
		if err := im.buildShard(ctx, d); err != nil {
			return err
		}
	} else {
		nd := ft.EmptyDirNode()
		if d.mode != 0 {
			nd = ft.EmptyDirNodeWithStat(d.mode, time.Time{})
		}
		if err := nd.SetCidBuilder(cidBuilder); err != nil {
			return err
		}
		var tsize uint64
		for _, e := range d.ents {
			if err := nd.AddRawLink(e.name, &ipld.Link{Name: e.name, Cid: e.cid, Size: e.tsize}); err != nil {
				return fmt.Errorf("%s: %w", path.Join(d.rel, e.name), err)
			}
			tsize += e.tsize
		}
		if err := im.batch.add(nd); err != nil {
			return err
		}
		d.cid, d.tsize = nd.Cid(), tsize+uint64(len(nd.RawData()))
	}
	if im.put != nil {
		if rec := encodeRecord(d); im.copyIndex() || !bytes.Equal(rec, old) {
			im.put[d.rel] = rec
		}
	}
	d.ents = nil // free the subtree
	return nil
}

// buildShard builds a HAMT-sharded directory with boxo's hamt, which writes
// its inner nodes through the DAG service; the batch must be flushed first
// so the service sees the children.
func (im *importer) buildShard(ctx context.Context, d *treeDir) error {
	if err := im.batch.flush(); err != nil {
		return err
	}
	sh, err := hamt.NewShard(im.s.dags, hamtFanout)
	if err != nil {
		return err
	}
	sh.SetCidBuilder(cidBuilder)
	sh.SetStat(d.mode, time.Time{})
	var tsize uint64
	for _, e := range d.ents {
		if err := sh.SetLink(ctx, e.name, &ipld.Link{Name: e.name, Cid: e.cid, Size: e.tsize}); err != nil {
			return fmt.Errorf("%s: %w", path.Join(d.rel, e.name), err)
		}
		tsize += e.tsize
	}
	nd, err := sh.Node()
	if err != nil {
		return fmt.Errorf("%s: shard: %w", path.Join(".", d.rel), err)
	}
	d.cid, d.tsize = nd.Cid(), tsize+uint64(len(nd.RawData()))
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

// scratchMarks name the files a peer writes beside their final place
// while it works (a merge's, an export's, a get's), renamed into place when
// whole. One left by a peer killed in the middle is never imported: it is
// no file of the user's.
var scratchMarks = []string{".cortex-merge-", ".cortex-export-", ".cortex-partial-", ".cortex-get-"}

func isScratch(name string) bool {
	if !strings.HasPrefix(name, ".") {
		return false
	}
	for _, m := range scratchMarks {
		if strings.Contains(name, m) {
			return true
		}
	}
	return false
}
