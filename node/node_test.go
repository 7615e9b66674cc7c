package node_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/testnet"
)

func TestMain(m *testing.M) { testnet.VerifyNoLeaks(m) }

func TestSecondPeerOnSameDirRefused(t *testing.T) {
	tn := testnet.New(t, 1)
	p := tn.Peers[0]
	_, err := node.New(p.Config(), p.Node.Logger())
	if !errors.Is(err, errdefs.ErrLocked) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second peer on one dir: %v, want ErrLocked", err)
	}
	// The first peer is unharmed.
	c, err := apiclient.Dial(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Identity(testnet.Context(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestStoppedPeerExpiresAndRestartKeepsID(t *testing.T) {
	tn := testnet.New(t, 3)
	if err := tn.WaitMesh(testnet.Context(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	p1, p3 := tn.Peers[0], tn.Peers[2]
	id := p3.Node.ID().String()
	if err := p3.Node.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p3.Node.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	testnet.Eventually(t, "the stopped peer to leave the peer list", time.Minute, func() bool { return !p1.Sees(id) })
	if err := p3.Restart(); err != nil {
		t.Fatal(err)
	}
	if p3.Node.ID().String() != id {
		t.Fatalf("restarted peer has id %s, want %s", p3.Node.ID(), id)
	}
	testnet.Eventually(t, "the restarted peer to come back", 10*time.Second, func() bool { return p1.Sees(id) })
}

func TestAPIUnavailableWhenStopped(t *testing.T) {
	tn := testnet.New(t, 1)
	p := tn.Peers[0]
	p.Node.Close()
	c, err := apiclient.Dial(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Identity(testnet.Context(t, 5*time.Second))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "cortex-peer join") {
		t.Fatalf("stopped peer: %v, want ErrUnavailable telling to join", err)
	}
}
