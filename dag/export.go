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
	"strconv"
	"strings"
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
	// SkippedLinks are the symlinks that point out of the tree (absolute,
	// or climbing above its root) and were not created; see
	// ExportOptions.AllowEscapingLinks.
	SkippedLinks []SkippedLink
}

// SkippedLink is a symlink an export did not create.
type SkippedLink struct {
	Path   string `json:"path"`
	Target string `json:"target"`
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
	// AllowEscapingLinks creates symlinks that point out of the tree
	// (a virtualenv's bin/python -> /usr/bin/python3) as they are. Without
	// it they are not created but listed in ExportResult.SkippedLinks: a
	// tree from another peer must not plant a link to /etc or ~/.ssh that
	// a later write, by the user or a tool, would go through. The export
	// itself never follows a link either way.
	AllowEscapingLinks bool
}

// Export materializes the tree at root into dest, which must not exist. The
// tree is written into a fresh directory beside dest through os.Root and
// renamed into place at the end, so a failed export leaves nothing at dest.
// Regular files and directories are written first and symlinks last, so
// nothing is ever written through a link; symlinks that are absolute or
// point outside dest are skipped and reported unless
// opts.AllowEscapingLinks. Files and directories get the permission bits
// their nodes record, exactly (whatever the umask), masked by fileMode and
// dirMode. Every block must be in the local store (see Fetch), unless
// opts.Await waits for those still arriving.
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
	if removed, err := RemoveStaleScratch(parent, ScratchExport); err != nil {
		s.log.Warn("remove stale export scratch", "err", err)
	} else if len(removed) > 0 {
		s.log.Info("removed scratch paths an interrupted export left", "dir", parent, "paths", removed)
	}
	tmp := ScratchPath(dest, ScratchExport, randomSuffix())
	ex := newExporter(s, opts)
	fail := func(err error) (ExportResult, error) {
		os.RemoveAll(tmp)
		return ExportResult{}, fmt.Errorf("export %s to %s: %w", root, dest, err)
	}
	switch kind {
	case nodeFile:
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fileMode(fsn))
		if err == nil {
			err = ex.exactMode(f, fileMode(fsn))
		}
		if err != nil {
			return fail(err)
		}
		if err := ex.writeFileTo(ctx, loadedNode{root, nd, fsn}, f); err != nil {
			return fail(err)
		}
	case nodeDir:
		if err := os.Mkdir(tmp, dirMode(fsn)); err != nil {
			return fail(err)
		}
		// A root that records no mode (an import never records the
		// root's) is made with the umask, as any new directory of the
		// user's: with a umask of 077 the copy stays theirs alone.
		if mode := dirMode(fsn); fsn.Mode().Perm() != 0 && ex.umasked(mode) {
			if err := os.Chmod(tmp, mode); err != nil {
				return fail(err)
			}
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
	umask   os.FileMode // the process's, which file and directory creation applies

	mu  sync.Mutex
	res ExportResult
}

func newExporter(s *Store, opts ExportOptions) *exporter {
	return &exporter{s: s, opts: opts, umask: processUmask()}
}

// processUmask reads the umask without setting it (umask(2) can only swap
// it, racing with every goroutine creating a file); unknown, it is taken
// as 0777, so that every mode is set explicitly.
func processUmask() os.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return os.FileMode(m) & 0o777
				}
			}
		}
	}
	return 0o777
}

// umasked reports whether creating with mode leaves bits out that a chmod
// must put back.
func (ex *exporter) umasked(mode os.FileMode) bool { return mode&ex.umask != 0 }

// exactMode gives f, just created with mode, that mode whatever the umask
// took away. The export makes a copy of a tree, modes included; the tree's
// own modes, not the peer's umask, say who may read it.
func (ex *exporter) exactMode(f *os.File, mode os.FileMode) error {
	if !ex.umasked(mode) {
		return nil
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	return nil
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
			case jobs <- fileJob{dir: here, name: e.Name, rel: child, node: loadedNode{c: e.Cid}, mode: fileMode(nil), done: &pending}:
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
			// Every mode dirMode gives has rwx for the owner: the
			// directory can take its entries after its chmod.
			mode := dirMode(cf)
			if err := here.Mkdir(e.Name, mode); err != nil {
				return err
			}
			if ex.umasked(mode) {
				if err := here.Chmod(e.Name, mode); err != nil {
					return err
				}
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
			if !ex.opts.AllowEscapingLinks && linkEscapes(child, target) {
				ex.mu.Lock()
				ex.res.SkippedLinks = append(ex.res.SkippedLinks, SkippedLink{Path: child, Target: target})
				ex.mu.Unlock()
				continue
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
	if err := ex.exactMode(f, j.mode); err != nil {
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

// maxLinkTarget bounds a symlink's target (PATH_MAX).
const maxLinkTarget = 4096

// checkSymlink refuses a link at rel whose target no file system could
// hold: empty, with a NUL, or longer than PATH_MAX.
func checkSymlink(rel, target string) error {
	if target == "" || len(target) > maxLinkTarget || strings.IndexByte(target, 0) >= 0 {
		return fmt.Errorf("%s: symlink to %q: %w", rel, target, ErrHostile)
	}
	return nil
}

// linkEscapes reports whether a link at rel (slash-separated, from the
// tree's root) to target points out of the tree: absolute, or climbing
// above the root, resolved lexically from the link's directory. (A link to
// another link that escapes is caught at that one.)
func linkEscapes(rel, target string) bool {
	if path.IsAbs(target) {
		return true
	}
	resolved := path.Join(path.Dir(rel), target)
	return resolved == ".." || strings.HasPrefix(resolved, "../")
}
