package node_test

import (
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// status reports the bytes the store takes on disk: not badger's sparse
// value log at its full length, and with the packs that hold file chunks.
func TestStatusStoreBytesIsDiskUsage(t *testing.T) {
	tn := testnet.New(t, 1)
	c := tn.Clients(t)[0]
	ctx := testnet.Context(t, time.Minute)
	before, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b := before.GetStoreBytes(); b > 64<<20 {
		t.Errorf("an empty store reports %d bytes", b)
	}
	data := make([]byte, 16<<20)
	_, _ = rand.Read(data)
	ws := t.TempDir()
	testnet.WriteFile(t, filepath.Join(ws, "big.bin"), data, 0o644)
	if _, err := c.WorkspaceAdd(ctx, ws, false, nil); err != nil {
		t.Fatal(err)
	}
	after, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if grew := int64(after.GetStoreBytes()) - int64(before.GetStoreBytes()); grew < 16<<20 {
		t.Errorf("a 16 MiB file grew the store by %d bytes: packs are not counted", grew)
	}
}
