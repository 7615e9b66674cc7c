package main

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestFullDiskTaskOutput: a task that prints more than the data dir's
// disk has room for, run here and delegated. The task log keeps the store's
// reserve: the output is kept up to what fit, the task is killed, and run
// fails with resource_exhausted: no space left on … (before, the spill file
// ate the reserve, badger wrote through its memory maps onto the full disk
// and the peers died of SIGBUS; a task that got through was reported a
// success, exit 0). The peers keep serving, restart, their stores open and
// verify, tasks and logs answer. A task whose record cannot be written is
// refused with the same error. Once space is freed the same task runs whole.
func TestFullDiskTaskOutput(t *testing.T) {
	small := testnet.SmallTmpfs(t, 512)
	bin := testnet.BuildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A small cap in the store: most of the output goes to spill files,
	// archived as DAGs once a task ends.
	edits := map[string]string{"log_store_cap_mib = 64": "log_store_cap_mib = 8"}
	maps.Copy(edits, testnet.TestNamespaceEdit)
	pn := processPair(ctx, t, bin, filepath.Join(small, "peers"), t.TempDir(), edits)
	p1, p2 := pn.Peers[0], pn.Peers[1]
	const reserve = 64 << 20 // store.DefaultConfig's ReserveBytes
	const outputBytes = 40_000_000
	script := "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 40000000"
	ballast := filepath.Join(small, "ballast")
	// leave fills the disk until free bytes are left.
	leave := func(free int64) {
		t.Helper()
		var st syscall.Statfs_t
		if err := syscall.Statfs(small, &st); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(ballast)
		size := int64(0)
		if fi != nil {
			size = fi.Size()
		}
		if err := os.Truncate(ballast, 0); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		avail := int64(st.Bavail)*st.Bsize + size
		testnet.WriteFile(t, ballast, make([]byte, avail-free), 0o644)
		logDF(t, small, "ballast written")
	}
	alive := func(when string) {
		t.Helper()
		for _, p := range []*testnet.ProcessPeer{p1, p2} {
			select {
			case <-p.Exited():
				b, _ := os.ReadFile(p.LogFile)
				t.Fatalf("%s: %s died; its log ends:\n%s", when, p.Name, b[max(0, len(b)-3000):])
			default:
			}
		}
	}
	type ran struct{ name, id string }
	var runs []ran
	runOn := func(name string, extra ...string) result {
		args := append([]string{"run", "--data", p1.DataDir}, extra...)
		start := time.Now()
		r := run(t, bin, append(args, "--", "sh", "-c", script)...)
		t.Logf("%s: exit %d after %s, %d bytes of stdout; stderr:\n%s", name, r.code, time.Since(start).Round(time.Millisecond), len(r.stdout), r.stderr)
		return r
	}

	// (a) Room for 16 MiB of output past the reserve, 40 MB printed.
	for _, c := range []struct {
		name  string
		extra []string
	}{{"here", nil}, {"delegated", []string{"--peer", p2.ID}}} {
		leave(reserve + 16<<20)
		r := runOn("run "+c.name+" on a full disk", c.extra...)
		if r.code == 0 || !strings.Contains(r.stderr, "resource_exhausted: no space left on") {
			t.Fatalf("run %s on a full disk: exit %d, want a failure saying resource_exhausted: no space left on …", c.name, r.code)
		}
		alive("run " + c.name)
		ls := run(t, bin, "tasks", "--json", "--data", p1.DataDir)
		var list []struct {
			ID    string `json:"task_id"`
			State string `json:"state"`
		}
		if err := json.Unmarshal([]byte(ls.stdout), &list); err != nil || len(list) == 0 {
			t.Fatalf("tasks --json: %v: %s %s", err, ls.stdout, ls.stderr)
		}
		runs = append(runs, ran{c.name, list[0].ID})
		t.Logf("tasks: %s is %s", list[0].ID, list[0].State)
	}
	// The peers answer for both tasks: their record and the output kept.
	checkRecords := func(when string) {
		t.Helper()
		for _, rn := range runs {
			st, ok := resultOf(t, bin, p1.DataDir, rn.id)
			if !ok || st.Result == nil || !strings.Contains(st.Result.Error+st.Error, "resource_exhausted: no space left on") {
				t.Fatalf("%s: result of the task run %s: %+v", when, rn.name, st)
			}
			r := run(t, bin, "logs", "--data", p1.DataDir, rn.id)
			if r.code != 0 || len(r.stdout) == 0 || len(r.stdout) >= outputBytes || !strings.HasPrefix(r.stdout, "0123456789abcdefghijklmnopqrstuvwxyz\n0") {
				t.Fatalf("%s: logs of the task run %s: exit %d, %d bytes: %s", when, rn.name, r.code, len(r.stdout), r.stderr)
			}
			t.Logf("%s: task run %s: state %s, exit %d; logs: %d bytes kept", when, rn.name, st.State, st.Result.ExitCode, len(r.stdout))
		}
	}
	checkRecords("on the full disk")

	// A task whose record cannot be written (less than half the reserve
	// free) is refused, and says why.
	leave(reserve / 4)
	r := run(t, bin, "run", "--data", p1.DataDir, "--", "echo", "hi")
	t.Logf("run with no room for its record: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	if r.code == 0 || !strings.Contains(r.stderr, "no space left on") {
		t.Fatalf("run with no room for its record: exit %d, want no space left on …", r.code)
	}
	alive("a record refused")

	// (b) Restarted, with the disk as full: the stores open and verify.
	leave(reserve - 8<<20)
	for _, p := range []*testnet.ProcessPeer{p1, p2} {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-p.Exited()
		if err := p.ExitErr(); err != nil {
			t.Fatalf("%s stopped with %v on a full disk", p.Name, err)
		}
		if err := p.Restart(ctx); err != nil {
			b, _ := os.ReadFile(p.LogFile)
			t.Fatalf("restart %s on a full disk: %v\n%s", p.Name, err, b[max(0, len(b)-3000):])
		}
		if r := run(t, bin, "ws", "verify", "--data", p.DataDir); r.code != 0 {
			t.Fatalf("ws verify of %s after a full disk: %s %s", p.Name, r.stdout, r.stderr)
		}
	}
	if err := pn.WaitRejoined(ctx, p2); err != nil {
		t.Fatal(err)
	}
	checkRecords("after the restart")

	// (c) Space freed: the same task runs whole, here and delegated.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	for _, extra := range [][]string{nil, {"--peer", p2.ID}} {
		if r := runOn("run once space is freed", extra...); r.code != 0 || len(r.stdout) != outputBytes {
			t.Fatalf("run once space is freed: exit %d, %d bytes", r.code, len(r.stdout))
		}
	}
	alive("the end")
}
