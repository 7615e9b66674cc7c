package testnet

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func TestMain(m *testing.M) {
	code := func() int {
		defer RemoveBinary()
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(processGoroutines()...); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func TestInProcessMeshWithDHT(t *testing.T) {
	n := New(t, 4, WithDHT())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestProcessNetKillAndRestart(t *testing.T) {
	bin := BuildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pn, err := StartProcesses(ctx, ProcessOptions{Binary: bin, N: 3, Dir: t.TempDir(), Heartbeat: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pn.Stop() })
	if err := pn.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	victim := pn.Peers[2]
	id := victim.ID
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.Exited()
	c, err := apiclient.Dial(pn.Peers[0].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	has := func() bool {
		peers, err := c.Peers(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			if p.GetId() == id {
				return true
			}
		}
		return false
	}
	// The kill closes the victim's connections at once and its last
	// heartbeat ages past the expiry (900 ms) within a second; the bound is
	// generous for a starved machine, and the wait ends when the peer goes.
	const patience = time.Minute
	killed := time.Now()
	for has() {
		if time.Since(killed) > patience {
			t.Fatalf("killed peer still listed after %s (expiry is 900 ms)", patience)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("killed peer still listed: %v", ctx.Err())
		case <-time.After(pollInterval):
		}
	}
	if err := victim.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if victim.ID != id {
		t.Fatalf("restarted with id %s, want %s", victim.ID, id)
	}
	if err := pn.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pn.Stop(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	for _, p := range pn.Peers {
		if err := p.ExitErr(); err != nil {
			t.Errorf("%s exited with %v on SIGTERM", p.Name, err)
		}
	}
}

// A process testnet reports every end of a peer, says which it asked for,
// and restarts peers on request through its control socket (issue 15 item
// 8: a dead peer used to end the whole testnet).
func TestProcessNetReportsExitsAndRestartsOnRequest(t *testing.T) {
	bin := BuildBinary(t)
	ctx := Context(t, 3*time.Minute)
	dir := t.TempDir()
	exits := make(chan PeerExit, 16)
	restarts := make(chan string, 16)
	pn, err := StartProcesses(ctx, ProcessOptions{
		Binary: bin, N: 2, Dir: dir, Heartbeat: 300 * time.Millisecond,
		OnExit:    func(e PeerExit) { exits <- e },
		OnRestart: func(p *ProcessPeer) { restarts <- p.Name },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pn.Stop() })
	if err := pn.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := pn.ListenControl()
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stopServing := context.WithCancel(ctx)
	var serveErr error
	served := make(chan struct{})
	go func() {
		defer close(served)
		serveErr = pn.ServeControl(serveCtx, ln)
	}()
	t.Cleanup(func() {
		stopServing()
		<-served
	})
	nextExit := func() PeerExit {
		t.Helper()
		select {
		case e := <-exits:
			return e
		case <-ctx.Done():
			t.Fatal("no exit reported")
			return PeerExit{}
		}
	}

	victim := pn.Peers[1]
	id, pid := victim.ID, victim.Pid()
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := nextExit(); e.Peer != victim || e.Pid != pid || e.Requested || e.Status() != "killed by SIGKILL" {
		t.Fatalf("exit of the killed peer: %s pid %d requested %v %q; want %s pid %d, not requested, killed by SIGKILL", e.Peer.Name, e.Pid, e.Requested, e.Status(), victim.Name, pid)
	}
	if !pn.Peers[0].Running() || victim.Running() {
		t.Fatalf("running: peer1 %v, peer2 %v; want true, false", pn.Peers[0].Running(), victim.Running())
	}

	if _, err := RequestRestart(ctx, dir, "peer9"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "peer1, peer2") {
		t.Fatalf("restart of an unknown peer: %v; want not found, listing the peers", err)
	}
	reply, err := RequestRestart(ctx, dir, victim.Name)
	if err != nil {
		t.Fatal(err)
	}
	if reply.ID != id || reply.WasRunning || reply.Pid == pid || reply.Pid != victim.Pid() {
		t.Fatalf("restart reply %+v; want id %s, not running before, a new pid", reply, id)
	}
	if name := <-restarts; name != victim.Name {
		t.Fatalf("restart reported for %s", name)
	}
	// Restarting a running peer stops it first: an end that is asked for.
	if reply, err = RequestRestart(ctx, dir, victim.Name); err != nil || !reply.WasRunning {
		t.Fatalf("restart of a running peer: %+v, %v", reply, err)
	}
	if e := nextExit(); e.Peer != victim || !e.Requested {
		t.Fatalf("exit on restart: %s requested %v; want %s, requested", e.Peer.Name, e.Requested, victim.Name)
	}
	if err := pn.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	if err := pn.Stop(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	for range pn.Peers {
		if e := nextExit(); !e.Requested || e.Err != nil {
			t.Fatalf("exit on Stop: %s requested %v, %v; want requested, status 0", e.Peer.Name, e.Requested, e.Err)
		}
	}
	// Once stopped, nothing starts again.
	if _, err := pn.RestartDead(ctx); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("restart after Stop: %v; want unavailable", err)
	}
	stopServing()
	<-served
	if serveErr != nil {
		t.Fatalf("control socket: %v", serveErr)
	}
	if _, err := RequestRestart(ctx, dir, victim.Name); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("restart with no testnet: %v; want unavailable", err)
	}
}

// BenchmarkMeshFormation measures the time from starting the first of N
// in-process peers (default heartbeat settings) until every peer sees all
// the others.
func BenchmarkMeshFormation(b *testing.B) {
	for _, n := range []int{3, 10} {
		b.Run("peers="+strconv.Itoa(n), func(b *testing.B) {
			var total time.Duration
			for range b.N {
				start := time.Now()
				net := New(b, n, WithHeartbeat(p2p.DefaultHeartbeatInterval, p2p.DefaultHeartbeatExpiry))
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				if err := net.WaitMesh(ctx); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				cancel()
				b.StopTimer()
				net.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/mesh")
		})
	}
}

// BenchmarkPeersRoundTrip measures one Peers call on the local API of a
// peer in a 3-peer mesh, over the unix socket with the token.
func BenchmarkPeersRoundTrip(b *testing.B) {
	net := New(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := net.WaitMesh(ctx); err != nil {
		b.Fatal(err)
	}
	c, err := apiclient.Dial(net.Peers[0].Dir)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ResetTimer()
	for range b.N {
		peers, err := c.Peers(ctx, false)
		if err != nil || len(peers) != 2 {
			b.Fatalf("peers: %d, %v", len(peers), err)
		}
	}
}

// BenchmarkIdlePeerRSS starts one peer process, leaves it idle in a 2-peer
// mesh for CORTEX_BENCH_IDLE (default 60s) and reports its resident memory.
func BenchmarkIdlePeerRSS(b *testing.B) {
	idle := time.Minute
	if s := os.Getenv("CORTEX_BENCH_IDLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatal(err)
		}
		idle = d
	}
	bin := BuildBinary(b)
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), idle+time.Minute)
		pn, err := StartProcesses(ctx, ProcessOptions{Binary: bin, N: 2, Dir: b.TempDir(), Heartbeat: p2p.DefaultHeartbeatInterval})
		if err != nil {
			b.Fatal(err)
		}
		if err := pn.WaitReady(ctx); err != nil {
			b.Fatal(err)
		}
		time.Sleep(idle) // the measurement is of an idle peer: nothing to poll for
		rss, err := residentKiB(pn.Peers[1].Pid())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(rss)/1024, "MiB-rss")
		pn.Stop()
		cancel()
	}
}

func residentKiB(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, os.ErrNotExist
}
