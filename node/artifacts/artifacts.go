// Package artifacts moves files and trees of any size by content: put one
// into the block store (pinned, so the mesh can fetch it), get one from
// the mesh into a path, read a byte range of a file fetching only the
// blocks that hold it. Nothing travels in a message: every byte moves as
// verified blocks of a UnixFS DAG.
package artifacts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/node/datadir/locate"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Config tunes the service.
type Config struct {
	// ReadChunk is how many bytes of a range are fetched and read at once:
	// the blocks of the next chunk are asked for while this one is sent.
	ReadChunk int64
}

// DefaultConfig is the configuration a peer runs with.
func DefaultConfig() Config { return Config{ReadChunk: 4 << 20} }

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.ReadChunk <= 0 {
		return fmt.Errorf("artifacts: read chunk %d: %w", c.ReadChunk, errdefs.ErrInvalid)
	}
	return nil
}

// Fetcher makes blocks local from the mesh (exchange.Exchange).
type Fetcher interface {
	FetchRange(ctx context.Context, root cid.Cid, off, n int64, stall time.Duration) error
	// FileLeaves makes the inner nodes of the file root local and lists
	// its leaves; dag.ErrNotFile when root is not a file.
	FileLeaves(ctx context.Context, root cid.Cid, stall time.Duration) ([]dag.FileLeaf, int64, error)
	// FetchLeaves fetches leaves of root from every provider at once,
	// handing each to deliver once, and says what each provider sent.
	FetchLeaves(ctx context.Context, root cid.Cid, leaves []dag.FileLeaf, stall time.Duration, deliver func(dag.FileLeaf, dag.VerifiedBlock) error) (map[peer.ID]int64, error)
}

// Trees fetches a root into a path, written while its blocks arrive
// (workspace.Service.Get through an adapter): a file or a directory.
type Trees interface {
	Get(ctx context.Context, root cid.Cid, dest string, stall time.Duration, progress func(phase string, done, bytes uint64)) (fetchedBytes, writtenBytes int64, err error)
}

// Progress is the state of a long get.
type Progress struct {
	Phase      string
	Done       uint64 // files written (a tree), or leaves (a file)
	Bytes      uint64 // written
	TotalBytes uint64 // of a file; 0 when not known (a tree)
}

// Traffic counts the bytes received from each peer (p2p.Host).
type Traffic interface {
	Traffic(p peer.ID) (in, out int64)
	Connected() []peer.ID
}

// Locker keeps GC away (it takes the lock for writing) while blocks are
// added that no pin reaches yet.
type Locker interface {
	RLock()
	RUnlock()
}

// Service is the artifacts capability of a peer.
type Service struct {
	cfg     Config
	dags    *dag.Store
	fetch   Fetcher
	trees   Trees
	traffic Traffic
	gc      Locker
	log     *slog.Logger
}

// New returns the service.
func New(cfg Config, dags *dag.Store, fetch Fetcher, trees Trees, traffic Traffic, gc Locker, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, dags: dags, fetch: fetch, trees: trees, traffic: traffic, gc: gc, log: log}, nil
}

// Pin names the pin that keeps an artifact put on this peer.
func Pin(root cid.Cid) string { return "artifact:" + root.String() }

// Unpin removes the pin a Put of root made here, so that GC may free its
// blocks (those nothing else pins). A root this peer did not put is
// ErrNotFound.
func (s *Service) Unpin(root cid.Cid) error {
	if err := s.dags.Unpin(Pin(root)); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("unpin %s: not put on this peer: %w", root, errdefs.ErrNotFound)
		}
		return err
	}
	s.log.Info("artifact unpinned", "cid", root)
	return nil
}

// PutResult is what a put stored.
type PutResult struct {
	Root  cid.Cid
	Bytes int64 // of the file, or of every file of the tree
	Dir   bool
}

// Put adds the file or directory at path (a symlink is followed) to the
// block store and pins it, so that any peer can get it by its CID. A
// directory is imported as `ws add` does, refusing a tree that holds a
// peer's data dir. progress, if set, is called with running totals.
func (s *Service) Put(ctx context.Context, path string, progress func(files, bytes uint64)) (PutResult, error) {
	if !filepath.IsAbs(path) {
		return PutResult{}, fmt.Errorf("put %q: want an absolute path: %w", path, errdefs.ErrInvalid)
	}
	info, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return PutResult{}, fmt.Errorf("put %s: no such file or directory: %w", path, errdefs.ErrNotFound)
		}
		return PutResult{}, fmt.Errorf("put %s: %w", path, err)
	}
	s.gc.RLock()
	defer s.gc.RUnlock()
	var res PutResult
	switch {
	case info.IsDir():
		im, err := s.dags.Import(ctx, path, dag.ImportOptions{NoIndex: true, Refuse: locate.RefuseDataDir, Progress: func(p dag.ImportProgress) {
			if progress != nil {
				progress(uint64(p.FilesRead), uint64(p.BytesRead))
			}
		}})
		if err != nil {
			return PutResult{}, fmt.Errorf("put %s: %w", path, err)
		}
		res = PutResult{Root: im.Root, Bytes: im.Bytes, Dir: true}
	case info.Mode().IsRegular():
		f, err := os.Open(path)
		if err != nil {
			return PutResult{}, fmt.Errorf("put %s: %w", path, err)
		}
		root, err := s.dags.AddFile(ctx, f)
		f.Close()
		if err != nil {
			return PutResult{}, fmt.Errorf("put %s: %w", path, err)
		}
		res = PutResult{Root: root, Bytes: info.Size()}
		if progress != nil {
			progress(1, uint64(info.Size()))
		}
	default:
		return PutResult{}, fmt.Errorf("put %s: not a regular file or a directory (%s): %w", path, info.Mode().Type(), errdefs.ErrInvalid)
	}
	if err := s.dags.Pin(Pin(res.Root), res.Root); err != nil {
		return PutResult{}, err
	}
	s.log.Info("artifact put", "cid", res.Root, "path", path, "bytes", res.Bytes)
	return res, nil
}

// GetResult is what a get fetched and wrote.
type GetResult struct {
	Root         cid.Cid
	Path         string
	Bytes        int64 // written
	FetchedBytes int64 // came over the mesh (0: all here already)
	// Providers are the bytes received from each peer during the get.
	Providers map[peer.ID]int64
}

// Get fetches root from the mesh into dest (a file or a directory, as root
// is). A dest that exists is refused unless force, which replaces it once
// the new copy is whole. A file is fetched from every peer that holds it
// at once, into a partial copy beside dest (see partialPath) that a get
// cut short leaves behind and the next get of the same CID completes; a
// tree is written to a scratch copy renamed into place at the end.
func (s *Service) Get(ctx context.Context, root cid.Cid, dest string, force bool, stall time.Duration, progress func(Progress)) (GetResult, error) {
	if !filepath.IsAbs(dest) {
		return GetResult{}, fmt.Errorf("get %s: destination %q: want an absolute path: %w", root, dest, errdefs.ErrInvalid)
	}
	dest = filepath.Clean(dest)
	if progress == nil {
		progress = func(Progress) {}
	}
	exists := false
	if _, err := os.Lstat(dest); err == nil {
		if !force {
			return GetResult{}, fmt.Errorf("get %s: %s exists; choose another path or pass --force to replace it: %w", root, dest, errdefs.ErrAlreadyExists)
		}
		exists = true
	}
	progress(Progress{Phase: "finding"})
	leaves, size, err := s.fetch.FileLeaves(ctx, root, stall)
	switch {
	case errors.Is(err, dag.ErrNotFile):
		return s.getTree(ctx, root, dest, exists, stall, progress)
	case err != nil:
		return GetResult{}, fmt.Errorf("get %s: %w", root, err)
	}
	return s.getFile(ctx, root, leaves, size, dest, stall, progress)
}

// getTree fetches the tree root into dest, through a scratch copy when
// dest exists (and is to be replaced).
func (s *Service) getTree(ctx context.Context, root cid.Cid, dest string, exists bool, stall time.Duration, progress func(Progress)) (GetResult, error) {
	if removed, err := dag.RemoveStaleScratch(filepath.Dir(dest), dag.ScratchGet); err != nil {
		s.log.Warn("remove stale get scratch", "err", err)
	} else if len(removed) > 0 {
		s.log.Info("removed scratch paths an interrupted get left", "dir", filepath.Dir(dest), "paths", removed)
	}
	target := dest
	if exists {
		target = dag.ScratchPath(dest, dag.ScratchGet, root.String()[len(root.String())-8:])
		_ = os.RemoveAll(target)
	}
	before := s.received()
	fetched, written, err := s.trees.Get(ctx, root, target, stall, func(phase string, done, bytes uint64) {
		progress(Progress{Phase: phase, Done: done, Bytes: bytes})
	})
	if err != nil {
		if target != dest {
			_ = os.RemoveAll(target) // a forced get's scratch copy (the tree's own get leaves nothing at dest)
		}
		return GetResult{}, err
	}
	if target != dest {
		if err := os.RemoveAll(dest); err != nil {
			return GetResult{}, fmt.Errorf("get %s: replace %s: %w", root, dest, err)
		}
		if err := os.Rename(target, dest); err != nil {
			return GetResult{}, fmt.Errorf("get %s: replace %s: %w", root, dest, err)
		}
	}
	res := GetResult{Root: root, Path: dest, Bytes: written, FetchedBytes: fetched, Providers: map[peer.ID]int64{}}
	if fetched > 0 {
		for p, n := range s.received() {
			if d := n - before[p]; d > 0 {
				res.Providers[p] = d
			}
		}
	}
	s.log.Info("artifact got", "cid", root, "path", dest, "bytes", written, "fetched", fetched, "providers", len(res.Providers))
	return res, nil
}

// received is the bytes received so far from each connected peer.
func (s *Service) received() map[peer.ID]int64 {
	out := map[peer.ID]int64{}
	for _, p := range s.traffic.Connected() {
		out[p], _ = s.traffic.Traffic(p)
	}
	return out
}

// Size is the size of the file root, fetching its root node if need be.
func (s *Service) Size(ctx context.Context, root cid.Cid, stall time.Duration) (int64, error) {
	if err := s.fetch.FetchRange(ctx, root, 0, 0, stall); err != nil {
		return 0, err
	}
	return s.dags.FileSize(ctx, root)
}

// Read writes the bytes [off, off+n) of the file root to w (n < 0: to the
// end), fetching only the blocks that hold them, a chunk ahead of what it
// writes. A range past the end gives the bytes that exist (none).
func (s *Service) Read(ctx context.Context, root cid.Cid, off, n int64, stall time.Duration, w io.Writer) (int64, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s: offset %d: %w", root, off, errdefs.ErrInvalid)
	}
	size, err := s.Size(ctx, root, stall)
	if err != nil {
		return 0, err
	}
	end := size
	if n >= 0 && off+n < size {
		end = off + n
	}
	if off >= end {
		return 0, nil
	}
	s.gc.RLock() // the blocks fetched stay until read
	defer s.gc.RUnlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunk := s.cfg.ReadChunk
	type ahead struct {
		off, n int64
		done   chan error
	}
	start := func(o int64) *ahead {
		a := &ahead{off: o, n: min(chunk, end-o), done: make(chan error, 1)}
		go func() { a.done <- s.fetch.FetchRange(ctx, root, a.off, a.n, stall) }()
		return a
	}
	buf := make([]byte, chunk)
	var written int64
	next := start(off)
	for next != nil {
		cur := next
		next = nil
		if o := cur.off + cur.n; o < end {
			next = start(o) // the next chunk's blocks come while this one is written
		}
		if err := <-cur.done; err != nil {
			if next != nil {
				cancel()
				<-next.done
			}
			return written, err
		}
		got, err := s.dags.ReadFileAt(ctx, root, buf[:cur.n], cur.off)
		if err != nil && !errors.Is(err, io.EOF) {
			return written, fmt.Errorf("read %s at %d: %w", root, cur.off, err)
		}
		k, err := w.Write(buf[:got])
		written += int64(k)
		if err != nil {
			if next != nil {
				cancel()
				<-next.done
			}
			return written, err
		}
	}
	return written, nil
}
