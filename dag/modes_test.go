package dag

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// chmodAll sets the modes of paths under dir.
func chmodAll(t testing.TB, dir string, modes map[string]os.FileMode) {
	t.Helper()
	for rel, m := range modes {
		if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(rel)), m); err != nil {
			t.Fatal(err)
		}
	}
}

// modeOf is the permission bits of dir/rel, not following a link.
func modeOf(t testing.TB, dir, rel string) os.FileMode {
	t.Helper()
	info, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return info.Mode().Perm()
}

// childOf loads the node at rel under root.
func childOf(t testing.TB, s *Store, root cid.Cid, rel string) (cid.Cid, *ft.FSNode) {
	t.Helper()
	ctx := context.Background()
	c := root
	for part := range strings.SplitSeq(rel, "/") {
		nd, _, fsn, err := s.loadNode(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		ents, err := s.readDir(ctx, nd, fsn)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ents, func(e dirEntry) bool { return e.Name == part })
		if i < 0 {
			t.Fatalf("%s: no %s", rel, part)
		}
		c = ents[i].Cid
	}
	_, _, fsn, err := s.loadMaybeInline(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return c, fsn
}

// A 0600 file, a 0700 directory, an executable, a group-writable file (the
// umask of the test, 022, would drop its bit) and a read-only one keep
// their modes through import and export, and come back to the same root.
func TestModesRoundTrip(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	writeTree(t, src, map[string]string{
		"secret.env":     "TOKEN=x\n",
		"private/key":    "k",
		"private/deep/f": "f",
		"bin/run.sh":     "#!/bin/sh\n",
		"shared.txt":     "g",
		"readonly.txt":   "r",
		"plain.txt":      "p",
		"empty-secret":   "",
		"empty-exec":     "",
		"open/":          "",
	})
	modes := map[string]os.FileMode{
		"secret.env": 0o600, "private": 0o700, "private/key": 0o600, "bin/run.sh": 0o755,
		"shared.txt": 0o664, "readonly.txt": 0o444, "empty-secret": 0o600, "open": 0o775,
		"empty-exec": 0o755, // an empty file with a mode used to panic the import
	}
	chmodAll(t, src, modes)
	res, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := s.Export(ctx, res.Root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	modes["plain.txt"], modes["private/deep"], modes["private/deep/f"], modes["bin"] = 0o644, 0o755, 0o644, 0o755
	for rel, want := range modes {
		if got := modeOf(t, dest, rel); got != want {
			t.Errorf("%s: mode %04o after the round trip, want %04o", rel, got, want)
		}
	}
	again, err := s.Import(ctx, dest, ImportOptions{NoIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Root.Equals(res.Root) {
		t.Fatalf("re-import of the export: %s, want %s", again.Root, res.Root)
	}
	// A chmod alone is seen by the next (indexed) import, of a file and of
	// a directory.
	chmodAll(t, src, map[string]os.FileMode{"plain.txt": 0o600, "private/deep": 0o700})
	res2, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	changes, err := s.Diff(ctx, res.Root, res2.Root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range changes {
		got = append(got, c.Path+":"+string(c.Kind))
	}
	if strings.Join(got, ",") != "plain.txt:mode-changed,private/deep:mode-changed" {
		t.Fatalf("diff after chmod: %v", got)
	}
}

// Files and directories of the default modes hash as they always did: a
// one-chunk 0644 file is its raw leaf, a 0755 directory records no mode.
func TestDefaultModesKeepTheirCIDs(t *testing.T) {
	s := openStore(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"sub/a.txt": "hello\n", "run.sh": "#!/bin/sh\n"})
	res, err := s.Import(context.Background(), src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := childOf(t, s, res.Root, "sub/a.txt"); !c.Equals(rawLeaf([]byte("hello\n")).Cid()) {
		t.Errorf("0644 file: %s, want its raw leaf", c)
	}
	if _, fsn := childOf(t, s, res.Root, "sub"); fsn.Mode() != 0 {
		t.Errorf("0755 directory records mode %v", fsn.Mode())
	}
	if _, fsn := childOf(t, s, res.Root, "run.sh"); fsn.Mode().Perm() != 0o755 {
		t.Errorf("executable records mode %v, want 0755 as before", fsn.Mode())
	}
}

// modeFile is a file node of one leaf that records unix permissions perm
// (setuid, setgid and sticky bits included), as a hostile peer could send.
func modeFile(t testing.TB, s *Store, content string, perm uint32) cid.Cid {
	t.Helper()
	fsn := ft.NewFSNode(ft.TFile)
	fsn.SetModeFromUnixPermissions(perm)
	leaf := fileOf(t, s, content)
	fsn.AddBlockSize(uint64(len(content)))
	data, err := fsn.GetBytes()
	if err != nil {
		t.Fatal(err)
	}
	nd := merkledag.NodeWithData(data)
	_ = nd.SetCidBuilder(cidBuilder)
	if err := nd.AddRawLink("", &ipld.Link{Cid: leaf, Size: uint64(len(content))}); err != nil {
		t.Fatal(err)
	}
	return put(t, s, nd)
}

func modeDir(t testing.TB, s *Store, perm uint32, links map[string]cid.Cid) cid.Cid {
	t.Helper()
	fsn := ft.NewFSNode(ft.TDirectory)
	fsn.SetModeFromUnixPermissions(perm)
	data, err := fsn.GetBytes()
	if err != nil {
		t.Fatal(err)
	}
	nd := merkledag.NodeWithData(data)
	_ = nd.SetCidBuilder(cidBuilder)
	for name, c := range links {
		if err := nd.AddRawLink(name, &ipld.Link{Name: name, Cid: c}); err != nil {
			t.Fatal(err)
		}
	}
	return put(t, s, nd)
}

// Modes from the wire are masked: no setuid, setgid or sticky bit is ever
// made, the owner can always read a file, and a directory always has rwx
// for its owner, so a hostile 0000-ish tree exports and can be removed.
func TestExportMasksModesFromTheWire(t *testing.T) {
	s := openStore(t)
	root := dirOf(t, s, map[string]cid.Cid{
		"suid":       modeFile(t, s, "x", 0o4755),
		"sgid":       modeFile(t, s, "x", 0o2750),
		"write-only": modeFile(t, s, "x", 0o200),
		"locked":     modeDir(t, s, 0o001, map[string]cid.Cid{"f": fileOf(t, s, "in")}),
		"sticky":     modeDir(t, s, 0o1777, nil),
	})
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := s.Export(context.Background(), root, dest, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]os.FileMode{"suid": 0o755, "sgid": 0o750, "write-only": 0o600, "locked": 0o701, "sticky": 0o777} {
		info, err := os.Lstat(filepath.Join(dest, rel))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != want || info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			t.Errorf("%s: mode %v, want %04o", rel, info.Mode(), want)
		}
	}
	if read(t, dest, "locked/f") != "in" {
		t.Errorf("locked/f: %s", read(t, dest, "locked/f"))
	}
	if err := os.RemoveAll(dest); err != nil {
		t.Fatalf("remove the export: %v", err)
	}
}

// A merge keeps modes: a 0600 file THEIRS edits stays 0600, a new 0600
// file or 0700 directory of THEIRS arrives so, a chmod of THEIRS is
// applied to a file and to a directory, and a line merge keeps the local
// file's mode.
func TestMergeKeepsModes(t *testing.T) {
	base := map[string]string{"secret.env": "A=1\n", "notes.txt": lines, "tool": "#!/bin/sh\n", "pub/f": "f"}
	baseModes := map[string]os.FileMode{"secret.env": 0o600, "notes.txt": 0o640}
	local, rep := mergeCase(t, base,
		func(d string) {
			chmodAll(t, d, baseModes)
			write(t, d, "secret.env", "A=2\n")
			write(t, d, "notes.txt", strings.Replace(lines, "seven", "SEVEN", 1))
			write(t, d, "new-secret", "s")
			write(t, d, "private/k", "k")
			chmodAll(t, d, map[string]os.FileMode{"secret.env": 0o600, "notes.txt": 0o640, "new-secret": 0o600, "private": 0o700, "tool": 0o700, "pub": 0o750})
		},
		func(d string) {
			chmodAll(t, d, baseModes)
			write(t, d, "notes.txt", strings.Replace(lines, "one", "ONE", 1))
			chmodAll(t, d, baseModes)
		})
	if len(rep.Conflicts) != 0 {
		t.Fatalf("conflicts: %+v", rep.Conflicts)
	}
	if read(t, local, "secret.env") != "A=2\n" || !strings.Contains(read(t, local, "notes.txt"), "ONE") || !strings.Contains(read(t, local, "notes.txt"), "SEVEN") {
		t.Fatalf("merge did not apply: %+v", rep)
	}
	for rel, want := range map[string]os.FileMode{"secret.env": 0o600, "notes.txt": 0o640, "new-secret": 0o600, "private": 0o700, "private/k": 0o644, "tool": 0o700, "pub": 0o750, "pub/f": 0o644} {
		if got := modeOf(t, local, rel); got != want {
			t.Errorf("%s: mode %04o after the merge, want %04o", rel, got, want)
		}
	}
}

// venvTree writes a tree like a Python virtualenv's: links to the system's
// interpreter, links inside the tree, and one climbing out of it.
func venvTree(t testing.TB, dir string) {
	writeTree(t, dir, map[string]string{
		"venv/pyvenv.cfg":  "home = /usr/bin\n",
		"venv/bin/python":  "->/usr/bin/python3",
		"venv/bin/python3": "->python",
		"venv/lib/site.py": "pass\n",
		"venv/lib64":       "->lib",
		"up":               "->../outside",
		"main.py":          "print(1)\n",
	})
}

// A link out of the tree no longer fails an export: it is skipped and
// reported, or created as it is when asked.
func TestExportEscapingLinks(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := t.TempDir()
	venvTree(t, src)
	res, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "out")
	ex, err := s.Export(ctx, res.Root, dest, ExportOptions{})
	if err != nil {
		t.Fatalf("export of a tree with escaping links: %v", err)
	}
	want := []SkippedLink{{Path: "up", Target: "../outside"}, {Path: "venv/bin/python", Target: "/usr/bin/python3"}}
	if !slices.Equal(ex.SkippedLinks, want) {
		t.Fatalf("skipped %+v, want %+v", ex.SkippedLinks, want)
	}
	for _, rel := range []string{"up", "venv/bin/python"} {
		if _, err := os.Lstat(filepath.Join(dest, rel)); !os.IsNotExist(err) {
			t.Errorf("%s created: %v", rel, err)
		}
	}
	if tgt, err := os.Readlink(filepath.Join(dest, "venv/lib64")); err != nil || tgt != "lib" {
		t.Errorf("in-tree link: %q %v", tgt, err)
	}

	allowed := filepath.Join(t.TempDir(), "out")
	ex, err = s.Export(ctx, res.Root, allowed, ExportOptions{AllowEscapingLinks: true})
	if err != nil || len(ex.SkippedLinks) != 0 || ex.Symlinks != 4 {
		t.Fatalf("export allowing escaping links: %+v %v", ex, err)
	}
	sameTree(t, treeSnapshot(t, src), treeSnapshot(t, allowed))
	again, err := s.Import(ctx, allowed, ImportOptions{NoIndex: true})
	if err != nil || !again.Root.Equals(res.Root) {
		t.Fatalf("re-import: %s %v, want %s", again.Root, err, res.Root)
	}
}

// A link the directory had at BASE and THEIRS kept is left alone; a new
// or changed link of THEIRS that escapes is not created but reported.
func TestMergeEscapingLinks(t *testing.T) {
	base := map[string]string{"a.txt": "a", "venv/bin/python": "->/usr/bin/python3", "py": "->/usr/bin/python3"}
	local, rep := mergeCase(t, base,
		func(d string) {
			write(t, d, "a.txt", "A")
			os.Symlink("/etc", filepath.Join(d, "evil"))
			os.Remove(filepath.Join(d, "py"))
			os.Symlink("/usr/bin/python3.12", filepath.Join(d, "py"))
			write(t, d, "newdir/f", "f")
			os.Symlink("/root", filepath.Join(d, "newdir", "l"))
			os.Symlink("f", filepath.Join(d, "newdir", "ok"))
		},
		func(string) {})
	if read(t, local, "a.txt") != "A" || read(t, local, "newdir/f") != "f" {
		t.Fatalf("theirs not applied: %+v", rep)
	}
	for rel, want := range map[string]string{"venv/bin/python": "/usr/bin/python3", "py": "/usr/bin/python3", "newdir/ok": "f"} {
		if tgt, err := os.Readlink(filepath.Join(local, rel)); err != nil || tgt != want {
			t.Errorf("%s: %q %v, want -> %s", rel, tgt, err, want)
		}
	}
	for _, rel := range []string{"evil", "newdir/l"} {
		if _, err := os.Lstat(filepath.Join(local, rel)); !os.IsNotExist(err) {
			t.Errorf("%s created: %v", rel, err)
		}
	}
	var got []string
	for _, c := range rep.Conflicts {
		got = append(got, c.Path+":"+c.Reason+":"+c.LinkTarget)
	}
	slices.Sort(got)
	want := "evil:escaping-link:/etc,newdir/l:escaping-link:/root,py:escaping-link:/usr/bin/python3.12"
	if strings.Join(got, ",") != want {
		t.Fatalf("conflicts %v, want %s", got, want)
	}
}

// A merge never writes, removes or reads through a link: not through one
// inside the directory (os.Root would follow it), nor one out of it.
func TestMergeNeverWritesThroughLink(t *testing.T) {
	outside := t.TempDir()
	write(t, outside, "f", "outside")
	base := map[string]string{"lib/x.txt": "x", "other/x.txt": "other", "ext/f": "ext"}
	local, rep := mergeCase(t, base,
		func(d string) {
			write(t, d, "lib/x.txt", "X")
			write(t, d, "lib/new.txt", "new")
			write(t, d, "ext/f", "changed")
		},
		func(d string) {
			os.RemoveAll(filepath.Join(d, "lib"))
			os.Symlink("other", filepath.Join(d, "lib"))
			os.RemoveAll(filepath.Join(d, "ext"))
			os.Symlink(outside, filepath.Join(d, "ext"))
		})
	if read(t, local, "other/x.txt") != "other" || read(t, outside, "f") != "outside" {
		t.Fatal("a merge wrote through a link")
	}
	if _, err := os.Lstat(filepath.Join(local, "other", "new.txt")); !os.IsNotExist(err) {
		t.Fatalf("other/new.txt written through lib: %v", err)
	}
	var got []string
	for _, c := range rep.Conflicts {
		got = append(got, c.Path+":"+c.Reason)
	}
	slices.Sort(got)
	if want := "ext/f:through-link,lib/new.txt:through-link,lib/x.txt:through-link"; strings.Join(got, ",") != want {
		t.Fatalf("conflicts %v, want %s", got, want)
	}
}
