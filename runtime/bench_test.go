package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkStartLatency: from asking for `echo hi` to its first output.
// ns/op is that latency; total-ms/op adds the task's end and the removal of
// its container and snapshot (untimed in ns/op for runc and gvisor; ctr-run
// is one process, so its total is the process's run time, `--rm` included).
//
//	ctr-run: the ctr binary (`ctr -n cortex-test run --rm IMAGE ID echo hi`).
//	runc, gvisor: this executor, with the whole security profile.
func BenchmarkStartLatency(b *testing.B) {
	b.Run("ctr-run", func(b *testing.B) {
		te := newTestExec(b)
		if _, err := exec.LookPath("ctr"); err != nil {
			b.Fatalf("ctr not found: %s", needDeps)
		}
		var total time.Duration
		for b.Loop() {
			id := te.id()
			start := time.Now()
			cmd := exec.Command("ctr", "-n", testNamespace, "run", "--rm", testImage, id, "echo", "hi")
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 16)
			n, err := out.Read(buf)
			if err != nil || string(buf[:n]) != "hi\n" {
				b.Fatalf("first read %q, %v", buf[:n], err)
			}
			b.StopTimer()
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			b.StartTimer()
		}
		b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "total-ms/op")
	})
	for _, iso := range []Isolation{IsolationRunc, IsolationGVisor} {
		b.Run(string(iso), func(b *testing.B) {
			te := newTestExec(b)
			ctx := context.Background()
			var total time.Duration
			for b.Loop() {
				spec := Spec{ID: te.id(), Image: testImage, Command: []string{"echo", "hi"}, Isolation: iso}
				start := time.Now()
				task, err := te.Start(ctx, spec)
				if err != nil {
					b.Fatal(err)
				}
				c, ok := <-task.Output()
				if !ok || string(c.Data) != "hi\n" {
					b.Fatalf("first chunk %q", c.Data)
				}
				b.StopTimer()
				for range task.Output() {
				}
				if res, err := task.Wait(ctx); err != nil || res.ExitCode != 0 {
					b.Fatalf("%+v %v", res, err)
				}
				total += time.Since(start)
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "total-ms/op")
		})
	}
}

// BenchmarkOutputThroughput: a task writes 1 GiB to stdout; the reader
// counts and hashes it and checks it byte for byte. MB/s covers the whole
// task, start and removal included.
//
//	random: 64 MiB of seeded pseudo-random data, cat 16 times from the workspace.
//
// peak-heap-MiB is the Go heap's high-water mark while the output streams
// (live chunks plus garbage not yet collected): it stays flat, whatever the
// size of the output.
//
//	ctr-run: the baseline, ctr's own copying of the same dd's output.
//	zeros:  dd if=/dev/zero bs=1M count=1024 (busybox's head -c writes in
//	        small pieces and tops out near 300 MB/s on its own).
func BenchmarkOutputThroughput(b *testing.B) {
	const total = 1 << 30
	const block = 64 << 20
	b.Run("random", func(b *testing.B) {
		te := newTestExec(b)
		ws := b.TempDir()
		data := make([]byte, block)
		rng := rand.NewChaCha8([32]byte{1, 2, 3})
		_, _ = rng.Read(data)
		if err := os.WriteFile(filepath.Join(ws, "blk"), data, 0o644); err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		for range total / block {
			h.Write(data)
		}
		want := h.Sum(nil)
		data = nil // not part of the heap measured
		script := fmt.Sprintf(`for i in $(seq %d); do cat blk; done`, total/block)
		throughput(b, te, Spec{Command: []string{"sh", "-c", script}, WorkspaceDir: ws}, total, want)
	})
	b.Run("ctr-run", func(b *testing.B) {
		// The baseline: ctr's own output copying, the same dd as "zeros",
		// read and hashed the same way from ctr's stdout.
		te := newTestExec(b)
		h := sha256.New()
		zeros := make([]byte, block)
		for range total / block {
			h.Write(zeros)
		}
		want := h.Sum(nil)
		b.SetBytes(total)
		buf := make([]byte, 32<<10)
		for b.Loop() {
			cmd := exec.Command("ctr", "-n", testNamespace, "run", "--rm", testImage, te.id(),
				"dd", "if=/dev/zero", "bs=1048576", fmt.Sprintf("count=%d", total>>20))
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			h := sha256.New()
			n, err := io.CopyBuffer(h, out, buf)
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
			if n != total || !bytes.Equal(h.Sum(nil), want) {
				b.Fatalf("got %d bytes (want %d)", n, total)
			}
		}
	})
	b.Run("zeros", func(b *testing.B) {
		te := newTestExec(b)
		h := sha256.New()
		zeros := make([]byte, block)
		for range total / block {
			h.Write(zeros)
		}
		throughput(b, te, Spec{Command: []string{"dd", "if=/dev/zero", "bs=1048576", fmt.Sprintf("count=%d", total>>20)}}, total, h.Sum(nil))
	})
}

// heapSampler tracks the peak of the Go heap's object bytes (live and not
// yet collected) while output streams through.
type heapSampler struct {
	sample []metrics.Sample
	peak   uint64
}

func newHeapSampler() *heapSampler {
	return &heapSampler{sample: []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}}
}

func (h *heapSampler) take() {
	metrics.Read(h.sample)
	h.peak = max(h.peak, h.sample[0].Value.Uint64())
}

func throughput(b *testing.B, te *testExec, spec Spec, total int64, want []byte) {
	ctx := context.Background()
	b.SetBytes(total)
	spec.Image = testImage
	runtime.GC()
	heap := newHeapSampler()
	for b.Loop() {
		spec.ID = te.id()
		task, err := te.Start(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		var n int64
		chunks := 0
		for c := range task.Output() {
			if chunks++; chunks%256 == 0 {
				heap.take()
			}
			if c.Stream != Stdout {
				continue // dd's summary
			}
			n += int64(len(c.Data))
			h.Write(c.Data)
		}
		res, err := task.Wait(ctx)
		if err != nil || res.ExitCode != 0 {
			b.Fatalf("%+v %v", res, err)
		}
		if n != total || !bytes.Equal(h.Sum(nil), want) {
			b.Fatalf("got %d bytes (want %d), hash match %v", n, total, bytes.Equal(h.Sum(nil), want))
		}
	}
	b.ReportMetric(float64(heap.peak)/(1<<20), "peak-heap-MiB")
}

// BenchmarkConcurrentTasks: 20 tasks started at once on one executor, each
// writing 2,000 numbered lines to stdout and one to stderr. ns/op is the
// wall time until all have ended and been removed; every output is checked
// line for line, and nothing of theirs may remain in containerd or in the
// mount table afterwards.
func BenchmarkConcurrentTasks(b *testing.B) {
	const n, lines = 20, 2000
	te := newTestExec(b)
	want := make([]string, n)
	for i := range n {
		var sb strings.Builder
		for j := 1; j <= lines; j++ {
			fmt.Fprintf(&sb, "task %d line %d\n", i, j)
		}
		want[i] = sb.String()
	}
	for b.Loop() {
		var wg sync.WaitGroup
		results := make([]ran, n)
		for i := range n {
			spec := te.spec(fmt.Sprintf(`for j in $(seq 1 %d); do echo "task %d line $j"; done; echo "err %d" >&2`, lines, i, i))
			wg.Go(func() { results[i] = te.run(b, spec) })
		}
		wg.Wait()
		for i, r := range results {
			if r.Err != nil || r.Result.ExitCode != 0 || r.Stdout != want[i] || r.Stderr != fmt.Sprintf("err %d\n", i) {
				b.Fatalf("task %d: exit %d, %v, stdout %d bytes (want %d), stderr %q", i, r.Result.ExitCode, r.Err, len(r.Stdout), len(want[i]), r.Stderr)
			}
		}
		if te.Running() != 0 {
			b.Fatalf("Running() = %d after all ended", te.Running())
		}
	}
	b.StopTimer()
	te.assertNothingLeft()
}
