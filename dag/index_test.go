package dag

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// reference imports dir from scratch: no index, nothing stored.
func reference(t *testing.T, s *Store, dir string) ImportResult {
	t.Helper()
	r, err := s.importDir(context.Background(), dir, ImportOptions{NoIndex: true}, true)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checkImport imports dir with the index, checks the root against an
// import from scratch, and checks that an import right after reads nothing.
func checkImport(t *testing.T, s *Store, dir string) ImportResult {
	t.Helper()
	ctx := context.Background()
	got, err := s.Import(ctx, dir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := reference(t, s, dir)
	if !got.Root.Equals(want.Root) || got.Files != want.Files || got.Dirs != want.Dirs || got.Symlinks != want.Symlinks || got.Ignored != want.Ignored {
		t.Fatalf("indexed import %+v\nfrom scratch    %+v", got, want)
	}
	again, err := s.Import(ctx, dir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Root.Equals(got.Root) || again.FilesRead != 0 || again.NewBlocks != 0 {
		t.Fatalf("import of an unchanged tree: %+v", again)
	}
	return got
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestIndexNoticesEveryChange applies one change after another to a tree
// and checks after each that the indexed import gives the root an import
// from scratch gives: the index and the directory records never serve a
// stale CID, however deep the change.
func TestIndexNoticesEveryChange(t *testing.T) {
	s := openStore(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{
		"README.md":           "hello\n",
		"empty":               "",
		"bin/run.sh":          "#!/bin/sh\necho hi\n",
		"a/b/c/d/deep.go":     "package d\n",
		"a/b/c/d/other.go":    "package d // other\n",
		"a/b/sibling/x.txt":   "x\n",
		"link":                "->README.md",
		"a/b/c/up":            "->../../../README.md",
		"big.bin":             string(randomBytes(4, 1<<20+5)),
		"logs/keep.txt":       "k",
		"logs/trace.log":      "t",
		"gone-soon/file.txt":  "f",
		"becomes-dir":         "file for now",
		"becomes-file/in.txt": "in",
	})
	p := func(rel string) string { return filepath.Join(src, filepath.FromSlash(rel)) }
	prev := checkImport(t, s, src)

	steps := []struct {
		name     string
		change   func()
		read     int  // files the import must read; -1: not checked
		sameRoot bool // the change leaves the DAG as it was
	}{
		{"deep file appended", func() {
			must(t, os.WriteFile(p("a/b/c/d/deep.go"), []byte("package d\n// more\n"), 0o644))
		}, 1, false},
		{"deep file rewritten, same size", func() {
			must(t, os.WriteFile(p("a/b/c/d/deep.go"), []byte("package e\n// more\n"), 0o644))
		}, 1, false},
		{"mtime only", func() {
			old := time.Now().Add(-time.Hour)
			must(t, os.Chtimes(p("a/b/c/d/other.go"), old, old))
		}, 1, true},
		{"made executable", func() { must(t, os.Chmod(p("README.md"), 0o755)) }, 1, false},
		{"executable bits changed", func() { must(t, os.Chmod(p("README.md"), 0o700)) }, 1, false},
		{"made plain again", func() { must(t, os.Chmod(p("README.md"), 0o644)) }, 1, false},
		{"symlink retargeted, same length", func() {
			must(t, os.Remove(p("link")))
			must(t, os.Symlink("READMF.md", p("link")))
		}, 0, false},
		{"file added deep in a new directory", func() {
			writeTree(t, src, map[string]string{"a/b/c/d/e/f/new.txt": "new\n"})
		}, 1, false},
		{"empty directory added", func() { must(t, os.Mkdir(p("a/b/sibling/empty"), 0o755)) }, 0, false},
		{"file removed", func() { must(t, os.Remove(p("a/b/sibling/x.txt"))) }, 0, false},
		{"directory removed", func() { must(t, os.RemoveAll(p("gone-soon"))) }, 0, false},
		{"file replaced by a directory", func() {
			must(t, os.Remove(p("becomes-dir")))
			writeTree(t, src, map[string]string{"becomes-dir/inside.txt": "file for now"})
		}, 1, false},
		{"directory replaced by a file", func() {
			must(t, os.RemoveAll(p("becomes-file")))
			writeTree(t, src, map[string]string{"becomes-file": "in"})
		}, 1, false},
		// A rename changes the file's ctime: it is read again.
		{"file renamed", func() { must(t, os.Rename(p("a/b/c/d/other.go"), p("a/b/c/d/renamed.go"))) }, 1, false},
		{"two files swapped", func() {
			must(t, os.Rename(p("a/b/c/d/deep.go"), p("tmp")))
			must(t, os.Rename(p("a/b/c/d/renamed.go"), p("a/b/c/d/deep.go")))
			must(t, os.Rename(p("tmp"), p("a/b/c/d/renamed.go")))
		}, 2, false},
		{"empty file filled", func() { must(t, os.WriteFile(p("empty"), []byte("now full"), 0o644)) }, 1, false},
		{".cortexignore added", func() {
			writeTree(t, src, map[string]string{".cortexignore": "*.log\n"})
		}, 1, false},
		{".cortexignore changed", func() {
			must(t, os.WriteFile(p(".cortexignore"), []byte("logs/\n"), 0o644))
		}, 1, false},
		// Directories no longer ignored have no records: logs/ is read.
		{".cortexignore in a subdirectory", func() {
			must(t, os.WriteFile(p(".cortexignore"), []byte("# nothing\n"), 0o644))
			writeTree(t, src, map[string]string{"a/b/.cortexignore": "c/\n"})
		}, 4, false},
		{".cortexignore removed", func() {
			must(t, os.Remove(p("a/b/.cortexignore")))
		}, 3, false},
		{"big file changed in the middle", func() {
			f, err := os.OpenFile(p("big.bin"), os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteAt([]byte("changed"), 1<<19)
			must(t, err)
			must(t, f.Close())
		}, 1, false},
	}
	for _, st := range steps {
		st.change()
		got := checkImport(t, s, src)
		if st.read >= 0 && got.FilesRead != st.read {
			t.Errorf("%s: read %d files, want %d", st.name, got.FilesRead, st.read)
		}
		if got.Root.Equals(prev.Root) != st.sameRoot {
			t.Errorf("%s: root %s after %s (same: %v)", st.name, got.Root, prev.Root, st.sameRoot)
		}
		prev = got
	}
}

// TestRacyFileIsNotVouched: a file whose timestamps are not older than the
// clock at the import could change again without its stat changing, so
// the index must not vouch for it; once its timestamps are in the past, the
// index does.
func TestRacyFileIsNotVouched(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	writeTree(t, src, map[string]string{"future": "from the future", "plain": "p"})
	future := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(src, "future"), future, future))
	first, err := s.Import(ctx, src, ImportOptions{})
	if err != nil || first.FilesRead != 2 {
		t.Fatalf("first import: %+v %v", first, err)
	}
	for range 2 {
		again, err := s.Import(ctx, src, ImportOptions{})
		if err != nil || again.FilesRead != 1 || !again.Root.Equals(first.Root) {
			t.Fatalf("import with a racy file: %+v %v (want it, and only it, read again)", again, err)
		}
	}
	past := time.Now().Add(-time.Hour)
	must(t, os.Chtimes(filepath.Join(src, "future"), past, past))
	if r := checkImport(t, s, src); r.FilesRead != 1 || !r.Root.Equals(first.Root) {
		t.Fatalf("import once the file is old: %+v", r)
	}
}

func TestRacyPredicate(t *testing.T) {
	const ref = 1_700_000_000_123_456_789
	for _, c := range []struct {
		name         string
		mtime, ctime int64
		racy         bool
	}{
		{"both well before", ref - 1e9, ref - 1e9, false},
		{"mtime a nanosecond before", ref - 3, ref - 1e9, false},
		{"mtime at the clock", ref, ref - 1e9, true},
		{"ctime at the clock", ref - 1e9, ref, true},
		{"mtime after the clock", ref + 5e6, ref - 1e9, true},
		{"whole seconds, 1.5 s before", 1_699_999_998_000_000_000 + 6e8*0, ref - 1e9, false},
		{"whole second just before", 1_700_000_000_000_000_000, ref - 1e9, true},       // FAT: 2 s
		{"10 ms grain, 5 ms before", ref - 123_456_789 + 120_000_000, ref - 1e9, true}, // exFAT: 10 ms
		{"10 ms grain, 30 ms before", ref - 123_456_789 + 90_000_000, ref - 1e9, false},
	} {
		st := fileStat{mtimeNs: c.mtime, ctimeNs: c.ctime}
		if got := st.racy(ref); got != c.racy {
			t.Errorf("%s: racy = %v, want %v", c.name, got, c.racy)
		}
		if st.racy(st.racyUntil() + 1) {
			t.Errorf("%s: still racy after racyUntil", c.name)
		}
	}
	for _, c := range []struct{ t, g int64 }{{1, 1}, {10, 10}, {123_000, 1000}, {5e9, 2e9}, {1_500_000_000, 1e8}, {-7, 1}} {
		if got := grain(c.t); got != c.g {
			t.Errorf("grain(%d) = %d, want %d", c.t, got, c.g)
		}
	}
}

// TestChangeDuringImport changes files while they are being imported: the
// import may see either content, but the next one must see the last.
func TestChangeDuringImport(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	files := map[string]string{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		files["dir/"+n] = "version 1 of " + n
	}
	writeTree(t, src, files)
	changed := false
	_, err := s.Import(ctx, src, ImportOptions{Workers: 1, Progress: func(ImportProgress) {
		if changed {
			return
		}
		changed = true
		for n := range files {
			must(t, os.WriteFile(filepath.Join(src, n), []byte("VERSION 2 of "+n[len(n)-1:]), 0o644))
		}
	}})
	must(t, err)
	if !changed {
		t.Fatal("progress was not called")
	}
	checkImport(t, s, src)
}

// TestReimportAfterGC: after a GC the records are not trusted until
// checked; blocks GC took are written again and the root is whole.
func TestReimportAfterGC(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	writeTree(t, src, map[string]string{"keep/a.txt": "a", "keep/b.txt": "b", "change/c.txt": "c1"})
	r1, err := s.Import(ctx, src, ImportOptions{})
	must(t, err)
	must(t, s.Pin("ws", r1.Root))
	must(t, os.WriteFile(filepath.Join(src, "change/c.txt"), []byte("c2"), 0o644))
	r2, err := s.Import(ctx, src, ImportOptions{}) // not pinned: GC takes its new blocks
	must(t, err)
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if has, _ := s.blocks.Has(ctx, r2.Root); has {
		t.Fatal("unpinned root survived GC")
	}
	r3, err := s.Import(ctx, src, ImportOptions{})
	must(t, err)
	if !r3.Root.Equals(r2.Root) || r3.FilesRead != 1 {
		t.Fatalf("import after GC: %+v, want root %s and c.txt read again", r3, r2.Root)
	}
	if _, err := s.Export(ctx, r3.Root, filepath.Join(t.TempDir(), "out"), ExportOptions{}); err != nil {
		t.Fatalf("export after re-import: %v", err)
	}
	checkImport(t, s, src)
}

// TestBadRecordCostsARead: a record that does not decode is ignored.
func TestBadRecordCostsARead(t *testing.T) {
	s := openStore(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"x": "x", "sub/y": "y"})
	first := checkImport(t, s, src)
	abs, _ := filepath.Abs(src)
	must(t, s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(dirIndexKey(abs, "sub"), []byte{recVersion, 0xff, 0xff})
	}))
	r := checkImport(t, s, src)
	if !r.Root.Equals(first.Root) || r.FilesRead != 1 {
		t.Fatalf("import with a bad record: %+v", r)
	}
}

// TestLegacyIndexDropped: the per-file index of earlier versions is
// deleted when the workspace is imported.
func TestLegacyIndexDropped(t *testing.T) {
	s := openStore(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"x": "x"})
	abs, _ := filepath.Abs(src)
	key := append(append(append([]byte{}, legacyIndexPrefix...), abs...), append([]byte{0}, "x"...)...)
	must(t, s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, []byte("old")) }))
	checkImport(t, s, src)
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(key)
		return err
	})
	if err != badger.ErrKeyNotFound {
		t.Fatalf("legacy index entry: %v", err)
	}
}

// TestShardedDirectoryReimport: a HAMT directory keeps its recorded root
// while unchanged and is rebuilt right when one entry changes.
func TestShardedDirectoryReimport(t *testing.T) {
	s := openStore(t)
	src := t.TempDir()
	files := map[string]string{}
	for i := range 6000 {
		files[fmt.Sprintf("big/entry-with-a-long-name-%05d", i)] = strconv.Itoa(i)
	}
	files["small/x"] = "x"
	writeTree(t, src, files)
	first := checkImport(t, s, src)
	must(t, os.WriteFile(filepath.Join(src, "big/entry-with-a-long-name-03000"), []byte("changed"), 0o644))
	if r := checkImport(t, s, src); r.FilesRead != 1 || r.Root.Equals(first.Root) {
		t.Fatalf("import after one change in a sharded directory: %+v", r)
	}
	must(t, os.Remove(filepath.Join(src, "big/entry-with-a-long-name-00042")))
	checkImport(t, s, src)
}

// FuzzDecodeRecord: a damaged record is refused, never a panic, and what
// decodes has valid CIDs and sorted names (which the merge with a scan
// relies on).
func FuzzDecodeRecord(f *testing.F) {
	d := &treeDir{cid: rawLeaf([]byte("dir")).Cid(), tsize: 3, ents: []treeEntry{
		{name: "a", kind: kindFile, st: fileStat{size: 1, mtimeNs: 2, ctimeNs: 3, ino: 4, mode: 0o100644}, cid: rawLeaf([]byte("a")).Cid(), tsize: 1, vouched: true},
		{name: "b", kind: kindDir, cid: rawLeaf([]byte("b")).Cid(), tsize: 9},
		{name: "c", kind: kindSymlink, st: fileStat{mode: 0o120777}, cid: rawLeaf([]byte("c")).Cid(), tsize: 2},
	}}
	f.Add(encodeRecord(d))
	f.Add([]byte{recVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		if !validCid(r.cid) {
			t.Fatal("invalid directory CID accepted")
		}
		for i, e := range r.ents {
			if !validCid(e.cid) || e.kind > kindSymlink || i > 0 && string(r.ents[i-1].name) >= string(e.name) {
				t.Fatalf("entry %d accepted: %+v", i, e)
			}
		}
	})
}

// TestSpecialFilesSkipped: a FIFO, even one named .cortexignore, is
// skipped, never opened (which would block).
func TestSpecialFilesSkipped(t *testing.T) {
	s := openStore(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"x": "x", "sub/y": "y"})
	must(t, syscall.Mkfifo(filepath.Join(src, "pipe"), 0o644))
	must(t, syscall.Mkfifo(filepath.Join(src, "sub", ".cortexignore"), 0o644))
	r := checkImport(t, s, src)
	if r.Skipped != 2 || r.Files != 2 {
		t.Fatalf("import with FIFOs: %+v", r)
	}
}

// An import can trust one index and write another: the index of a tree
// serves an identical view of it (an overlay of its layers), and the view's
// own index is complete under its new name.
func TestIndexUnderAnotherName(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	for _, f := range []string{"a.txt", "d/b.txt", "d/e/c.txt"} {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(src, f)), 0o755))
		must(t, os.WriteFile(filepath.Join(src, f), []byte(f), 0o644))
	}
	first, err := s.Import(ctx, src, ImportOptions{IndexTo: "layer:one"})
	if err != nil || first.FilesRead != 3 {
		t.Fatalf("first import: %+v %v", first, err)
	}
	again, err := s.Import(ctx, src, ImportOptions{IndexFrom: "layer:one", IndexTo: "layer:two"})
	if err != nil || again.FilesRead != 0 || !again.Root.Equals(first.Root) {
		t.Fatalf("import through layer:one: %+v %v (want nothing read)", again, err)
	}
	must(t, os.WriteFile(filepath.Join(src, "d/e/c.txt"), []byte("changed"), 0o644))
	third, err := s.Import(ctx, src, ImportOptions{IndexFrom: "layer:two", IndexTo: "layer:three"})
	if err != nil || third.FilesRead != 1 || third.Root.Equals(first.Root) {
		t.Fatalf("import through layer:two after a change: %+v %v (want one file read)", third, err)
	}
	if r, err := s.Import(ctx, src, ImportOptions{IndexFrom: "layer:three", IndexTo: "layer:three"}); err != nil || r.FilesRead != 0 || !r.Root.Equals(third.Root) {
		t.Fatalf("import through layer:three: %+v %v", r, err)
	}
	// The directory's own index was never written.
	if r, err := s.Import(ctx, src, ImportOptions{}); err != nil || r.FilesRead != 3 {
		t.Fatalf("import through the directory's own index: %+v %v", r, err)
	}
}

func TestRenameAndDropIndex(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(src, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "d/a"), []byte("a"), 0o644))
	if _, err := s.Import(ctx, src, ImportOptions{IndexTo: "pending"}); err != nil {
		t.Fatal(err)
	}
	must(t, s.RenameIndex("pending", "final"))
	if r, err := s.Import(ctx, src, ImportOptions{IndexFrom: "pending", IndexTo: "pending"}); err != nil || r.FilesRead != 1 {
		t.Fatalf("the old name still serves: %+v %v", r, err)
	}
	if r, err := s.Import(ctx, src, ImportOptions{IndexFrom: "final", IndexTo: "final"}); err != nil || r.FilesRead != 0 {
		t.Fatalf("the new name does not serve: %+v %v", r, err)
	}
	must(t, s.DropIndex("final"))
	if r, err := s.Import(ctx, src, ImportOptions{IndexFrom: "final", IndexTo: "other"}); err != nil || r.FilesRead != 1 {
		t.Fatalf("a dropped index still serves: %+v %v", r, err)
	}
}
