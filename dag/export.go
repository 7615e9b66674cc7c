package dag

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sync"

	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// ExportResult counts what an export wrote.
type ExportResult struct {
	Files, Dirs, Symlinks int
	Bytes                 int64
}

// ExportOptions tune an export.
type ExportOptions struct {
	// Progress, if set, is called after each file with running totals.
	Progress func(ExportResult)
	// Await, if set, lets the export run while the blocks still arrive:
	// when block c is not here, Await is called with a channel closed at
	// the next arrival of blocks (stored, or verified and handed to the
	// export); it returns nil when c should be looked for again and an
	// error when c will not come.
	Await func(ctx context.Context, c cid.Cid, arrived <-chan struct{}) error
}

// Export materializes the tree at root into dest, which must not exist. The
// tree is written into a fresh directory beside dest through os.Root and
// renamed into place at the end, so a failed export leaves nothing at dest.
// Regular files and directories are written first and symlinks last, so
// nothing is ever written through a link; symlinks that are absolute or
// point outside dest are refused. Every block must be in the local store
// (see Fetch), unless opts.Await waits for those still arriving.
func (s *Store) Export(ctx context.Context, root cid.Cid, dest string, opts ExportOptions) (ExportResult, error) {
	if opts.Await != nil {
		var release func()
		s, release = s.awaiting(opts.Await)
		defer release()
	}
	dest = filepath.Clean(dest)
	if _, err := os.Lstat(dest); err == nil {
		return ExportResult{}, fmt.Errorf("export to %s: it exists already; choose a new path: %w", dest, errdefs.ErrAlreadyExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return ExportResult{}, fmt.Errorf("export to %s: %w", dest, err)
	}
	nd, kind, fsn, err := s.loadNode(ctx, root)
	if err != nil {
		return ExportResult{}, fmt.Errorf("export %s: %w", root, err)
	}
	parent := filepath.Dir(dest)
	tmp := filepath.Join(parent, "."+filepath.Base(dest)+".cortex-export-"+randomSuffix())
	ex := &exporter{s: s, opts: opts}
	fail := func(err error) (ExportResult, error) {
		os.RemoveAll(tmp)
		return ExportResult{}, fmt.Errorf("export %s to %s: %w", root, dest, err)
	}
	switch kind {
	case nodeFile:
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fileMode(fsn))
		if err != nil {
			return fail(err)
		}
		if err := ex.writeFileTo(ctx, loadedNode{root, nd, fsn}, f); err != nil {
			return fail(err)
		}
	case nodeDir:
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return fail(err)
		}
		r, err := os.OpenRoot(tmp)
		if err != nil {
			return fail(err)
		}
		err = ex.dir(ctx, r, ".", nd, fsn, 0)
		if err == nil {
			err = ex.links(r)
		}
		r.Close()
		if err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("root is a symlink: %w", ErrHostile))
	}
	if err := os.Rename(tmp, dest); err != nil {
		return fail(err)
	}
	return ex.res, nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type pendingLink struct {
	rel, target string
}

// exportWorkers write files in parallel; writing is mostly waiting on the
// kernel, so more workers than cores help.
func exportWorkers() int { return 2 * runtime.GOMAXPROCS(0) }

type exporter struct {
	s       *Store
	opts    ExportOptions
	symlink []pendingLink

	mu  sync.Mutex
	res ExportResult
}

type fileJob struct {
	dir  *os.Root // the file's directory
	name string
	rel  string
	node loadedNode
	mode os.FileMode
	done *sync.WaitGroup
}

// dir writes the directory node nd into rel, a directory that exists in r.
// Files are written by a pool of workers; each directory is opened as its
// own os.Root, so every file is created by name in its directory with one
// system call instead of a walk of its whole path.
func (ex *exporter) dir(ctx context.Context, r *os.Root, rel string, nd ipld.Node, fsn *ft.FSNode, depth int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan fileJob, 64)
	var workers sync.WaitGroup
	for range exportWorkers() {
		workers.Go(func() {
			for j := range jobs {
				if ctx.Err() == nil {
					if err := ex.writeJob(ctx, j); err != nil {
						cancel(fmt.Errorf("%s: %w", j.rel, err))
					}
				}
				j.done.Done()
			}
		})
	}
	sub, err := r.OpenRoot(rel)
	if err == nil {
		err = ex.dirIn(ctx, sub, rel, nd, fsn, depth, jobs)
	}
	close(jobs)
	workers.Wait()
	if cause := context.Cause(ctx); cause != nil && err == nil {
		err = cause
	}
	return err
}

func (ex *exporter) dirIn(ctx context.Context, here *os.Root, rel string, nd ipld.Node, fsn *ft.FSNode, depth int, jobs chan<- fileJob) error {
	var pending sync.WaitGroup
	defer func() {
		pending.Wait() // the workers use here until its files are written
		here.Close()
	}()
	if depth > MaxDepth {
		return fmt.Errorf("%s: directories nested deeper than %d: %w", rel, MaxDepth, ErrHostile)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ex.mu.Lock()
	ex.res.Dirs++
	ex.mu.Unlock()
	entries, err := ex.s.readDir(ctx, nd, fsn)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	for _, e := range entries {
		child := path.Join(rel, e.Name)
		if e.Cid.Prefix().Codec == cid.Raw { // a file of one block: no need to read it here
			pending.Add(1)
			select {
			case jobs <- fileJob{dir: here, name: e.Name, rel: child, node: loadedNode{c: e.Cid}, mode: 0o644, done: &pending}:
			case <-ctx.Done():
				pending.Done()
				return context.Cause(ctx)
			}
			continue
		}
		cn, kind, cf, err := ex.s.loadNode(ctx, e.Cid)
		if err != nil {
			return fmt.Errorf("%s: %w", child, err)
		}
		switch kind {
		case nodeDir:
			if err := here.Mkdir(e.Name, 0o755); err != nil {
				return err
			}
			sub, err := here.OpenRoot(e.Name)
			if err != nil {
				return err
			}
			if err := ex.dirIn(ctx, sub, child, cn, cf, depth+1, jobs); err != nil {
				return err
			}
		case nodeSymlink:
			target := string(cf.Data())
			if err := checkSymlink(child, target); err != nil {
				return err
			}
			ex.symlink = append(ex.symlink, pendingLink{rel: child, target: target})
		case nodeFile:
			pending.Add(1)
			select {
			case jobs <- fileJob{dir: here, name: e.Name, rel: child, node: loadedNode{e.Cid, cn, cf}, mode: fileMode(cf), done: &pending}:
			case <-ctx.Done():
				pending.Done()
				return context.Cause(ctx)
			}
		}
	}
	return nil
}

func (ex *exporter) writeJob(ctx context.Context, j fileJob) error {
	f, err := j.dir.OpenFile(j.name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, j.mode)
	if err != nil {
		return err
	}
	return ex.writeFileTo(ctx, j.node, f)
}

// writeFileTo writes a file's content and closes f. Blocks are written
// as they are (128 KiB to 1 MiB each): no extra buffer.
func (ex *exporter) writeFileTo(ctx context.Context, file loadedNode, f *os.File) error {
	n, err := ex.s.writeFileOf(ctx, file, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	ex.file(n)
	return nil
}

func (ex *exporter) file(n int64) {
	ex.mu.Lock()
	ex.res.Files++
	ex.res.Bytes += n
	res := ex.res
	ex.mu.Unlock()
	if ex.opts.Progress != nil {
		ex.opts.Progress(res)
	}
}

// links creates the symlinks, after every file and directory exists.
func (ex *exporter) links(r *os.Root) error {
	for _, l := range ex.symlink {
		if err := r.Symlink(l.target, l.rel); err != nil {
			return err
		}
		ex.res.Symlinks++
	}
	return nil
}

// checkSymlink refuses a link at rel whose target is absolute or leaves the
// tree (resolved lexically from the link's directory).
func checkSymlink(rel, target string) error {
	if target == "" || path.IsAbs(target) || len(target) > 4096 {
		return fmt.Errorf("%s: symlink to %q: %w", rel, target, ErrHostile)
	}
	resolved := path.Join(path.Dir(rel), target)
	if resolved == ".." || len(resolved) >= 3 && resolved[:3] == "../" {
		return fmt.Errorf("%s: symlink to %q points outside the tree: %w", rel, target, ErrHostile)
	}
	return nil
}
