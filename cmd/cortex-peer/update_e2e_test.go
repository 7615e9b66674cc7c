package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node/release"
	"github.com/cortex-peer/cortex-peer/node/update"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// updateStatus is `update status --json` as the tests read it.
type updateStatus struct {
	Version  string   `json:"version"`
	Current  string   `json:"current"`
	Previous string   `json:"previous"`
	State    string   `json:"state"`
	Bad      []string `json:"bad"`
	Failures []struct {
		Version string `json:"version"`
		Peer    string `json:"peer"`
	} `json:"failures"`
	Releases []struct {
		Version string `json:"version"`
		Verdict string `json:"verdict"`
	} `json:"releases"`
}

func statusOf(t *testing.T, bin string, p *testnet.ProcessPeer) (updateStatus, bool) {
	t.Helper()
	r := run(t, bin, "update", "status", "--json", "--data", p.DataDir)
	var st updateStatus
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		return st, false
	}
	return st, true
}

// updateNet builds this checkout as release 1.0.0, and a 1.0.1 beside it,
// makes a release key, and starts n peers of 1.0.0 that trust it.
func updateNet(t *testing.T, n int, health string) (bin, next, key string, pn *testnet.ProcessNet) {
	t.Helper()
	dir := t.TempDir()
	bin = buildRelease(t, "1.0.0")
	next = filepath.Join(filepath.Dir(buildRelease(t, "1.0.1")), "cortex-peerd")
	keys := filepath.Join(dir, "keys")
	if r := run(t, bin, "release", "keygen", "--out", keys); r.code != 0 {
		t.Fatalf("release keygen: %s", r.stderr)
	}
	pub, err := os.ReadFile(filepath.Join(keys, "release.pub"))
	if err != nil {
		t.Fatal(err)
	}
	edits := map[string]string{
		`trusted_keys = []`:       `trusted_keys = ["` + strings.TrimSpace(string(pub)) + `"]`,
		`health_timeout = "1m0s"`: `health_timeout = "` + health + `"`,
	}
	for k, v := range testnet.TestNamespaceEdit {
		edits[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pn, err = testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: n, Dir: filepath.Join(dir, "net"),
		Heartbeat: 300 * time.Millisecond, AllowedRoots: []string{dir}, ConfigEdits: edits, FixedPorts: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = pn.Stop()
		if t.Failed() {
			for _, p := range pn.Peers {
				b, _ := os.ReadFile(p.LogFile)
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("%s log tail:\n%s", p.Name, b)
			}
		}
	})
	if err := pn.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return bin, next, filepath.Join(keys, "release.key"), pn
}

var (
	releasesMu sync.Mutex
	releases   = map[string]string{}
)

// buildRelease builds this checkout as version once per test process
// (removed by TestMain's RemoveBinary) and returns its cortex-peer.
func buildRelease(t *testing.T, version string) string {
	t.Helper()
	releasesMu.Lock()
	defer releasesMu.Unlock()
	if bin, ok := releases[version]; ok {
		return bin
	}
	dir := filepath.Join(filepath.Dir(testnet.BuildBinary(t)), "release-"+version)
	bin, err := testnet.BuildVersion(dir, version)
	if err != nil {
		t.Fatal(err)
	}
	releases[version] = bin
	return bin
}

func publish(t *testing.T, bin string, p *testnet.ProcessPeer, key, binary, version string, extra ...string) {
	t.Helper()
	args := append([]string{"release", "publish", "--data", p.DataDir, "--key", key, "--binary", binary, "--version", version}, extra...)
	if r := run(t, bin, args...); r.code != 0 {
		t.Fatalf("release publish %s: exit %d: %s %s", version, r.code, r.stdout, r.stderr)
	}
}

// TestSelfUpdate publishes a release built from this checkout to a mesh
// of three peers: all three run it, under the same pids, with a task that
// ran meanwhile completed; then a release whose binary exits at once is
// rolled back on every peer, marked bad, and its failure gossiped.
func TestSelfUpdate(t *testing.T) {
	const health = 10 * time.Second
	bin, next, key, pn := updateNet(t, 3, health.String())
	pids := map[string]int{}
	for _, p := range pn.Peers {
		pids[p.Name] = p.Pid()
	}
	coord := pn.Peers[0]
	task := runDetached(t, bin, coord, pn.Peers[1], "sleep 6; echo survived")

	start := time.Now()
	publish(t, bin, coord, key, next, "1.0.1")
	waitFor(t, "every peer to run 1.0.1", 2*time.Minute, func() bool {
		for _, p := range pn.Peers {
			if st, ok := statusOf(t, bin, p); !ok || st.Version != "1.0.1" {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	t.Logf("FIGURE publish to all 3 peers running 1.0.1: %.1f s", took.Seconds())
	for _, p := range pn.Peers {
		if p.Pid() != pids[p.Name] || !p.Running() {
			t.Fatalf("%s: pid %d, was %d (running %v): the update must keep the pid", p.Name, p.Pid(), pids[p.Name], p.Running())
		}
	}
	var last taskState
	waitFor(t, "the task that ran meanwhile to complete", time.Minute, func() bool {
		st, ok := resultOf(t, bin, coord.DataDir, task)
		if ok && (st.State != last.State || st.Error != last.Error) {
			t.Logf("task %s: %+v", task, st)
			last = st
		}
		return ok && st.State == "delivered" && st.Result != nil && st.Result.ExitCode == 0
	})

	// A release that exits at once: rolled back everywhere.
	bad := filepath.Join(t.TempDir(), "cortex-peerd")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho bad release >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	publish(t, bin, coord, key, bad, "1.0.2")
	waitFor(t, "every peer to roll 1.0.2 back", health+40*time.Second, func() bool {
		for _, p := range pn.Peers {
			st, ok := statusOf(t, bin, p)
			if !ok || st.Version != "1.0.1" {
				return false
			}
			// Each peer either rolled it back or stopped it on a
			// peer's gossiped failure.
			if !slices.Contains(st.Bad, "1.0.2") && !strings.HasPrefix(verdictOf(st, "1.0.2"), "stopped") {
				return false
			}
		}
		return true
	})
	took = time.Since(start)
	t.Logf("FIGURE bad release rolled back or stopped on all 3 peers: %.1f s (health_timeout %s)", took.Seconds(), health)
	if took > health+10*time.Second+5*time.Second { // +5 s: the poll and the publish itself
		t.Errorf("rollback took %v, over health_timeout + 10 s", took)
	}
	for _, p := range pn.Peers {
		st, _ := statusOf(t, bin, p)
		t.Logf("%s: version %s current %q previous %q bad %v verdict %q", p.Name, st.Version, st.Current, st.Previous, st.Bad, verdictOf(st, "1.0.2"))
		if p.Pid() != pids[p.Name] || !p.Running() {
			t.Fatalf("%s: not running under its pid after the rollback", p.Name)
		}
	}
	// Each peer that rolled back tells the others, signed by itself.
	waitFor(t, "the rollbacks to be gossiped", 30*time.Second, func() bool {
		for _, p := range pn.Peers {
			st, _ := statusOf(t, bin, p)
			from := map[string]bool{}
			for _, f := range st.Failures {
				if f.Version == "1.0.2" {
					from[f.Peer] = true
				}
			}
			if len(from) < len(pn.Peers) {
				return false
			}
		}
		return true
	})

	// A release signed by a key no peer trusts is refused everywhere.
	other := filepath.Join(t.TempDir(), "other")
	if r := run(t, bin, "release", "keygen", "--out", other); r.code != 0 {
		t.Fatalf("keygen: %s", r.stderr)
	}
	publish(t, bin, coord, filepath.Join(other, "release.key"), next, "1.0.3")
	waitFor(t, "every peer to refuse the untrusted release", 30*time.Second, func() bool {
		for _, p := range pn.Peers {
			st, ok := statusOf(t, bin, p)
			if !ok || st.Version != "1.0.1" || !strings.Contains(verdictOf(st, "1.0.3"), "does not trust") {
				return false
			}
		}
		return true
	})

	// Past the time a release settles, none installed it: the publisher
	// holds it to serve, never to install.
	time.Sleep(3 * time.Second)
	for _, p := range pn.Peers {
		if st, _ := statusOf(t, bin, p); st.Current != "1.0.1" || st.State == "fetching" || st.State == "installing" || st.State == "restarting" {
			t.Fatalf("%s after an untrusted release: current %q, state %q", p.Name, st.Current, st.State)
		}
	}

	// A staged rollout: a fraction that takes exactly one peer, then
	// widened to every peer by publishing the same version again.
	v103 := filepath.Join(filepath.Dir(buildRelease(t, "1.0.3")), "cortex-peerd")
	points := make([]float64, len(pn.Peers))
	for i, p := range pn.Peers {
		points[i] = release.RolloutPoint(p.ID, "1.0.3")
	}
	first := slices.Index(points, slices.Min(points))
	sorted := slices.Sorted(slices.Values(points))
	frac := (sorted[0] + sorted[1]) / 2
	publish(t, bin, coord, key, v103, "1.0.3", "--rollout", strconv.FormatFloat(frac, 'f', 6, 64))
	waitFor(t, "the one peer in the rollout to run 1.0.3", time.Minute, func() bool {
		for i, p := range pn.Peers {
			st, ok := statusOf(t, bin, p)
			if !ok {
				return false
			}
			if i == first && st.Version != "1.0.3" || i != first && !strings.HasPrefix(verdictOf(st, "1.0.3"), "out_of_rollout") {
				return false
			}
		}
		return true
	})
	publish(t, bin, coord, key, v103, "1.0.3", "--rollout", "100%")
	waitFor(t, "the widened rollout to reach every peer", time.Minute, func() bool {
		for _, p := range pn.Peers {
			if st, ok := statusOf(t, bin, p); !ok || st.Version != "1.0.3" {
				return false
			}
		}
		return true
	})

	// One version signed twice over different binaries: both refused on
	// every peer, the proof gossiped.
	var twice []string
	for _, body := range []string{"#!/bin/sh\nexit 0\n", "#!/bin/sh\nexit 2\n"} {
		f := filepath.Join(t.TempDir(), "cortex-peerd")
		if err := os.WriteFile(f, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		twice = append(twice, f)
	}
	publish(t, bin, coord, key, twice[0], "1.0.4")
	publish(t, bin, coord, key, twice[1], "1.0.4")
	waitFor(t, "every peer to refuse both envelopes of 1.0.4", 30*time.Second, func() bool {
		for _, p := range pn.Peers {
			st, ok := statusOf(t, bin, p)
			if !ok || st.Version != "1.0.3" || slices.Contains(st.Bad, "1.0.4") {
				return false
			}
			n := 0
			for _, r := range st.Releases {
				if r.Version == "1.0.4" && strings.Contains(r.Verdict, "signed twice") {
					n++
				}
			}
			if n < 2 {
				return false
			}
		}
		return true
	})

	// A release that hangs before it is ready: stopped at health_timeout,
	// rolled back on every peer within health_timeout + 10 s.
	hang := filepath.Join(t.TempDir(), "cortex-peerd")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	publish(t, bin, coord, key, hang, "1.0.5")
	waitFor(t, "every peer to roll the hanging 1.0.5 back", health+40*time.Second, func() bool {
		for _, p := range pn.Peers {
			st, ok := statusOf(t, bin, p)
			if !ok || st.Version != "1.0.3" {
				return false
			}
			if !slices.Contains(st.Bad, "1.0.5") && !strings.HasPrefix(verdictOf(st, "1.0.5"), "stopped") {
				return false
			}
		}
		return true
	})
	took = time.Since(start)
	t.Logf("FIGURE hanging release rolled back or stopped on all 3 peers: %.1f s (health_timeout %s)", took.Seconds(), health)
	if took > health+10*time.Second+5*time.Second {
		t.Errorf("rollback of a hanging release took %v, over health_timeout + 10 s", took)
	}
}

func verdictOf(st updateStatus, version string) string {
	for _, r := range st.Releases {
		if r.Version == version {
			return r.Verdict
		}
	}
	return ""
}

// TestKillDuringInstall kills the peer (supervisor and all) with SIGKILL at
// every step of an install: started again, it runs exactly one of the old
// and the new version, the old before the switch, the new after it.
func TestKillDuringInstall(t *testing.T) {
	for _, tc := range []struct{ step, want string }{
		{"fetched", "1.0.0"}, {"written", "1.0.0"}, {"installed", "1.0.0"}, {"switched", "1.0.1"},
	} {
		t.Run(tc.step, func(t *testing.T) {
			t.Setenv(update.EnvKillAt, tc.step)
			bin, next, key, pn := updateNet(t, 1, "30s")
			p := pn.Peers[0]
			r := run(t, bin, "release", "publish", "--data", p.DataDir, "--key", key, "--binary", next, "--version", "1.0.1")
			select {
			case <-p.Exited():
			case <-time.After(time.Minute):
				t.Fatalf("the peer was not killed at %s (publish: %d %s)", tc.step, r.code, r.stderr)
			}
			if st := p.ExitErr(); st == nil || !strings.Contains(st.Error(), "killed") {
				t.Fatalf("the peer ended with %v, want killed", st)
			}
			os.Unsetenv(update.EnvKillAt)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := p.Restart(ctx); err != nil {
				t.Fatalf("start after kill at %s: %v", tc.step, err)
			}
			st, ok := statusOf(t, bin, p)
			if !ok || st.Version != tc.want {
				t.Fatalf("after kill at %s: running %q, want %s", tc.step, st.Version, tc.want)
			}
			t.Logf("killed at %s: runs %s, current %q, state %s", tc.step, st.Version, st.Current, st.State)
		})
	}
}
