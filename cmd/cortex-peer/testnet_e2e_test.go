package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// testnetPatience bounds each wait of the testnet tests: generous for a
// starved machine, and each wait ends as soon as its condition holds.
const testnetPatience = 2 * time.Minute

// A peer that dies is reported and the others keep running; `testnet
// restart NAME` and SIGHUP bring peers back with their identity, into the
// mesh. Issue 15 item 8: a kill -9 of one peer stopped the whole testnet.
func TestTestnetSurvivesAPeerDeath(t *testing.T) {
	bin := testnet.BuildBinary(t)
	dir := t.TempDir()
	tn := startTestnetLines(t, bin, dir, "3")
	exited := tn.exited
	ids := map[string]string{} // name -> peer id
	for _, l := range tn.peers {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("peer line %q", l)
		}
		ids[f[0]] = f[1]
	}
	peerDir := func(name string) string { return filepath.Join(dir, name) }

	// waitLine waits for a line of the testnet's output that contains every
	// one of want, and returns it.
	waitLine := func(want ...string) string {
		t.Helper()
		timeout := time.After(testnetPatience)
		for {
			select {
			case l, ok := <-tn.lines:
				if !ok {
					t.Fatalf("testnet ended while waiting for a line with %q; stderr:\n%s", want, tn.stderr.String())
				}
				all := true
				for _, w := range want {
					all = all && strings.Contains(l, w)
				}
				if all {
					return l
				}
				if strings.Contains(l, " died ") {
					t.Fatalf("unexpected death while waiting for %q: %s", want, l)
				}
			case <-timeout:
				t.Fatalf("no line with %q in %s; stderr:\n%s", want, testnetPatience, tn.stderr.String())
			}
		}
	}
	sees := func(observer, name string) bool {
		r := run(t, bin, "peers", "--json", "--data", peerDir(observer))
		var peers []struct {
			ID string `json:"id"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &peers) != nil {
			return false
		}
		for _, p := range peers {
			if p.ID == ids[name] {
				return true
			}
		}
		return false
	}
	kill9 := func(name string) int {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(peerDir(name), "peer.lock"))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("peer.lock of %s: %q", name, b)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		return pid
	}

	// kill -9 one peer: its death is reported, with pid, signal and log.
	pid := kill9("peer2")
	line := waitLine("peer2", "died")
	for _, want := range []string{strconv.Itoa(pid), "SIGKILL", filepath.Join(peerDir("peer2"), "peer.log"), "testnet restart peer2"} {
		if !strings.Contains(line, want) {
			t.Errorf("death line lacks %q: %s", want, line)
		}
	}
	// The testnet and the other peers keep running.
	select {
	case <-exited:
		t.Fatalf("testnet ended when peer2 died; stderr:\n%s", tn.stderr.String())
	default:
	}
	for _, name := range []string{"peer1", "peer3"} {
		if r := run(t, bin, "status", "--data", peerDir(name)); r.code != 0 {
			t.Fatalf("%s after peer2 died: exit %d %s", name, r.code, r.stderr)
		}
	}
	testnet.Eventually(t, "peer1 to drop peer2", testnetPatience, func() bool { return !sees("peer1", "peer2") })

	// Usage errors: an unknown name, no name, no --dir.
	if r := run(t, bin, "testnet", "restart", "peer9", "--dir", dir); r.code != 2 || !strings.Contains(r.stderr, `"peer9"`) || !strings.Contains(r.stderr, "peer1, peer2, peer3") {
		t.Errorf("restart of an unknown peer: exit %d, stderr %q; want 2 naming it and the peers", r.code, r.stderr)
	}
	if r := run(t, bin, "testnet", "restart", "--dir", dir); r.code != 2 {
		t.Errorf("restart without a name: exit %d, want 2", r.code)
	}
	if r := run(t, bin, "testnet", "restart", "peer2"); r.code != 2 || !strings.Contains(r.stderr, "--dir") {
		t.Errorf("restart without --dir: exit %d, stderr %q; want 2 asking for --dir", r.code, r.stderr)
	}
	if r := run(t, bin, "testnet", "restart", "peer2", "--dir", t.TempDir()); r.code != 1 || !strings.Contains(r.stderr, "no testnet is running") {
		t.Errorf("restart where no testnet runs: exit %d, stderr %q", r.code, r.stderr)
	}

	// testnet restart brings it back with its identity, into the mesh.
	r := run(t, bin, "testnet", "restart", "peer2", "--dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, ids["peer2"]) {
		t.Fatalf("testnet restart peer2: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	waitLine("peer2", "restarted", ids["peer2"])
	for _, name := range []string{"peer1", "peer3"} {
		testnet.Eventually(t, name+" to see peer2 again", testnetPatience, func() bool { return sees(name, "peer2") })
	}

	// Restarting a live peer stops it and starts it again; that stop is no
	// death (waitLine fails on one).
	r = run(t, bin, "testnet", "restart", "--json", "peer3", "--dir", dir)
	var reply struct {
		Name       string `json:"name"`
		ID         string `json:"id"`
		Pid        int    `json:"pid"`
		WasRunning bool   `json:"was_running"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &reply) != nil || reply.Name != "peer3" || reply.ID != ids["peer3"] || !reply.WasRunning || reply.Pid == 0 {
		t.Fatalf("testnet restart --json of a live peer: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	waitLine("peer3", "restarted")
	testnet.Eventually(t, "peer1 to see peer3 again", testnetPatience, func() bool { return sees("peer1", "peer3") })

	// SIGHUP respawns the dead peers: here the first one, which the others
	// bootstrapped from and which comes back on another port.
	kill9("peer1")
	waitLine("peer1", "died")
	// Sent as a shell's `kill -HUP %1` sends it: to the job's process
	// group, which must hold the testnet and not its peers.
	if err := syscall.Kill(-tn.cmd.Process.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLine("peer1", "restarted", ids["peer1"])
	for _, name := range []string{"peer2", "peer3"} {
		testnet.Eventually(t, name+" to see peer1 again", testnetPatience, func() bool { return sees(name, "peer1") })
	}
	testnet.Eventually(t, "peer1 to see peer3", testnetPatience, func() bool { return sees("peer1", "peer3") })

	// SIGTERM still stops them all, cleanly.
	if err := tn.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(testnetPatience):
		t.Fatal("testnet did not stop on SIGTERM")
	}
	if code := tn.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("testnet exit %d on SIGTERM; stderr:\n%s", code, tn.stderr.String())
	}
	for name := range ids {
		if r := run(t, bin, "id", "--data", peerDir(name)); r.code == 0 {
			t.Errorf("%s still answers after the testnet stopped", name)
		}
	}
}
