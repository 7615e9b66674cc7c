package dag

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// mergeCase sets up BASE, THEIRS (BASE plus the task's edits) and the local
// directory (BASE plus the user's edits since), then merges.
func mergeCase(t *testing.T, base map[string]string, theirsEdit, oursEdit func(dir string)) (string, MergeReport) {
	t.Helper()
	s := openStore(t)
	ctx := context.Background()
	baseDir, theirsDir, local := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []string{baseDir, theirsDir, local} {
		writeTree(t, d, base)
	}
	theirsEdit(theirsDir)
	oursEdit(local)
	rb, err := s.Import(ctx, baseDir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := s.Import(ctx, theirsDir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Merge(ctx, rb.Root, rt.Root, local)
	if err != nil {
		t.Fatal(err)
	}
	return local, rep
}

func write(t *testing.T, dir, rel, content string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, dir, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, rel))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

const lines = "one\ntwo\nthree\nfour\nfive\nsix\nseven\n"

func TestMergeAppliesTheirsOnly(t *testing.T) {
	local, rep := mergeCase(t, map[string]string{"a.txt": lines, "keep.txt": "k", "gone.txt": "g"},
		func(d string) {
			write(t, d, "a.txt", strings.Replace(lines, "two", "TWO", 1))
			write(t, d, "new/dir/file.txt", "new")
			os.Remove(filepath.Join(d, "gone.txt"))
		},
		func(d string) { write(t, d, "mine.txt", "local only") })
	if read(t, local, "a.txt") != strings.Replace(lines, "two", "TWO", 1) || read(t, local, "new/dir/file.txt") != "new" {
		t.Fatalf("theirs not applied: %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(local, "gone.txt")); !os.IsNotExist(err) {
		t.Fatal("deleted file still there")
	}
	if read(t, local, "mine.txt") != "local only" || len(rep.Conflicts) != 0 {
		t.Fatalf("local addition touched or conflict: %+v", rep)
	}
	slices.Sort(rep.Applied)
	if strings.Join(rep.Applied, ",") != "a.txt,gone.txt,new" {
		t.Fatalf("applied %v", rep.Applied)
	}
}

func TestMergeLineWise(t *testing.T) {
	local, rep := mergeCase(t, map[string]string{"a.txt": lines},
		func(d string) { write(t, d, "a.txt", strings.Replace(lines, "six", "SIX", 1)) },
		func(d string) { write(t, d, "a.txt", strings.Replace(lines, "one", "ONE", 1)) })
	want := strings.Replace(strings.Replace(lines, "six", "SIX", 1), "one", "ONE", 1)
	if got := read(t, local, "a.txt"); got != want || len(rep.Merged) != 1 || len(rep.Conflicts) != 0 {
		t.Fatalf("line merge: %q, report %+v", got, rep)
	}
}

func TestMergeConflictsNeverOverwrite(t *testing.T) {
	local, rep := mergeCase(t, map[string]string{"a.txt": lines, "b.txt": "b", "c.txt": "c", "bin.dat": "\x00\x01base"},
		func(d string) {
			write(t, d, "a.txt", strings.Replace(lines, "two", "THEIRS", 1))
			os.Remove(filepath.Join(d, "b.txt"))
			write(t, d, "c.txt", "c theirs")
			write(t, d, "bin.dat", "\x00\x01theirs")
		},
		func(d string) {
			write(t, d, "a.txt", strings.Replace(lines, "two", "OURS", 1))
			write(t, d, "b.txt", "b edited")
			os.Remove(filepath.Join(d, "c.txt"))
			write(t, d, "bin.dat", "\x00\x01ours")
		})
	if read(t, local, "a.txt") != strings.Replace(lines, "two", "OURS", 1) {
		t.Fatal("local edit overwritten")
	}
	if read(t, local, "a.txt"+TheirsSuffix) != strings.Replace(lines, "two", "THEIRS", 1) {
		t.Fatal("theirs not written beside")
	}
	if read(t, local, "b.txt") != "b edited" {
		t.Fatal("delete-vs-edit removed the local edit")
	}
	if read(t, local, "bin.dat") != "\x00\x01ours" || read(t, local, "bin.dat"+TheirsSuffix) != "\x00\x01theirs" {
		t.Fatal("binary conflict mishandled")
	}
	reasons := map[string]string{}
	for _, c := range rep.Conflicts {
		reasons[c.Path] = c.Reason
	}
	want := map[string]string{"a.txt": BothModified, "b.txt": DeleteVsEdit, "c.txt": EditVsDelete, "bin.dat": BothModified}
	for p, r := range want {
		if reasons[p] != r {
			t.Errorf("%s: reason %q, want %q (report %+v)", p, reasons[p], r, rep)
		}
	}
	if read(t, local, "c.txt"+TheirsSuffix) != "c theirs" {
		t.Fatal("edit-vs-delete: theirs not written beside")
	}
}

func TestMergeAlreadyThere(t *testing.T) {
	_, rep := mergeCase(t, map[string]string{"a.txt": "x"},
		func(d string) { write(t, d, "a.txt", "same") },
		func(d string) { write(t, d, "a.txt", "same") })
	if rep.Unchanged != 1 || len(rep.Applied) != 0 || len(rep.Conflicts) != 0 {
		t.Fatalf("identical edits: %+v", rep)
	}
}
