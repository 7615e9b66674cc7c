package artifacts_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/testnet"
)

func TestMain(m *testing.M) { testnet.VerifyNoLeaks(m) }

// Ranges read on a peer that lacks the file come out exact across the
// read-ahead's chunk boundaries; a read cut short stops its fetches; a
// forced get replaces a directory with the file.
func TestReadRangesAndForce(t *testing.T) {
	tn := testnet.New(t, 2, testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.Artifacts.ReadChunk = 100 << 10 // many chunks for a few MiB
	}))
	ctx := testnet.Context(t, time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	data := make([]byte, 3<<20+777)
	_, _ = rand.Read(data)
	src := filepath.Join(t.TempDir(), "f.bin")
	testnet.WriteFile(t, src, data, 0o644)
	put, err := cs[0].ArtifactPut(ctx, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]uint64{{0, 10}, {100<<10 - 3, 7}, {1 << 20, 2<<20 + 777}, {uint64(len(data)) - 1, 100}, {0, 0}} {
		var buf bytes.Buffer
		size, err := cs[1].ArtifactRead(ctx, put.GetCid(), r[0], r[1], 0, &buf)
		end := uint64(len(data))
		if r[1] > 0 {
			end = min(r[0]+r[1], end)
		}
		if err != nil || size != uint64(len(data)) || !bytes.Equal(buf.Bytes(), data[r[0]:end]) {
			t.Fatalf("read %v: size %d, %d bytes, %v", r, size, buf.Len(), err)
		}
	}
	// Cut short by the reader: the call ends with the context's error.
	cut, cancel := context.WithCancel(ctx)
	_, err = cs[1].ArtifactRead(cut, put.GetCid(), 0, 0, 0, writerFunc(func(p []byte) (int, error) { cancel(); return len(p), nil }))
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a read cut short: %v", err)
	}
	cancel()

	dest := filepath.Join(t.TempDir(), "out")
	testnet.WriteFile(t, filepath.Join(dest, "old.txt"), []byte("old"), 0o644)
	if _, err := cs[1].ArtifactGet(ctx, put.GetCid(), dest, false, 0, nil); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("get over a directory without force: %v", err)
	}
	if _, err := cs[1].ArtifactGet(ctx, put.GetCid(), dest, true, 0, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dest); !bytes.Equal(b, data) {
		t.Fatal("the forced get did not replace the directory with the file")
	}
	entries, _ := os.ReadDir(filepath.Dir(dest))
	if len(entries) != 1 {
		t.Fatalf("the forced get left %d entries beside its file", len(entries))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var _ io.Writer = writerFunc(nil)
