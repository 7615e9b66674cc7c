package dag

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// deadPid is the pid of a process that has ended.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// livePid is the pid of another process that runs until the test ends.
func livePid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

// The scratch paths a killed merge or export left (their writer's pid is
// gone) are removed by the next merge or export into the same directory,
// and logged once; those of a live writer, of the other kind, of this
// process, the partial files kept for resume and names with no pid stay.
func TestStaleScratchRemoved(t *testing.T) {
	dead, live, self := strconv.Itoa(deadPid(t)), strconv.Itoa(livePid(t)), strconv.Itoa(os.Getpid())
	leftovers := map[string]string{
		".a.txt.cortex-merge-" + dead + ".0f3a9c":  "half",
		"sub/.x.cortex-merge-" + dead + ".77aa01":  "half",
		".dir.cortex-merge-" + dead + ".1234/":     "",
		".a.txt.cortex-merge-" + live + ".0f3a9d":  "live writer",
		".a.txt.cortex-merge-" + self + ".0f3a9e":  "this process",
		".out.cortex-export-" + dead + ".abcdef/f": "half",
		".out2.cortex-export-" + live + ".abcdef":  "live writer",
		".big.bin.cortex-partial-abcdef":           "kept for resume",
		".old.cortex-merge-0f3a":                   "no pid",
		".c.cortex-get-" + dead + ".deadbeef/a":    "another kind",
		"a.cortex-merge-" + dead + ".0f3a9f":       "not hidden: not ours",
	}
	var logs bytes.Buffer
	s := openStore(t)
	s.log = slog.New(slog.NewTextHandler(&logs, nil))
	ctx := context.Background()
	baseDir, theirsDir, local := t.TempDir(), t.TempDir(), t.TempDir()
	base := map[string]string{"a.txt": lines, "sub/x": "x"}
	writeTree(t, baseDir, base)
	writeTree(t, theirsDir, base)
	writeTree(t, local, base)
	write(t, theirsDir, "a.txt", strings.Replace(lines, "two", "TWO", 1))
	writeTree(t, local, leftovers)
	rb, err := s.Import(ctx, baseDir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := s.Import(ctx, theirsDir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Merge(ctx, rb.Root, rt.Root, local); err != nil {
		t.Fatal(err)
	}
	gone := []string{".a.txt.cortex-merge-" + dead + ".0f3a9c", ".dir.cortex-merge-" + dead + ".1234"}
	check := func(what string, gone []string) {
		t.Helper()
		for rel := range leftovers {
			rel = strings.TrimSuffix(rel, "/")
			if i := strings.Index(rel, "/f"); strings.Contains(rel, "cortex-export") && i > 0 {
				rel = rel[:i]
			}
			if i := strings.Index(rel, "/a"); strings.Contains(rel, "cortex-get") && i > 0 {
				rel = rel[:i]
			}
			_, err := os.Lstat(filepath.Join(local, rel))
			if want := slices.Contains(gone, rel); want != os.IsNotExist(err) {
				t.Errorf("after %s: %s: removed %v, want %v", what, rel, os.IsNotExist(err), want)
			}
		}
	}
	// sub/ is not written by this merge: its leftover waits for one that is.
	check("the merge", gone)
	if n := strings.Count(logs.String(), "removed scratch files an interrupted merge left"); n != 1 {
		t.Fatalf("%d log lines of the removal, want 1:\n%s", n, logs.String())
	}
	t.Logf("merge: %s", strings.TrimSpace(logs.String()))

	logs.Reset()
	if _, err := s.Export(ctx, rt.Root, filepath.Join(local, "exported"), ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	gone = append(gone, ".out.cortex-export-"+dead+".abcdef")
	check("the export", gone)
	if !strings.Contains(logs.String(), "removed scratch paths an interrupted export left") {
		t.Fatalf("the export logged no removal:\n%s", logs.String())
	}
	t.Logf("export: %s", strings.TrimSpace(logs.String()))

	// The get's own kind, as node/artifacts calls it.
	removed, err := RemoveStaleScratch(local, ScratchGet)
	if err != nil || len(removed) != 1 {
		t.Fatalf("get scratch removed: %v %v", removed, err)
	}
	check("a get", append(gone, ".c.cortex-get-"+dead+".deadbeef"))
	// A scratch path this process names carries its pid.
	if p := ScratchPath("/d/f.txt", ScratchMerge, "ab"); p != "/d/.f.txt.cortex-merge-"+self+".ab" {
		t.Fatalf("ScratchPath: %s", p)
	}
}
