package p2p

import (
	"context"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// BenchmarkStream moves bytes over one libp2p stream between two hosts on
// loopback, as a bulk fetch does: with the mesh key (the private-network
// PSK, XSalsa20 over every byte, under TLS or Noise on TCP), and in an
// allowlist-only mesh (no PSK: TCP, or QUIC). cpu-s/GiB is the CPU both
// hosts spent (this process's user+system time) per GiB moved.
//
//	go test -run '^$' -bench Stream -benchtime 1024x ./p2p/
func BenchmarkStream(b *testing.B) {
	for _, mode := range []struct {
		name      string
		meshKey   bool
		transport string
	}{
		{"mesh-key/tcp", true, "/ip4/127.0.0.1/tcp/0"},
		{"allowlist/tcp", false, "/ip4/127.0.0.1/tcp/0"},
		{"allowlist/quic", false, "/ip4/127.0.0.1/udp/0/quic-v1"},
	} {
		b.Run(mode.name, func(b *testing.B) {
			key := mustMeshKey(b)
			cfgA, cfgB := testConfig(b, key), testConfig(b, key)
			if !mode.meshKey {
				idA, _ := peer.IDFromPrivateKey(cfgA.Identity)
				idB, _ := peer.IDFromPrivateKey(cfgB.Identity)
				cfgA.MeshKey, cfgB.MeshKey = nil, nil
				cfgA.Allowlist = []peer.ID{idA, idB}
				cfgB.Allowlist = cfgA.Allowlist
			}
			cfgA.ListenAddrs, cfgB.ListenAddrs = []string{mode.transport}, []string{mode.transport}
			a := startPeer(b, cfgA)
			cfgB.Bootstrap = a.host.FullAddrs()
			c := startPeer(b, cfgB)
			waitFor(b, "peers to meet", patience, func() bool { return a.host.IsConnected(c.host.ID()) })
			const proto = "/cortex/bench/stream"
			got := make(chan int64, 1)
			a.host.Libp2p().SetStreamHandler(proto, func(s network.Stream) {
				n, _ := io.Copy(io.Discard, s)
				s.Close()
				got <- n
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			s, err := c.host.Libp2p().NewStream(ctx, a.host.ID(), proto)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			cpu0 := cpuTime()
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				if _, err := s.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.CloseWrite(); err != nil {
				b.Fatal(err)
			}
			if n := <-got; n != int64(b.N)*int64(len(buf)) {
				b.Fatalf("received %d bytes, sent %d", n, b.N*len(buf))
			}
			b.StopTimer()
			s.Close()
			b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(b.N)/1024), "cpu-s/GiB")
		})
	}
}

// cpuTime is the user and system time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
