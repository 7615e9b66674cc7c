package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"golang.org/x/sys/unix"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// workspaceLayers keeps the workspaces tasks ran on as overlayfs layers, so
// that a task on a workspace this peer has seen starts without writing a
// file, and its result is imported reading only the files it changed.
//
// A layer is a directory under dir. A view is a stack of layers (top first)
// that shows one workspace root to one owner (uid:gid). A task mounts an
// overlay of its base's view under an empty upper directory; when it ends,
// the upper directory becomes a layer, and the result's view is that layer
// on top of the base's. The first view of a root is made by exporting it
// into a layer (the only time its files are written), and each view has an
// import index of its own, so an import of a task's overlay trusts the stat
// of every file the task did not touch.
//
// Views live in memory: a restarted peer starts with none and removes the
// layers it left.
type workspaceLayers struct {
	dir  string
	dags *dag.Store
	log  *slog.Logger

	mu       sync.Mutex
	views    map[viewKey]*layerView
	refs     map[string]int // layer name -> views that stack it
	disabled error          // why overlays cannot be used here, once known
	seq      atomic.Uint64
	wg       sync.WaitGroup // layer removals
}

type viewKey struct {
	root     string // CID
	uid, gid uint32
}

type layerView struct {
	layers []string // top first
	used   time.Time
	mounts int // tasks running on it now
}

// taskExport is how a task's workspace is written (a layer, or a copy
// where overlays cannot be used). Symlinks that point out of the tree
// (a virtualenv's bin/python -> /usr/bin/python3) are made as they are:
// the tree is mounted at /workspace in the task's container, so such a
// link resolves inside the container's own root, which is where the task
// means it; and on this peer nothing follows a link in a layer or a
// copy (the export writes links last and never through one, the chown
// uses lchown, overlayfs takes the layers as they are, the import of the
// result reads links as links). Modes are kept; the tree is then owned by
// the task's user, so a 0600 file is readable by the task alone.
var taskExport = dag.ExportOptions{AllowEscapingLinks: true}

// Bounds of the cache: views kept, and layers in a stack before a view is
// made afresh from an export (overlayfs allows 500; every level costs a
// lookup on each path).
const (
	maxLayerViews = 8
	maxLayerDepth = 16
)

func newWorkspaceLayers(dir string, dags *dag.Store, log *slog.Logger) *workspaceLayers {
	l := &workspaceLayers{dir: dir, dags: dags, log: log, views: map[viewKey]*layerView{}, refs: map[string]int{}}
	// Layers of an earlier run are not known to any view: remove them.
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			l.removeLayer(e.Name())
		}
	}
	return l
}

// indexName is the name of a view's import index.
func (k viewKey) indexName() string {
	return "layers:" + k.root + ":" + strconv.FormatUint(uint64(k.uid), 10) + ":" + strconv.FormatUint(uint64(k.gid), 10)
}

// layerMount is one task's overlay of its base's view.
type layerMount struct {
	l                   *workspaceLayers
	base                viewKey
	upper, work, merged string
	once                sync.Once
	mounted             bool
}

// errNoOverlay says overlays cannot be used here; the caller copies instead.
var errNoOverlay = errors.New("overlay workspaces unavailable")

// mount makes merged (a new directory under taskDir) show the workspace root
// owned by uid:gid, as an overlay whose upper layer takes the task's
// changes. It fails with errNoOverlay when overlays cannot be used here.
func (l *workspaceLayers) mount(ctx context.Context, taskDir string, root cid.Cid, uid, gid uint32) (*layerMount, error) {
	l.mu.Lock()
	if l.disabled != nil {
		l.mu.Unlock()
		return nil, errNoOverlay
	}
	key := viewKey{root: root.String(), uid: uid, gid: gid}
	v := l.views[key]
	if v != nil {
		v.mounts++
		v.used = time.Now()
	}
	l.mu.Unlock()
	if v == nil {
		var err error
		if v, err = l.makeView(ctx, key, root); err != nil {
			return nil, err
		}
	}
	m := &layerMount{l: l, base: key, upper: filepath.Join(taskDir, "upper"), work: filepath.Join(taskDir, "work"), merged: filepath.Join(taskDir, "workspace")}
	err := m.mountOverlay(v.layers, uid, gid)
	if err != nil {
		l.release(key)
		if errors.Is(err, errNoOverlay) {
			l.mu.Lock()
			if l.disabled == nil {
				l.disabled = err
				l.log.Warn("task workspaces are copied, not overlaid", "err", err)
			}
			l.mu.Unlock()
		}
		return nil, err
	}
	return m, nil
}

// makeView exports root into a new layer owned by uid:gid and registers it
// as the root's view, mounted once.
func (l *workspaceLayers) makeView(ctx context.Context, key viewKey, root cid.Cid) (*layerView, error) {
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("workspace layers: %w", err)
	}
	name := l.newLayerName()
	dir := filepath.Join(l.dir, name)
	if _, err := l.dags.Export(ctx, root, dir, taskExport); err != nil {
		return nil, fmt.Errorf("export workspace %s: %w", root, err)
	}
	if err := runtime.ChownWorkspace(ctx, dir, key.uid, key.gid); err != nil {
		l.removeLayer(name)
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if v := l.views[key]; v != nil { // made meanwhile by another task
		v.mounts++
		v.used = time.Now()
		l.removeLayerLocked(name)
		return v, nil
	}
	v := &layerView{layers: []string{name}, used: time.Now(), mounts: 1}
	l.addView(key, v)
	return v, nil
}

func (l *workspaceLayers) newLayerName() string {
	return strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatUint(l.seq.Add(1), 10)
}

// addView registers v under key; l.mu is held.
func (l *workspaceLayers) addView(key viewKey, v *layerView) {
	l.views[key] = v
	for _, name := range v.layers {
		l.refs[name]++
	}
	l.evictLocked()
}

// evictLocked drops the least recently used views beyond maxLayerViews that
// no task runs on, and the layers no view stacks any more.
func (l *workspaceLayers) evictLocked() {
	for len(l.views) > maxLayerViews {
		var oldest viewKey
		var found bool
		for k, v := range l.views {
			if v.mounts == 0 && (!found || v.used.Before(l.views[oldest].used)) {
				oldest, found = k, true
			}
		}
		if !found {
			return
		}
		for _, name := range l.views[oldest].layers {
			if l.refs[name]--; l.refs[name] <= 0 {
				delete(l.refs, name)
				l.removeLayerLocked(name)
			}
		}
		delete(l.views, oldest)
	}
}

func (l *workspaceLayers) release(key viewKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v := l.views[key]; v != nil && v.mounts > 0 {
		v.mounts--
	}
	l.evictLocked()
}

// removeLayer deletes a layer directory in the background: a layer can hold
// a whole tree.
func (l *workspaceLayers) removeLayer(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.removeLayerLocked(name)
}

func (l *workspaceLayers) removeLayerLocked(name string) {
	l.wg.Go(func() {
		if err := os.RemoveAll(filepath.Join(l.dir, name)); err != nil {
			l.log.Warn("remove workspace layer", "layer", name, "err", err)
		}
	})
}

// Close waits for layer removals. Safe to call twice.
func (l *workspaceLayers) Close() { l.wg.Wait() }

// mountOverlay mounts the overlay of layers (top first) under m.upper at
// m.merged. The upper directory's root is owned by uid:gid, as the
// workspace's root is.
func (m *layerMount) mountOverlay(layers []string, uid, gid uint32) error {
	lower := make([]string, len(layers))
	for i, name := range layers {
		lower[i] = filepath.Join(m.l.dir, name)
	}
	for _, p := range append(lower, m.upper, m.work) {
		if strings.ContainsAny(p, ":,") {
			return fmt.Errorf("%w: path %q has ':' or ',', which overlayfs options cannot carry", errNoOverlay, p)
		}
	}
	for _, d := range []string{m.upper, m.work, m.merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("task workspace: %w", err)
		}
	}
	if err := os.Lchown(m.upper, int(uid), int(gid)); err != nil {
		return fmt.Errorf("task workspace: %w", err)
	}
	// redirect_dir and metacopy off: a renamed directory is copied and a
	// chmod copies the data, so the upper layer alone says what changed and
	// holds whole files. index and xino off: nothing is kept across mounts.
	opts := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + m.upper + ",workdir=" + m.work +
		",redirect_dir=off,metacopy=off,index=off,xino=off"
	if err := unix.Mount("overlay", m.merged, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%w: mount overlay: %v", errNoOverlay, err)
		}
		return fmt.Errorf("mount task workspace overlay: %w", err)
	}
	m.mounted = true
	return nil
}

// indexFrom is the import index of the base's view.
func (m *layerMount) indexFrom() string { return m.base.indexName() }

// indexFor is the import index of the view of result.
func (m *layerMount) indexFor(result cid.Cid) string { return m.indexKey(result).indexName() }

// finish unmounts the overlay. With a result, the upper layer becomes a
// layer and the result's view is it stacked on the base's (unless the stack
// is too deep, or the result is the base); without one, the changes are
// dropped. Safe to call more than once; only the first call counts.
func (m *layerMount) finish(result cid.Cid) {
	m.once.Do(func() {
		l := m.l
		defer l.release(m.base)
		if m.mounted {
			if err := unix.Unmount(m.merged, 0); err != nil {
				l.log.Warn("unmount task workspace; detaching it", "dir", m.merged, "err", err)
				_ = unix.Unmount(m.merged, unix.MNT_DETACH)
			}
			m.mounted = false
		}
		if !result.Defined() || result.String() == m.base.root {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		base := l.views[m.base]
		key := m.indexKey(result)
		if base == nil || l.views[key] != nil || len(base.layers) >= maxLayerDepth {
			return // the task's directory, upper included, is removed with it
		}
		name := l.newLayerName()
		if err := os.Rename(m.upper, filepath.Join(l.dir, name)); err != nil {
			l.log.Warn("keep task result as a workspace layer", "err", err)
			return
		}
		l.addView(key, &layerView{layers: append([]string{name}, base.layers...), used: time.Now()})
	})
}

func (m *layerMount) indexKey(result cid.Cid) viewKey {
	k := m.base
	k.root = result.String()
	return k
}

// unmountLeftovers unmounts the task overlays a crashed run left mounted
// under dir, so their working copies can be removed.
func unmountLeftovers(dir string, log *slog.Logger) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	prefix := filepath.Clean(dir) + "/"
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 || !strings.HasPrefix(fields[4], prefix) {
			continue
		}
		if err := unix.Unmount(fields[4], unix.MNT_DETACH); err != nil {
			log.Warn("unmount a task workspace left behind", "dir", fields[4], "err", err)
		} else {
			log.Info("unmounted a task workspace left behind", "dir", fields[4])
		}
	}
}
