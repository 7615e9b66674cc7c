package dag

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cortex-peer/cortex-peer/dag/fswatch"
)

func newWatcher(t *testing.T) *fswatch.Watcher {
	t.Helper()
	w, err := NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// A watched tree that nothing touched imports again without a scan; every
// kind of change is seen by the next import, whose root is the one an
// import without a watcher (and without the index) makes of the same tree.
func TestWatchedReimport(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	w := newWatcher(t)
	src := sampleTree(t)
	opts := ImportOptions{Watch: w}
	first, err := s.Import(ctx, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if first.Unchanged {
		t.Fatal("the first import of a tree says unchanged")
	}
	again, err := s.Import(ctx, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Unchanged || again.Root != first.Root || again.Files != first.Files || again.Bytes != first.Bytes || again.FilesRead != 0 {
		t.Fatalf("re-import with nothing changed: %+v, first %+v", again, first)
	}

	p := func(rel string) string { return filepath.Join(src, filepath.FromSlash(rel)) }
	// listed: the directories the import must list (the changed ones and
	// their ancestors), when the test checks it.
	changes := []struct {
		name   string
		listed int
		do     func() error
	}{
		{"append to a file", 2, func() error {
			f, err := os.OpenFile(p("src/main.go"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("// more\n")
			return errors.Join(err, f.Close())
		}},
		{"new file deep down", 5, func() error { return os.WriteFile(p("src/a/b/c/new.go"), []byte("package c\n"), 0o644) }},
		{"delete a file", 5, func() error { return os.Remove(p("src/a/b/c/deep.go")) }},
		{"exec bit", 1, func() error { return os.Chmod(p("README.md"), 0o755) }},
		{"rename in a directory", 2, func() error { return os.Rename(p("src/main.go"), p("src/app.go")) }},
		{"new directory with a file", 0, func() error {
			if err := os.MkdirAll(p("docs/guide"), 0o755); err != nil {
				return err
			}
			return os.WriteFile(p("docs/guide/x.md"), []byte("x\n"), 0o644)
		}},
		{"change in the new directory", 3, func() error { return os.WriteFile(p("docs/guide/x.md"), []byte("y\n"), 0o644) }},
		{"directory moved", 0, func() error { return os.Rename(p("docs/guide"), p("src/guide")) }},
		{"change in the moved directory", 3, func() error { return os.WriteFile(p("src/guide/x.md"), []byte("z\n"), 0o644) }},
		{"directory replaced by a new one of the same name", 0, func() error {
			if err := os.RemoveAll(p("src/a")); err != nil {
				return err
			}
			writeTree(t, p("src/a"), map[string]string{"b/c/deep.go": "package c // again\n"})
			return nil
		}},
		{"change in the replacement", 5, func() error { return os.WriteFile(p("src/a/b/c/deep.go"), []byte("package c\n"), 0o644) }},
		{".cortexignore below, for files further down", 0, func() error {
			return os.WriteFile(p("src/.cortexignore"), []byte("*.go\n"), 0o644)
		}},
		{"remove a directory", 0, func() error { return os.RemoveAll(p("src/a")) }},
		{".cortexignore", 0, func() error { return os.WriteFile(p(".cortexignore"), []byte("*.bin\n"), 0o644) }},
		{"root replaced", 0, func() error {
			if err := os.Rename(src, src+".old"); err != nil {
				return err
			}
			writeTree(t, src, map[string]string{"other.txt": "other\n"})
			return nil
		}},
	}
	for _, c := range changes {
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := s.Import(ctx, src, opts)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want, err := s.Import(ctx, src, ImportOptions{NoIndex: true})
		if err != nil {
			t.Fatal(err)
		}
		if got.Unchanged || got.Root != want.Root || got.Files != want.Files || got.Dirs != want.Dirs || got.Bytes != want.Bytes || got.Symlinks != want.Symlinks {
			t.Fatalf("%s: watched import %+v, a full one %+v", c.name, got, want)
		}
		if c.listed > 0 && got.DirsListed != c.listed {
			t.Fatalf("%s: %d directories listed, want %d", c.name, got.DirsListed, c.listed)
		}
		if again, err := s.Import(ctx, src, opts); err != nil || !again.Unchanged || again.Root != want.Root {
			t.Fatalf("%s: the import after: %+v %v", c.name, again, err)
		}
	}
}

// What the watcher cannot vouch for is scanned every time: a tree with a
// hard-linked file (it may change through the other link), a tree after a
// GC (its blocks may be gone). Lost events: see the fswatch tests.
func TestWatchedReimportLimits(t *testing.T) {
	ctx := context.Background()
	t.Run("hard link", func(t *testing.T) {
		s, w := openStore(t), newWatcher(t)
		src := sampleTree(t)
		if err := os.Link(filepath.Join(src, "README.md"), filepath.Join(t.TempDir(), "elsewhere")); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			r, err := s.Import(ctx, src, ImportOptions{Watch: w})
			if err != nil || r.Unchanged {
				t.Fatalf("import %d of a tree with a hard link: %+v %v", i, r, err)
			}
		}
	})
	t.Run("gc", func(t *testing.T) {
		s, w := openStore(t), newWatcher(t)
		src := sampleTree(t)
		if _, err := s.Import(ctx, src, ImportOptions{Watch: w}); err != nil {
			t.Fatal(err)
		}
		if err := s.bumpGCGeneration(); err != nil {
			t.Fatal(err)
		}
		if r, err := s.Import(ctx, src, ImportOptions{Watch: w}); err != nil || r.Unchanged {
			t.Fatalf("import after a GC: %+v %v", r, err)
		}
	})
}
