package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
	"github.com/cortex-peer/cortex-peer/testnet/flood"
)

// TestHostilePeer floods one peer of a two-peer mesh from a third member,
// which holds the mesh key, on every surface at once (held streams with
// 1 GiB length prefixes, garbage requests, 5,000-want bitswap lists,
// gossip with bad and good signatures, task submissions, claims on others'
// tasks), while the other peer runs honest tasks on it. The victim must
// stay up, keep its memory, run the honest tasks, refuse the flooder's
// excess, and say so once per kind. The latencies are logged here and
// compared by `make bench-flood`; a timed assertion would be noise.
func TestHostilePeer(t *testing.T) {
	bin := testnet.BuildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fig, err := flood.RunScenario(ctx, flood.ScenarioOptions{
		Binary: bin, Dir: t.TempDir(), HonestRuns: 2,
		Flood: flood.Config{HeldStreams: 1000, Workers: 2},
		Logf:  t.Logf,
	})
	for _, r := range fig.Report.Rows() {
		t.Logf("flooder: %s: %s", r[0], r[1])
	}
	t.Logf("honest task quiet %v, flooded %v; victim RSS %d MiB before, peak %d MiB",
		fig.Quiet, fig.Flooded, fig.RSSBefore>>20, fig.RSSPeak>>20)
	for msg, n := range fig.Warnings {
		t.Logf("victim warned %d× %q", n, msg)
	}
	if err != nil {
		t.Fatalf("under the flood: %v", err)
	}
	if !fig.VictimAlive {
		t.Fatal("the victim died")
	}
	if fig.RSSPeak >= 512<<20 {
		t.Errorf("victim RSS peaked at %d MiB, want under 512", fig.RSSPeak>>20)
	}
	rep := fig.Report
	if rep.StreamsOpened == 0 || rep.WantLists == 0 || rep.GossipRPCs == 0 || rep.TaskSubmits == 0 || rep.Claims == 0 {
		t.Errorf("an attack did not run: %+v", rep)
	}
	if rep.TasksAccepted > 16 {
		t.Errorf("the victim accepted %d of the flooder's tasks, want at most tasks.max_tasks_per_peer (16)", rep.TasksAccepted)
	}
	if rep.ClaimsRefused != rep.Claims && rep.Claims-rep.ClaimsRefused > 8 {
		t.Errorf("%d of %d claims on others' tasks were not refused", rep.Claims-rep.ClaimsRefused, rep.Claims)
	}
	// Each guard says so once for the flooder, however long the flood.
	// Graylisting and the task share take little of the flood to reach;
	// the budgets depend on how fast the flooder runs (slowly under the
	// race detector), so they are logged at most once.
	for _, g := range []struct {
		msg      string
		min, max int
	}{
		{"peer graylisted on gossip", 1, 1},
		{"peer has as many tasks running here", 1, 1},
		{"peer sends gossip past its budget", 0, 1},
		{"peer sends bitswap wants past its budget", 0, 1},
	} {
		n := 0
		for msg, c := range fig.Warnings {
			if strings.HasPrefix(msg, g.msg) {
				n += c
			}
		}
		if n < g.min || n > g.max {
			t.Errorf("victim warned %d times %q…, want %d to %d", n, g.msg, g.min, g.max)
		}
	}
	for msg, n := range fig.Warnings {
		if n > 3 {
			t.Errorf("victim warned %d times %q: a flooder must not flood the log", n, msg)
		}
	}
}
