// Package workspace is what a user does with workspaces on this peer:
// import a directory (Add), fetch a root into a directory while its blocks
// arrive (Get), diff two roots, merge a root's changes into a directory,
// collect garbage, and move CAR files in and out. It holds the lock that
// keeps GC away from everything that adds blocks no pin reaches yet. It
// knows the mesh only through the Fetcher it is given; it must not import
// node.
package workspace

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/dag/fswatch"
	"github.com/cortex-peer/cortex-peer/node/datadir/locate"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Fetcher makes roots local from the mesh (exchange.Exchange).
type Fetcher interface {
	Fetch(ctx context.Context, root cid.Cid, stall time.Duration, progress func(dag.FetchProgress)) (dag.FetchProgress, error)
	FetchAgainst(ctx context.Context, base, root cid.Cid, stall time.Duration, progress func(dag.FetchProgress)) (dag.FetchProgress, error)
	FetchAll(ctx context.Context, stall time.Duration, roots ...cid.Cid) (dag.FetchProgress, error)
}

// Locker is the lock that keeps GC (which takes it for writing) away from
// imports, fetches, merges and tasks (which take it for reading).
type Locker interface {
	Lock()
	Unlock()
	RLock()
	RUnlock()
}

// Service carries out workspace operations on this peer's store.
type Service struct {
	dags  *dag.Store
	watch *fswatch.Watcher // nil: every import scans
	fetch Fetcher
	gc    Locker
}

// New returns the workspace service over dags. Imports of directories are
// watched with watch (nil: every import scans).
func New(dags *dag.Store, watch *fswatch.Watcher, fetch Fetcher, gc Locker) *Service {
	return &Service{dags: dags, watch: watch, fetch: fetch, gc: gc}
}

// Add imports dir (incrementally) and pins it as that directory's latest
// root. A tree that holds a peer's data dir is refused. progress, if set, is called as files are read.
func (s *Service) Add(ctx context.Context, dir string, noIndex bool, progress func(dag.ImportProgress)) (dag.ImportResult, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	res, err := s.dags.Import(ctx, dir, dag.ImportOptions{NoIndex: noIndex, Watch: s.watch, Progress: progress, Refuse: locate.RefuseDataDir})
	if err != nil {
		return res, err
	}
	return res, s.dags.Pin("ws:"+dir, res.Root)
}

// GetPin names the pin a Get leaves on the root it wrote to dest.
func GetPin(dest string) string { return "get:" + dest }

// GetResult is what a Get fetched and wrote.
type GetResult struct {
	Fetch  dag.FetchProgress
	Export dag.ExportResult
}

// Get fetches root into dest. The tree is written while its blocks arrive:
// the export waits for a block not here yet until the fetch stores it, or
// fails with the fetch. progress is called with a phase ("fetching",
// "writing"), a count (blocks, files) and bytes, from two goroutines; the
// root is pinned once whole. Symlinks that point out of the tree are
// skipped and listed in the result unless allowEscapingLinks.
func (s *Service) Get(ctx context.Context, root cid.Cid, dest string, stall time.Duration, allowEscapingLinks bool, progress func(phase string, done, bytes uint64)) (GetResult, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type fetched struct {
		p   dag.FetchProgress
		err error
	}
	fetchDone := make(chan struct{})
	var f fetched
	go func() {
		defer close(fetchDone)
		f.p, f.err = s.fetch.Fetch(ctx, root, stall, func(p dag.FetchProgress) {
			progress("fetching", uint64(p.Fetched), uint64(p.FetchedBytes))
		})
	}()
	blocks := s.dags.Blocks()
	await := func(ctx context.Context, c cid.Cid, arrived <-chan struct{}) error {
		select {
		case <-arrived:
			return nil
		case <-fetchDone:
			if has, err := blocks.Has(ctx, c); err != nil || has {
				return err
			}
			if f.err != nil {
				return f.err
			}
			return fmt.Errorf("block %s: the fetch ended without it: %w", c, errdefs.ErrNotFound)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ex, err := s.dags.Export(ctx, root, dest, dag.ExportOptions{Await: await, AllowEscapingLinks: allowEscapingLinks, Progress: func(r dag.ExportResult) {
		progress("writing", uint64(r.Files), uint64(r.Bytes))
	}})
	if err != nil {
		cancel()
		<-fetchDone
		if f.err != nil {
			return GetResult{}, f.err // the cause, rather than the export that waited on it
		}
		return GetResult{}, err
	}
	// The export read every block of the tree, some handed over on their
	// way to the store: the tree is whole here unless the store refused
	// some (a full disk), which the fetch says.
	<-fetchDone
	if f.err != nil {
		if whole, werr := s.dags.Whole(ctx, root); werr != nil || !whole {
			return GetResult{}, fmt.Errorf("%s is written, but this peer's store could not keep all of %s: %w", dest, root, f.err)
		}
	}
	if err := s.dags.Pin(GetPin(dest), root); err != nil {
		return GetResult{}, err
	}
	return GetResult{Fetch: f.p, Export: ex}, nil
}

// Diff fetches both roots and lists what changed from one to the other. A
// fetch gives up when no block arrives for stall (0: the default).
func (s *Service) Diff(ctx context.Context, from, to cid.Cid, stall time.Duration) ([]dag.Change, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	if _, err := s.fetch.FetchAll(ctx, stall, from, to); err != nil {
		return nil, err
	}
	return s.dags.Diff(ctx, from, to)
}

// MergeResult is what a Merge fetched and what it did to the directory.
type MergeResult struct {
	Fetched dag.FetchProgress
	Report  dag.MergeReport
}

// Merge applies base -> theirs to dir, three-way: base is fetched whole,
// theirs only where it differs from base.
func (s *Service) Merge(ctx context.Context, base, theirs cid.Cid, dir string) (MergeResult, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	fetched, err := s.fetch.FetchAll(ctx, 0, base)
	if err != nil {
		return MergeResult{}, err
	}
	delta, err := s.fetch.FetchAgainst(ctx, base, theirs, 0, nil)
	if err != nil {
		return MergeResult{}, err
	}
	fetched.Fetched += delta.Fetched
	fetched.FetchedBytes += delta.FetchedBytes
	rep, err := s.dags.Merge(ctx, base, theirs, dir)
	if err != nil {
		return MergeResult{Fetched: fetched}, err
	}
	return MergeResult{Fetched: fetched, Report: rep}, nil
}

// GC removes the blocks no pin reaches.
func (s *Service) GC(ctx context.Context) (dag.GCResult, error) {
	s.gc.Lock()
	defer s.gc.Unlock()
	return s.dags.GC(ctx)
}

// Verify checks the blocks root needs (cid.Undef: every pin's and every
// stored block), with GC held off so that nothing goes missing meanwhile.
func (s *Service) Verify(ctx context.Context, root cid.Cid, progress func(dag.VerifyReport)) (dag.VerifyReport, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	return s.dags.Verify(ctx, root, progress)
}

// ExportCAR fetches root, giving up when no block arrives for stall (0:
// the default), and writes its DAG as a CAR to w.
func (s *Service) ExportCAR(ctx context.Context, root cid.Cid, stall time.Duration, w io.Writer) error {
	s.gc.RLock()
	defer s.gc.RUnlock()
	if _, err := s.fetch.Fetch(ctx, root, stall, nil); err != nil {
		return err
	}
	_, err := s.dags.ExportCAR(ctx, root, w)
	return err
}

// ImportCAR imports a CAR from r and pins each of its roots.
func (s *Service) ImportCAR(ctx context.Context, r io.Reader) (roots []cid.Cid, blocks int, err error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	roots, blocks, err = s.dags.ImportCAR(ctx, r)
	if err != nil {
		return nil, 0, err
	}
	for _, root := range roots {
		if err := s.dags.Pin("car:"+root.String(), root); err != nil {
			return nil, 0, err
		}
	}
	return roots, blocks, nil
}
