package fswatch

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// scanTree begins a scan of dir and adds its directories, as an import does.
func scanTree(t *testing.T, w *Watcher, dir string, value any) (unchanged bool) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	scan, v, err := w.Begin(dir, st.Dev, st.Ino, func(any) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if scan == nil {
		if v != value {
			t.Fatalf("unchanged %s gave %v, want %v", dir, v, value)
		}
		return true
	}
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			rel = ""
		}
		scan.Add(fd, filepath.ToSlash(rel), st.Ino)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	scan.End(true, value)
	return false
}

// newWatcher starts a watcher of up to max directories, closed when the
// test ends.
func newWatcher(t *testing.T, max int) *Watcher {
	t.Helper()
	w, err := New(max)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// When the kernel's event queue overflows, nothing can be said of any
// tree: a tree nobody touched is scanned again too.
func TestOverflowMarksEveryTreeChanged(t *testing.T) {
	raw, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Fatal(err)
	}
	var limit int
	fmt.Sscan(string(raw), &limit)
	if limit <= 0 || limit > 200000 {
		t.Fatalf("max_queued_events is %d", limit)
	}
	w := newWatcher(t, 0)
	busy, quiet := t.TempDir(), t.TempDir()
	mkdirs(t, filepath.Join(quiet, "sub"))
	scanTree(t, w, busy, "busy")
	scanTree(t, w, quiet, "quiet")
	if !scanTree(t, w, quiet, "quiet") {
		t.Fatal("a tree nothing touched was scanned again")
	}
	// Each file created and removed queues at least two events.
	for i := range limit/2 + 100 {
		p := filepath.Join(busy, fmt.Sprint(i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Remove(p)
	}
	if scanTree(t, w, quiet, "quiet") {
		t.Fatal("after lost events, an untouched tree was taken as unchanged")
	}
	if !scanTree(t, w, quiet, "quiet") {
		t.Fatal("the tree's new scan was not kept")
	}
}

// A change deep in the tree is seen; a root replaced at the same path is
// another tree; neither a failed scan's value nor one its owner refuses is
// kept.
func TestEventsAndReplacedRoot(t *testing.T) {
	w := newWatcher(t, 0)
	dir := t.TempDir()
	root := filepath.Join(dir, "tree")
	mkdirs(t, filepath.Join(root, "a", "b"))
	scanTree(t, w, root, 1)
	if !scanTree(t, w, root, 1) {
		t.Fatal("unchanged tree scanned again")
	}
	if err := os.WriteFile(filepath.Join(root, "a", "b", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if scanTree(t, w, root, 2) {
		t.Fatal("a new file deep down was not seen")
	}
	if !scanTree(t, w, root, 2) {
		t.Fatal("unchanged tree scanned again")
	}
	// A new directory at the same path is another tree.
	if err := os.Rename(root, root+".old"); err != nil {
		t.Fatal(err)
	}
	mkdirs(t, root)
	if scanTree(t, w, root, 3) {
		t.Fatal("a replaced root was taken as unchanged")
	}
	// A failed scan is not kept.
	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "g"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	scan, _, _ := w.Begin(root, st.Dev, st.Ino, func(any) bool { return true })
	scan.End(false, 4)
	if scanTree(t, w, root, 5) {
		t.Fatal("the value of a failed scan was kept")
	}
	// A value its owner no longer accepts is scanned again.
	if scan, _, _ := w.Begin(root, st.Dev, st.Ino, func(any) bool { return false }); scan == nil {
		t.Fatal("a refused value was returned")
	}
}

// Past maxTrees, the tree begun longest ago is forgotten and its watches
// removed; Close is safe twice and Begin after it fails.
func TestEvictionAndClose(t *testing.T) {
	w, err := New(0)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	var dirs []string
	for i := range maxTrees + 1 {
		d := filepath.Join(base, fmt.Sprint(i))
		mkdirs(t, filepath.Join(d, "sub"))
		dirs = append(dirs, d)
		scanTree(t, w, d, i)
	}
	if len(w.trees) != maxTrees {
		t.Fatalf("%d trees watched, want %d", len(w.trees), maxTrees)
	}
	if scanTree(t, w, dirs[0], 0) {
		t.Fatal("the evicted tree was taken as unchanged")
	}
	if !scanTree(t, w, dirs[maxTrees], maxTrees) {
		t.Fatal("a watched tree was scanned again")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := w.Begin(dirs[1], 0, 0, func(any) bool { return true }); err != ErrClosed {
		t.Fatalf("Begin after Close: %v", err)
	}
}

// A watcher with room for fewer directories than a tree has does not vouch
// for it.
func TestTooManyDirectories(t *testing.T) {
	w := newWatcher(t, 2)
	root := t.TempDir()
	mkdirs(t, filepath.Join(root, "a"), filepath.Join(root, "b"), filepath.Join(root, "c"))
	scanTree(t, w, root, 1)
	if scanTree(t, w, root, 1) {
		t.Fatal("a tree with unwatched directories was taken as unchanged")
	}
}
