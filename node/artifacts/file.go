package artifacts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"golang.org/x/sys/unix"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// A file is got into a partial copy beside its destination, named after
// the CID, written at each leaf's offset as leaves arrive from whichever
// provider sends them, then fsynced and renamed into place. A get that is
// cut (Ctrl-C, a kill, a full disk, every provider gone) leaves the
// partial copy; the next get of the same CID to the same path checks what
// it holds, leaf by leaf against the leaves' hashes, and fetches only the
// rest. The destination itself never holds a half-written file.

// partialPath is where a get of root to dest keeps its partial copy.
func partialPath(dest string, root cid.Cid) string {
	name := filepath.Base(dest)
	if len(name) > 100 {
		name = name[:100]
	}
	c := root.String()
	return filepath.Join(filepath.Dir(dest), "."+name+".cortex-partial-"+c[max(0, len(c)-16):])
}

// storeQueue bounds the blocks handed to the store goroutine and not yet
// stored (at most a MiB each).
const storeQueue = 32

// getFile fetches the file root, whose leaves are known, into dest.
func (s *Service) getFile(ctx context.Context, root cid.Cid, leaves []dag.FileLeaf, size int64, dest string, stall time.Duration, progress func(Progress)) (GetResult, error) {
	partial := partialPath(dest, root)
	f, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return GetResult{}, fmt.Errorf("get %s: %w", root, diskError(err, partial))
	}
	keep := true // the partial copy, unless it became dest
	defer func() {
		f.Close()
		if !keep {
			_ = os.Remove(partial)
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return GetResult{}, fmt.Errorf("get %s: %w", root, err)
	}
	// What the partial copy already holds, checked against the leaves.
	progress(Progress{Phase: "checking", TotalBytes: uint64(size)})
	held, heldBytes, err := s.checkPartial(ctx, f, st.Size(), leaves)
	if err != nil {
		return GetResult{}, fmt.Errorf("get %s: check %s: %w", root, partial, err)
	}
	// Reserve the space at once (what a resumed copy lacks too), so that a
	// full disk shows now, not half-way.
	if err := reserve(f, size); err != nil {
		return GetResult{}, fmt.Errorf("get %s: %w", root, diskError(err, partial))
	}
	// The leaves written so far (Progress.Done), and their bytes.
	var done, written atomic.Int64
	written.Store(heldBytes)
	for _, h := range held {
		if h {
			done.Add(1)
		}
	}
	report := func() {
		progress(Progress{Phase: "fetching", Done: uint64(done.Load()), Bytes: uint64(written.Load()), TotalBytes: uint64(size)})
	}
	// Leaves this store holds are copied from it, not fetched.
	var missing []dag.FileLeaf
	for i, l := range leaves {
		if held[i] {
			continue
		}
		data, ok, err := s.dags.LocalLeaf(ctx, l)
		if err != nil {
			return GetResult{}, fmt.Errorf("get %s: %w", root, err)
		}
		if !ok {
			missing = append(missing, l)
			continue
		}
		if _, err := f.WriteAt(data, l.Offset); err != nil {
			return GetResult{}, fmt.Errorf("get %s: %w", root, diskError(err, partial))
		}
		done.Add(1)
		written.Add(l.Size)
	}
	report()

	// The rest comes from the mesh: written at its offset, and stored (so
	// this peer can serve it in turn) by one goroutine in batches.
	stored := make(chan dag.VerifiedBlock, storeQueue)
	var storeWG sync.WaitGroup
	storeWG.Go(func() { s.storeBlocks(stored) })
	var last atomic.Int64
	providers, err := s.fetch.FetchLeaves(ctx, root, missing, stall, func(l dag.FileLeaf, b dag.VerifiedBlock) error {
		data, err := dag.LeafData(l, b)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(data, l.Offset); err != nil {
			return diskError(err, partial)
		}
		stored <- b.Copy(*storeBuffers.Get().(*[]byte))
		done.Add(1)
		written.Add(l.Size)
		if now := time.Now().UnixNano(); now-last.Load() > int64(100*time.Millisecond) {
			last.Store(now)
			report()
		}
		return nil
	})
	close(stored)
	storeWG.Wait()
	if err != nil {
		if ctx.Err() == nil {
			s.log.Info("artifact get stopped; the partial copy is kept for the next get", "cid", root, "partial", partial, "bytes", written.Load(), "err", err)
		}
		return GetResult{}, fmt.Errorf("get %s: %w (the %d bytes got are kept in %s: run the same get again to resume)", root, err, written.Load(), partial)
	}
	report()
	if err := f.Truncate(size); err != nil {
		return GetResult{}, fmt.Errorf("get %s: %w", root, diskError(err, partial))
	}
	if err := f.Sync(); err != nil {
		return GetResult{}, fmt.Errorf("get %s: %w", root, diskError(err, partial))
	}
	if err := replace(partial, dest); err != nil {
		return GetResult{}, fmt.Errorf("get %s: %w", root, err)
	}
	keep = false
	var fetched int64
	for _, n := range providers {
		fetched += n
	}
	s.log.Info("artifact got", "cid", root, "path", dest, "bytes", size, "fetched", fetched, "providers", len(providers), "resumed", heldBytes)
	return GetResult{Root: root, Path: dest, Bytes: size, FetchedBytes: fetched, Providers: providers}, nil
}

// replace renames from to dest, replacing a file or a directory there.
func replace(from, dest string) error {
	if st, err := os.Lstat(dest); err == nil && st.IsDir() {
		if err := os.RemoveAll(dest); err != nil {
			return fmt.Errorf("replace %s: %w", dest, err)
		}
	}
	if err := os.Rename(from, dest); err != nil {
		return fmt.Errorf("replace %s: %w", dest, err)
	}
	return nil
}

// storeBlocks stores the blocks sent on in batches, until in is closed. A
// store that fails (its disk full) is logged once and stops being fed:
// the file being written is what the get is for.
func (s *Service) storeBlocks(in <-chan dag.VerifiedBlock) {
	var failed bool
	batch := make([]dag.VerifiedBlock, 0, storeQueue)
	for b := range in {
		batch = append(batch[:0], b)
	more:
		for len(batch) < storeQueue {
			select {
			case b, ok := <-in:
				if !ok {
					break more
				}
				batch = append(batch, b)
			default:
				break more
			}
		}
		if !failed {
			if err := s.dags.Blocks().PutVerified(batch); err != nil {
				failed = true
				s.log.Warn("artifact get: blocks are not kept in the store (the file is still written)", "err", err)
			}
		}
		for _, b := range batch {
			data := b.Block().RawData()[:0]
			storeBuffers.Put(&data)
		}
	}
}

// storeBuffers hold the copies of blocks on their way to the store.
var storeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, dag.MaxBlockSize); return &b }}

// checkPartial reports which leaves the partial copy f (of size bytes)
// already holds, by hashing its bytes at each leaf's place against the
// leaf's CID, on every core; and the bytes they hold. A leaf held that
// the store lacks is stored. Only raw leaves can be checked this way; the
// others are fetched again.
func (s *Service) checkPartial(ctx context.Context, f *os.File, size int64, leaves []dag.FileLeaf) ([]bool, int64, error) {
	held := make([]bool, len(leaves))
	if size == 0 {
		return held, 0, nil
	}
	var next atomic.Int64
	var heldBytes atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			buf := make([]byte, 0, dag.MaxBlockSize)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(leaves) || ctx.Err() != nil {
					return
				}
				l := leaves[i]
				if l.Cid.Prefix().Codec != cid.Raw || l.Offset+l.Size > size || l.Size > dag.MaxBlockSize {
					continue
				}
				b := buf[:l.Size]
				if _, err := f.ReadAt(b, l.Offset); err != nil {
					continue
				}
				blk, err := blocks.NewBlockWithCid(b, l.Cid)
				if err != nil {
					continue
				}
				v, err := dag.Verify(blk)
				if err != nil {
					continue
				}
				held[i] = true
				heldBytes.Add(l.Size)
				// A leaf written before a crash may not have reached the
				// store: keep it there too, so this peer serves it in turn.
				if has, _ := s.dags.Blocks().Has(ctx, l.Cid); !has {
					if err := s.dags.Blocks().PutVerified([]dag.VerifiedBlock{v}); err != nil {
						s.log.Warn("artifact get: a held leaf is not kept in the store", "cid", l.Cid, "err", err)
					}
				}
			}
		})
	}
	wg.Wait()
	return held, heldBytes.Load(), ctx.Err()
}

// reserve makes f size bytes long with its blocks allocated where the
// file system can, so that a disk too small fails before the fetch.
func reserve(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return err
	}
	if size == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil
	}
	return err
}

// diskError says what a write error means for the user: a full disk is
// resource_exhausted.
func diskError(err error, path string) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("no space left on the device of %s: %w", path, errdefs.ErrResourceExhausted)
	}
	return err
}
