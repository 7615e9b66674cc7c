package testnet

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/p2p"
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
