package testnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// Helpers shared by the tests of the capability packages, which all drive
// real peers through their API.

// VerifyNoLeaks runs a package's tests and fails if goroutines outlive
// them; call it from TestMain.
func VerifyNoLeaks(m *testing.M) { goleak.VerifyTestMain(m, processGoroutines()...) }

// processGoroutines are the goroutines libp2p's logging and metrics
// dependencies start once per process and never stop: not leaks.
func processGoroutines() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	}
}

// Context is a context that ends after d or with the test.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Eventually waits until cond holds, polling, and fails the test after d.
// Tests wait on conditions, never on timings: d is a bound for a starved
// machine, not an expectation.
func Eventually(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WriteFile writes p, making its directories.
func WriteFile(t testing.TB, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
}

// Sees reports whether p's peer book lists the peer id.
func (p *Peer) Sees(id string) bool {
	for _, e := range p.Node.Peers() {
		if e.ID.String() == id {
			return true
		}
	}
	return false
}

// Clients dials the API of every peer; the clients close with the test.
func (n *Net) Clients(t testing.TB) []*apiclient.Client {
	t.Helper()
	var cs []*apiclient.Client
	for _, p := range n.Peers {
		c, err := apiclient.Dial(p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		cs = append(cs, c)
	}
	return cs
}

// RunEvents collects what a Run call streams.
type RunEvents struct {
	Stdout, Stderr bytes.Buffer
	Started        *apiv1.TaskStarted
	FirstOutput    time.Time
	StartedCh      chan struct{} // closed on the started event, when not nil
}

// Event takes one event; pass it as Run's onEvent.
func (c *RunEvents) Event(ev *apiv1.RunEvent) {
	switch e := ev.GetEvent().(type) {
	case *apiv1.RunEvent_Started:
		c.Started = e.Started
		if c.StartedCh != nil {
			close(c.StartedCh)
		}
	case *apiv1.RunEvent_Output:
		if c.FirstOutput.IsZero() {
			c.FirstOutput = time.Now()
		}
		if e.Output.GetStream() == "stderr" {
			c.Stderr.Write(e.Output.GetData())
		} else {
			c.Stdout.Write(e.Output.GetData())
		}
	}
}

// SmallTmpfs mounts a tmpfs of mib MiB on a new temporary directory,
// unmounted at the end of the test, and returns its path: a small disk to
// fill. It needs root; without it the test is skipped (CI runs as root).
func SmallTmpfs(t testing.TB, mib int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%dm", mib)); err != nil {
		t.Fatalf("mount a %d MiB tmpfs: %v", mib, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}
