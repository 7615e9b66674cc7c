package node_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// A task run with retry_on_drain whose executor is drained past the
// drain's deadline comes back returned and is placed again on another
// peer that fits, where it runs to its end; the caller's run succeeds.
func TestRetryOnDrain(t *testing.T) {
	tn := testnet.New(t, 3, testnet.WithConfig(func(i int, cfg *node.Config) {
		if i > 0 {
			cfg.Labels["pool"] = "workers"
		}
	}))
	ctx := testnet.Context(t, 2*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	var (
		mu       sync.Mutex
		started  []string // executor of each attempt
		progress []string
	)
	firstStarted := make(chan string, 1)
	done := make(chan error, 1)
	var res *apiv1.TaskResult
	go func() {
		var err error
		res, err = cs[0].Run(ctx, &apiv1.RunRequest{
			Spec:         &apiv1.TaskSpec{Command: []string{"sh", "-c", "sleep 3; echo finished"}},
			Labels:       map[string]string{"pool": "workers"},
			RetryOnDrain: true,
		}, func(ev *apiv1.RunEvent) {
			mu.Lock()
			defer mu.Unlock()
			switch e := ev.GetEvent().(type) {
			case *apiv1.RunEvent_Started:
				started = append(started, e.Started.GetPeerId())
				if len(started) == 1 {
					firstStarted <- e.Started.GetPeerId()
				}
			case *apiv1.RunEvent_Progress:
				progress = append(progress, e.Progress.GetPhase())
			}
		})
		done <- err
	}()
	var first string
	select {
	case first = <-firstStarted:
	case <-ctx.Done():
		t.Fatal("the task never started")
	}
	var drained *testnet.Peer
	for _, p := range tn.Peers[1:] {
		if p.Node.ID().String() == first {
			drained = p
		}
	}
	if drained == nil {
		t.Fatalf("the task started on %s, not a worker", first)
	}
	time.Sleep(500 * time.Millisecond) // let it run
	st, err := drained.Node.Drain(ctx, 100*time.Millisecond, true, nil)
	if err != nil || st.Returned != 1 {
		t.Fatalf("drain: %+v %v", st, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run with retry_on_drain: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the run did not end")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(started) != 2 || started[1] == first || res.GetExitCode() != 0 {
		t.Fatalf("attempts on %v (drained %s), exit %d, progress %q", started, first, res.GetExitCode(), progress)
	}
	if !strings.HasSuffix(res.GetTaskId(), "-r1") {
		t.Fatalf("the second attempt's id %q, want the first's with -r1", res.GetTaskId())
	}
	info, err := cs[0].ListTasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, ti := range info {
		states[ti.GetTaskId()] = ti.GetState()
	}
	if states[strings.TrimSuffix(res.GetTaskId(), "-r1")] != "returned" || states[res.GetTaskId()] != "delivered" {
		t.Fatalf("task states %v", states)
	}
}
