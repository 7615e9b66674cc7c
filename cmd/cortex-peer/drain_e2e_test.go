package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestDrain drains a peer that runs a task for another: the mesh learns it
// at once, a task submitted meanwhile lands elsewhere and one aimed at it
// is refused as draining; the running task completes, its result is
// delivered, and the peer exits 0. Started again it is eligible. A second
// drain with a short deadline hands a long task back as returned within
// the stated bound, and SIGTERM twice stops a draining peer at once.
func TestDrain(t *testing.T) {
	bin := testnet.BuildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pn := processPair(ctx, t, bin, t.TempDir(), t.TempDir(), nil)
	drained, coord := pn.Peers[0], pn.Peers[1]

	// make bench-lifecycle drains a peer running a 20 s task.
	taskSeconds := 4
	if v, err := strconv.Atoi(os.Getenv("CORTEX_DRAIN_TASK_SECONDS")); err == nil && v > 0 {
		taskSeconds = v
	}
	id := runDetached(t, bin, coord, drained, fmt.Sprintf("sleep %d; echo finished", taskSeconds))
	waitFor(t, "the task to run", 30*time.Second, func() bool {
		st, ok := resultOf(t, bin, coord.DataDir, id)
		return ok && st.State == "running"
	})
	type drainOut struct {
		Completed, Returned, LeftUndelivered int
		Seconds                              float64
		Stopping                             bool
	}
	done := make(chan result, 1)
	go func() { done <- run(t, bin, "drain", "--json", "--deadline", "1m", "--data", drained.DataDir) }()

	waitFor(t, "the mesh to see the peer draining", 15*time.Second, func() bool {
		r := run(t, bin, "peers", "--json", "--data", coord.DataDir)
		var peers []struct {
			ID       string `json:"id"`
			Draining bool   `json:"draining"`
		}
		_ = json.Unmarshal([]byte(r.stdout), &peers)
		for _, p := range peers {
			if p.ID == drained.ID && p.Draining {
				return true
			}
		}
		return false
	})
	if r := run(t, bin, "run", "--data", coord.DataDir, "--peer", drained.ID, "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "draining") {
		t.Fatalf("a task aimed at the draining peer: exit %d: %s", r.code, r.stderr)
	}
	r := run(t, bin, "run", "--json", "--data", coord.DataDir, "--", "echo", "elsewhere")
	if r.code != 0 || !strings.Contains(r.stdout, "elsewhere") && !strings.Contains(r.stdout, `"exit_code": 0`) {
		t.Fatalf("a task submitted during the drain: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}

	var out drainOut
	select {
	case r := <-done:
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
			t.Fatalf("drain: exit %d: %s %s", r.code, r.stdout, r.stderr)
		}
	case <-time.After(time.Minute + time.Duration(taskSeconds)*time.Second):
		t.Fatal("drain did not end in time")
	}
	t.Logf("FIGURE drain with a %d s task running: %+v", taskSeconds, out)
	if out.Completed != 1 || out.Returned != 0 || out.LeftUndelivered != 0 || !out.Stopping {
		t.Fatalf("drain reported %+v, want the one task completed, nothing left, stopping", out)
	}
	select {
	case <-drained.Exited():
		if err := drained.ExitErr(); err != nil {
			t.Fatalf("the drained peer exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the drained peer did not exit")
	}
	st, ok := resultOf(t, bin, coord.DataDir, id)
	if !ok || st.State != "delivered" || st.Result == nil || st.Result.ExitCode != 0 {
		t.Fatalf("the task that ran through the drain: %+v", st)
	}

	// Started again (an update's restart is no decommission): eligible.
	if err := drained.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pn.WaitRejoined(ctx, drained); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restarted peer to take tasks", 30*time.Second, func() bool {
		return run(t, bin, "run", "--data", coord.DataDir, "--peer", drained.ID, "--", "true").code == 0
	})

	// A deadline shorter than the task: handed back as returned, within
	// deadline + 40 s.
	long := runDetached(t, bin, coord, drained, "sleep 120")
	waitFor(t, "the long task to run", 30*time.Second, func() bool {
		st, ok := resultOf(t, bin, coord.DataDir, long)
		return ok && st.State == "running"
	})
	r = run(t, bin, "drain", "--json", "--stay", "--deadline", "2s", "--data", drained.DataDir)
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
		t.Fatalf("drain --stay --deadline 2s: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("drain --stay --deadline 2s with a 120 s task running: %+v", out)
	if out.Returned != 1 || out.Stopping || out.Seconds > 2+40 {
		t.Fatalf("drain --deadline 2s reported %+v, want one returned within 42 s, staying", out)
	}
	waitFor(t, "the coordinator to hold the returned task", 30*time.Second, func() bool {
		st, ok := resultOf(t, bin, coord.DataDir, long)
		return ok && st.State == "returned"
	})
	if !drained.Running() {
		t.Fatal("a drain --stay stopped the peer")
	}
	if r := run(t, bin, "eligible", "--data", drained.DataDir); r.code != 0 || !strings.Contains(r.stdout, "eligible again") {
		t.Fatalf("eligible: %d %s %s", r.code, r.stdout, r.stderr)
	}

	// SIGTERM drains; a second one stops at once, the task killed.
	runDetached(t, bin, coord, drained, "sleep 120")
	if err := drained.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-drained.Exited():
		t.Fatal("the peer stopped on the first SIGTERM with a task running: it must drain")
	case <-time.After(1500 * time.Millisecond):
	}
	if err := drained.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-drained.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("a second SIGTERM did not stop the draining peer")
	}
}
