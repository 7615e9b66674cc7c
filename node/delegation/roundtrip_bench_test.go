package delegation_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// goSrcCopy copies the Go distribution's src tree (the corpus of the
// workspace figures) into a fresh directory and returns it with its file
// count.
func goSrcCopy(b *testing.B) (string, int) {
	b.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Fatal(err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "src")
	dst := filepath.Join(b.TempDir(), "src")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		b.Fatalf("copy %s: %v: %s", src, err, out)
	}
	files := 0
	_ = filepath.WalkDir(dst, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files++
		}
		return nil
	})
	return dst, files
}

// BenchmarkDelegationRoundTrip runs tasks on peer 2 of a 3-peer loopback
// testnet, through peer 1's API, on a copy of the Go src tree, and counts
// the stream bytes between the two peers both ways (libp2p's bandwidth
// counter: payload, without TCP, noise and yamux framing):
//
//	first: the executor holds nothing; the whole tree travels once.
//	ten-changed: the executor holds the workspace (it holds the last
//	  result, which is the new base); the task appends a line to 10 files,
//	  which come back and are merged. Per run: bytes to the executor, bytes
//	  back, and the size of the 10 files.
//	ctr-run: the baseline of first-output-held, `ctr run --rm` of the
//	  same image (no workspace: ctr has no notion of one).
//	first-output-held: `echo hi` on the held workspace, Run called to the
//	  first output line.
func BenchmarkDelegationRoundTrip(b *testing.B) {
	ws, files := goSrcCopy(b)
	tn := testnet.New(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := tn.WaitMesh(ctx); err != nil {
		b.Fatal(err)
	}
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	coord, executor := tn.Peers[0].Node, tn.Peers[1].Node.ID()
	run := func(script string, fn func(*apiv1.RunEvent)) *apiv1.TaskResult {
		res, err := c.Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", script}}, Workspace: ws, Peer: executor.String()}, fn)
		if err != nil || res.GetExitCode() != 0 {
			b.Fatalf("%+v %v", res, err)
		}
		return res
	}
	traffic := func() (in, out int64) { return coord.Host().Traffic(executor) }
	b.Logf("workspace: %d files", files)

	// Only the first run moves the tree: it is measured once, whatever -benchtime says.
	b.Run("first", func(b *testing.B) {
		var ms, to, from int64
		for i := 0; b.Loop(); i++ {
			if i > 0 {
				continue
			}
			in0, out0 := traffic()
			start := time.Now()
			run("true", nil)
			in1, out1 := traffic()
			ms, to, from = time.Since(start).Milliseconds(), out1-out0, in1-in0
		}
		b.ReportMetric(float64(ms), "ms")
		b.ReportMetric(float64(to), "to-executor-B")
		b.ReportMetric(float64(from), "from-executor-B")
	})
	changed := []string{"fmt/print.go", "fmt/scan.go", "strings/strings.go", "bytes/bytes.go", "os/file.go",
		"net/http/server.go", "sort/sort.go", "io/io.go", "errors/errors.go", "time/time.go"}
	b.Run("ten-changed", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			script := fmt.Sprintf("for f in %s; do echo '// round %d' >> $f; done", strings.Join(changed, " "), i)
			in0, out0 := traffic()
			start := time.Now()
			res := run(script, nil)
			in1, out1 := traffic()
			if m := res.GetMerge(); m == nil || len(m.GetApplied()) != len(changed) {
				b.Fatalf("merge report %+v: want %d files applied", m, len(changed))
			}
			var size int64
			for _, f := range changed {
				st, err := os.Stat(filepath.Join(ws, f))
				if err != nil {
					b.Fatal(err)
				}
				size += st.Size()
			}
			b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms")
			b.ReportMetric(float64(out1-out0), "to-executor-B")
			b.ReportMetric(float64(in1-in0), "from-executor-B")
			b.ReportMetric(float64(size), "changed-files-B")
		}
	})
	b.Run("ctr-run", benchCtrFirstOutput)
	b.Run("first-output-held", func(b *testing.B) {
		var firsts []time.Duration
		for b.Loop() {
			start := time.Now()
			var first time.Duration
			run("echo hi", func(ev *apiv1.RunEvent) {
				if _, ok := ev.GetEvent().(*apiv1.RunEvent_Output); ok && first == 0 {
					first = time.Since(start)
				}
			})
			firsts = append(firsts, first)
		}
		reportMedian(b, firsts, "first-ms")
	})
}
