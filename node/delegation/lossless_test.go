package delegation_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// Output of a delegated task is never lost, however large and however
// much gossip drops: with gossip queues of 2 messages and a log cap of
// 1 MiB on every peer, every byte reaches the caller in order, and logs
// returns every byte afterwards from the coordinator and from the
// executor. Before acks and spilling, output past the executor's kept log
// was lost for good whenever gossip dropped it.
//
// make test runs 96 MiB once (the race detector slows it); make soak runs
// the 1 GiB five times (CORTEX_LOSSLESS_MIB=1024,
// CORTEX_LOSSLESS_RUNS=5).
func TestLosslessOutputPastTheLogCap(t *testing.T) {
	size := envInt(t, "CORTEX_LOSSLESS_MIB", 96) << 20
	runs := envInt(t, "CORTEX_LOSSLESS_RUNS", 1)
	tn := testnet.New(t, 2, testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.P2P.PubsubQueueSize = 2
		cfg.Delegation.LogStoreCapBytes = 1 << 20
		cfg.Tasks.LogStoreCapBytes = 1 << 20
	}))
	if err := tn.WaitMesh(testnet.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	ctx := testnet.Context(t, time.Duration(runs)*10*time.Minute)
	// The task hashes what it writes: tee copies it to the task's stdout
	// (fd 3) and to sha256sum, whose sum goes to stderr.
	script := fmt.Sprintf(`{ head -c %d /dev/urandom | tee /dev/fd/3 | sha256sum >&2; } 3>&1`, size)
	for run := 1; run <= runs; run++ {
		stdout := sha256.New()
		var stdoutN int64
		var stderr strings.Builder
		res, err := cs[0].Run(ctx, &apiv1.RunRequest{
			Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", script}, TimeoutMs: 600_000},
			Peer: tn.Peers[1].Node.ID().String(),
		}, func(ev *apiv1.RunEvent) {
			if o := ev.GetOutput(); o != nil {
				if o.GetStream() == "stderr" {
					stderr.Write(o.GetData())
				} else {
					stdout.Write(o.GetData())
					stdoutN += int64(len(o.GetData()))
				}
			}
		})
		if err != nil || res.GetExitCode() != 0 || res.GetError() != "" {
			t.Fatalf("run %d: %+v %v", run, res, err)
		}
		want, _, _ := strings.Cut(stderr.String(), " ")
		if len(want) != 64 {
			t.Fatalf("run %d: the task's sum: stderr %q", run, stderr.String())
		}
		if got := hex.EncodeToString(stdout.Sum(nil)); got != want || stdoutN != int64(size) {
			t.Fatalf("run %d: the caller got %d of %d bytes, sha256 %s, want %s", run, stdoutN, size, got, want)
		}
		if res.GetStdoutBytes() != uint64(size) || res.GetLogDroppedBytes() != 0 {
			t.Fatalf("run %d: result counts %d bytes, %d dropped", run, res.GetStdoutBytes(), res.GetLogDroppedBytes())
		}
		for i, c := range cs {
			h := sha256.New()
			var n int64
			if err := c.LogsFrom(ctx, res.GetTaskId(), "stdout", 1, false, func(ch *apiv1.OutputChunk) {
				h.Write(ch.GetData())
				n += int64(len(ch.GetData()))
			}); err != nil {
				t.Fatalf("run %d: logs on peer %d: %v", run, i, err)
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != want {
				t.Fatalf("run %d: logs on peer %d: %d of %d bytes, sha256 %s, want %s", run, i, n, size, got, want)
			}
		}
		t.Logf("run %d: %d MiB whole at the caller and in logs on both peers", run, size>>20)
	}
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
