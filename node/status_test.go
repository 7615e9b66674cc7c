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

// status counts the bytes this peer received from and sent to the mesh:
// a fetch of 8 MiB shows on both sides.
func TestStatusMeshBytes(t *testing.T) {
	tn := testnet.New(t, 2)
	ctx := testnet.Context(t, time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	data := make([]byte, 8<<20)
	_, _ = rand.Read(data)
	ws := t.TempDir()
	testnet.WriteFile(t, filepath.Join(ws, "big.bin"), data, 0o644)
	added, err := cs[0].WorkspaceAdd(ctx, ws, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	sender, _ := cs[0].Status(ctx)
	receiver, _ := cs[1].Status(ctx)
	if _, err := cs[1].WorkspaceGet(ctx, added.GetCid(), filepath.Join(t.TempDir(), "copy"), 0, false, nil); err != nil {
		t.Fatal(err)
	}
	sender2, _ := cs[0].Status(ctx)
	receiver2, _ := cs[1].Status(ctx)
	if got := receiver2.GetMeshBytesReceived() - receiver.GetMeshBytesReceived(); got < 8<<20 {
		t.Errorf("the fetching peer received %d bytes for an 8 MiB file", got)
	}
	if got := sender2.GetMeshBytesSent() - sender.GetMeshBytesSent(); got < 8<<20 {
		t.Errorf("the serving peer sent %d bytes for an 8 MiB file", got)
	}
}
