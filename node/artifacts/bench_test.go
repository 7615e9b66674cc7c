package artifacts_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// BenchmarkGet fetches a random file put on another peer of an in-process
// mesh and writes it, each round into a new peer's store: where a get's
// time goes, for a CPU profile. The mesh runs with its mesh key (every
// byte encrypted again under TLS), then allowlist-only.
//
//	go test -run '^$' -bench Get -benchtime 2x -cpuprofile /tmp/get.prof ./node/artifacts/
func BenchmarkGet(b *testing.B) {
	b.Run("mesh-key", func(b *testing.B) { benchmarkGet(b) })
	b.Run("allowlist", func(b *testing.B) { benchmarkGet(b, testnet.WithAllowlistOnly()) })
}

func benchmarkGet(b *testing.B, opts ...testnet.Option) {
	const size = 256 << 20
	tn := testnet.New(b, 1+b.N, append(opts, testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.API.AllowedRoots = append(cfg.API.AllowedRoots, "/dev/shm")
	}))...)
	ctx := testnet.Context(b, 10*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		b.Fatal(err)
	}
	cs := tn.Clients(b)
	data := make([]byte, size)
	_, _ = rand.Read(data)
	src := filepath.Join(b.TempDir(), "f.bin")
	testnet.WriteFile(b, src, data, 0o644)
	put, err := cs[0].ArtifactPut(ctx, src, nil)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err = os.MkdirTemp("/dev/shm", "artifacts-bench-"); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		if _, err := cs[1+i].ArtifactGet(ctx, put.GetCid(), filepath.Join(dir, fmt.Sprint(i)), false, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
}
