package runtime

import (
	"errors"
	"io/fs"
	"path/filepath"
	"time"
)

// diskCheckInterval is how often a running task's writes to /workspace are
// measured against its disk limit.
const diskCheckInterval = 200 * time.Millisecond

// diskWatch measures what a task wrote to /workspace.
//
// Why a watch and not a file system of the limit's size: the task's writes
// land in the peer's overlay upper directory (node/tasks) on the data dir's
// file system. A tmpfs of the limit's size would cost memory, not disk; a
// loop-mounted ext4 per task needs a free loop device and a mkfs per task,
// and its upper directory could no longer be renamed into the peer's cache
// of workspace layers (a rename cannot cross file systems). So three
// things together: RLIMIT_FSIZE (profile.go) makes the kernel stop any one
// file at the limit, this watch kills the task once the sum of its files
// goes over, and one last measure when the task has ended catches what it
// wrote between two checks, so that a workspace over the limit never comes
// back, whatever the timing.
type diskWatch struct {
	dir   string
	limit int64
	base  int64 // bytes in dir before the task ran: not the task's
}

// newDiskWatch returns the watch of spec's workspace, or nil without one.
func newDiskWatch(spec Spec) *diskWatch {
	if spec.WorkspaceDir == "" || spec.Limits.DiskBytes <= 0 {
		return nil
	}
	w := &diskWatch{dir: spec.WorkspaceChanges, limit: spec.Limits.DiskBytes}
	if w.dir == "" {
		w.dir = spec.WorkspaceDir
		w.base = treeBytes(w.dir)
	}
	return w
}

// over reports whether the task has written more than its limit.
func (w *diskWatch) over() bool { return treeBytes(w.dir)-w.base > w.limit }

// treeBytes is the size of the regular files under dir: what an import of
// it reads and the mesh carries. Files that vanish meanwhile count nothing.
func treeBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
