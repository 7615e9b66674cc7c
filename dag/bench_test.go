package dag

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goSrcCopy copies the Go source tree into a temporary directory once per
// benchmark: a real corpus of many small files.
func goSrcCopy(b *testing.B) string {
	b.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Fatal(err)
	}
	dst := filepath.Join(b.TempDir(), "src")
	if err := exec.Command("cp", "-a", filepath.Join(strings.TrimSpace(string(out)), "src"), dst).Run(); err != nil {
		b.Fatal(err)
	}
	return dst
}

// BenchmarkReimportUnchanged measures an import of a tree the index vouches
// for entirely: the cost of noticing that nothing changed.
func BenchmarkReimportUnchanged(b *testing.B) {
	s := openStore(b)
	src := goSrcCopy(b)
	ctx := context.Background()
	first, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		r, err := s.Import(ctx, src, ImportOptions{})
		if err != nil || r.FilesRead != 0 || !r.Root.Equals(first.Root) {
			b.Fatalf("%+v %v", r, err)
		}
	}
}

// BenchmarkExportTree measures writing the Go source tree from the store.
func BenchmarkExportTree(b *testing.B) {
	s := openStore(b)
	src := goSrcCopy(b)
	ctx := context.Background()
	r, err := s.Import(ctx, src, ImportOptions{})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Export(ctx, r.Root, filepath.Join(dir, "out"+string(rune('a'+i%26))+strings.Repeat("x", i/26)), ExportOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
