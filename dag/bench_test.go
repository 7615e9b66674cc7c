package dag

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
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

// openBenchStore opens a store in a fresh directory on disk and returns a
// function that closes it and removes the directory, so a benchmark can
// make one per iteration without filling the disk.
func openBenchStore(b *testing.B) (*Store, func()) {
	b.Helper()
	dir, err := os.MkdirTemp(b.TempDir(), "store")
	if err != nil {
		b.Fatal(err)
	}
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithMemTableSize(8 << 20).WithValueLogFileSize(64 << 20))
	if err != nil {
		b.Fatal(err)
	}
	return NewStore(db), func() {
		db.Close()
		os.RemoveAll(dir)
	}
}

// cpuTime is the CPU time the process has used, user and system: less
// disturbed than wall time by other work on the machine.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter adds up the CPU time of the timed parts of a benchmark and
// reports it per op as "cpu-ms/op".
type cpuMeter struct {
	total, start time.Duration
}

func (m *cpuMeter) begin(b *testing.B) { m.start = cpuTime(b) }
func (m *cpuMeter) end(b *testing.B)   { m.total += cpuTime(b) - m.start }
func (m *cpuMeter) report(b *testing.B) {
	b.ReportMetric(float64(m.total)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// settle waits, untimed, until the process is idle: badger compacts what
// a setup import wrote in the background, which on a small machine would
// otherwise take CPU from the imports being measured.
func settle(b *testing.B) {
	b.Helper()
	const (
		interval = 100 * time.Millisecond
		idle     = 5 * time.Millisecond // CPU per interval
		patience = time.Minute
	)
	for deadline := time.Now().Add(patience); time.Now().Before(deadline); {
		before := cpuTime(b)
		time.Sleep(interval)
		if cpuTime(b)-before < idle {
			return
		}
	}
	b.Logf("store still busy after %v", patience)
}

// BenchmarkReimport measures, on one copy of the Go source tree (about
// 11,500 files) and a store on disk: a full import into an empty store, a
// re-import with nothing changed (the cost of noticing that), and a
// re-import after 10 files changed. What matters is the ratio of the last
// two to the first, measured in the same run. Besides wall time each
// reports the process's CPU time per import (cpu-ms/op). The store settles
// after the setup import, so the figures are those of a re-import made some
// time after the last one.
func BenchmarkReimport(b *testing.B) {
	src := goSrcCopy(b)
	ctx := context.Background()

	b.Run("full", func(b *testing.B) {
		var root string
		var cpu cpuMeter
		for b.Loop() {
			b.StopTimer()
			s, done := openBenchStore(b)
			b.StartTimer()
			cpu.begin(b)
			r, err := s.Import(ctx, src, ImportOptions{})
			cpu.end(b)
			if err != nil {
				b.Fatal(err)
			}
			if root != "" && r.Root.String() != root {
				b.Fatalf("root %s, then %s", root, r.Root)
			}
			root = r.Root.String()
			b.StopTimer()
			done()
			b.StartTimer()
		}
		cpu.report(b)
	})

	b.Run("nochange", func(b *testing.B) {
		s, done := openBenchStore(b)
		defer done()
		first, err := s.Import(ctx, src, ImportOptions{})
		if err != nil {
			b.Fatal(err)
		}
		settle(b)
		var cpu cpuMeter
		for b.Loop() {
			cpu.begin(b)
			r, err := s.Import(ctx, src, ImportOptions{})
			cpu.end(b)
			if err != nil || r.FilesRead != 0 || !r.Root.Equals(first.Root) {
				b.Fatalf("%+v %v", r, err)
			}
		}
		cpu.report(b)
	})

	for _, watched := range []bool{false, true} {
		name := "changed10"
		if watched {
			name += "-watched"
		}
		b.Run(name, func(b *testing.B) { benchChanged10(b, src, watched) })
	}
}

// benchChanged10 re-imports src after appending a line to 10 of its files,
// with or without a watcher.
func benchChanged10(b *testing.B, src string, watched bool) {
	ctx := context.Background()
	var opts ImportOptions
	if watched {
		w, err := NewWatcher()
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		opts.Watch = w
	}
	{
		s, done := openBenchStore(b)
		defer done()
		prev, err := s.Import(ctx, src, opts)
		if err != nil {
			b.Fatal(err)
		}
		victims := spreadFiles(b, src, 10)
		settle(b)
		var read int
		var cpu cpuMeter
		i := 0
		for b.Loop() {
			b.StopTimer()
			i++
			for _, p := range victims {
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := f.WriteString("// " + strconv.Itoa(i) + "\n"); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
			b.StartTimer()
			cpu.begin(b)
			r, err := s.Import(ctx, src, opts)
			cpu.end(b)
			if err != nil || r.FilesRead < len(victims) || r.Root.Equals(prev.Root) {
				b.Fatalf("%+v %v", r, err)
			}
			read += r.FilesRead
			prev = r
		}
		b.ReportMetric(float64(read)/float64(b.N), "files-read/op")
		cpu.report(b)
	}
}

// spreadFiles picks n regular files spread over the tree, in different
// directories as far as the tree allows.
func spreadFiles(b *testing.B, root string, n int) []string {
	b.Helper()
	var all []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && d.Name() != ".cortexignore" {
			all = append(all, p)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	slices.Sort(all)
	var out []string
	for i := range n {
		out = append(out, all[(2*i+1)*len(all)/(2*n)])
	}
	return out
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
