package node_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// syncBuffer collects the logs of every peer of a testnet.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// badTree writes a tree whose small files are single raw leaves (their CID
// is the raw sha256 of their bytes) and a multi-chunk file, so the bulk
// path is taken by a peer that lacks it all.
func badTree(t *testing.T) (dir string, leaf cid.Cid) {
	t.Helper()
	dir = t.TempDir()
	for i := range 8 {
		testnet.WriteFile(t, filepath.Join(dir, "f"+string(rune('a'+i))), bytes.Repeat([]byte{byte('a' + i)}, 900+i), 0o644)
	}
	big := make([]byte, 2<<20)
	_, _ = rand.Read(big)
	testnet.WriteFile(t, filepath.Join(dir, "big.bin"), big, 0o644)
	h, err := mh.Sum(bytes.Repeat([]byte{'c'}, 902), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return dir, cid.NewCidV1(cid.Raw, h)
}

func verifyStore(t *testing.T, n *node.Node) {
	t.Helper()
	count, err := n.VerifyStoreForTest(testnet.Context(t, 30*time.Second))
	if err != nil {
		t.Fatalf("a bad block was stored: %v", err)
	}
	t.Logf("%d stored blocks verified", count)
}

// TestFetchBadPeerOnly: the only peer that holds the tree serves wrong
// bytes, over bulk (a corrupt leaf) or over bitswap (a corrupt root). The
// fetch fails at once with ErrUntrustedPeers naming that peer, logs it once
// at Warn, and stores nothing wrong.
func TestFetchBadPeerOnly(t *testing.T) {
	for _, which := range []string{"leaf", "root"} {
		t.Run(which, func(t *testing.T) {
			logs := &syncBuffer{}
			tn := testnet.New(t, 2, testnet.WithLogs(logs, slog.LevelInfo))
			ctx := testnet.Context(t, 90*time.Second)
			if err := tn.WaitMesh(ctx); err != nil {
				t.Fatal(err)
			}
			bad, getter := tn.Peers[0], tn.Peers[1]
			c1, err := apiclient.Dial(bad.Dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c1.Close()
			c2, err := apiclient.Dial(getter.Dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			src, leaf := badTree(t)
			added, err := c1.WorkspaceAdd(ctx, src, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			target := leaf
			if which == "root" {
				target, _ = cid.Decode(added.GetCid())
			}
			if err := bad.Node.CorruptBlockForTest(target, []byte("not what you asked for")); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			// The stall timeout is far longer than the test waits: the
			// failure must come from the bad block, not from a stall.
			_, err = c2.WorkspaceGet(ctx, added.GetCid(), filepath.Join(t.TempDir(), "copy"), 60*time.Second, false, nil)
			if err == nil {
				t.Fatal("fetch from a peer serving bad blocks succeeded")
			}
			if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), bad.Node.ID().String()) ||
				!strings.Contains(err.Error(), "fail verification") {
				t.Fatalf("error does not name the bad peer clearly: %v", err)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Fatalf("took %s: waited for a stall instead of failing on the bad peer", d)
			}
			t.Logf("error: %v", err)
			verifyStore(t, getter.Node)
			if n := strings.Count(logs.String(), "peer served a bad block"); n != 1 {
				t.Fatalf("bad peer logged %d times, want once:\n%s", n, logs.String())
			}
		})
	}
}

// TestFetchBadAndHonestPeer: two peers hold the tree, one serves a corrupt
// root and a corrupt leaf. The fetch completes from the honest one and
// stores nothing wrong.
func TestFetchBadAndHonestPeer(t *testing.T) {
	tn := testnet.New(t, 3)
	ctx := testnet.Context(t, 120*time.Second)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	honest, bad, getter := tn.Peers[0], tn.Peers[1], tn.Peers[2]
	src, leaf := badTree(t)
	var root string
	for _, p := range []*testnet.Peer{honest, bad} {
		c, err := apiclient.Dial(p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		added, err := c.WorkspaceAdd(ctx, src, false, nil)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		root = added.GetCid()
	}
	rc, _ := cid.Decode(root)
	for _, c := range []cid.Cid{rc, leaf} {
		if err := bad.Node.CorruptBlockForTest(c, []byte("garbage")); err != nil {
			t.Fatal(err)
		}
	}
	c3, err := apiclient.Dial(getter.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	dest := filepath.Join(t.TempDir(), "copy")
	if _, err := c3.WorkspaceGet(ctx, root, dest, 30*time.Second, false, nil); err != nil {
		t.Fatalf("fetch with one honest peer: %v", err)
	}
	entries, _ := os.ReadDir(src)
	for _, e := range entries {
		a, _ := os.ReadFile(filepath.Join(src, e.Name()))
		b, err := os.ReadFile(filepath.Join(dest, e.Name()))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s differs: %v", e.Name(), err)
		}
	}
	verifyStore(t, getter.Node)
}
