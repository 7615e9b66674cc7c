package p2p

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// A peer gets its burst, then is refused, reported first once; another
// peer has its own bucket; a peer idle past the idle time starts afresh.
func TestPeerRates(t *testing.T) {
	r := NewPeerRates(10, 20, time.Minute)
	a, b := peer.ID("a"), peer.ID("b")
	now := time.Now()
	if ok, _ := r.Allow(a, 20, now); !ok {
		t.Fatal("a's burst refused")
	}
	if ok, first := r.Allow(a, 1, now); ok || !first {
		t.Fatalf("past the burst: ok %v first %v, want refused, first", ok, first)
	}
	if ok, first := r.Allow(a, 1, now); ok || first {
		t.Fatalf("refused again: ok %v first %v, want refused, not first", ok, first)
	}
	if ok, _ := r.Allow(b, 20, now); !ok {
		t.Fatal("b pays for a")
	}
	if ok, _ := r.Allow(a, 10, now.Add(time.Second)); !ok {
		t.Fatal("a second refills 10 tokens")
	}
	if ok, _ := r.Allow(a, 1000, now.Add(2*time.Second)); ok {
		t.Fatal("a request over the burst is clamped to it, not free")
	}
	later := now.Add(2 * time.Minute)
	if ok, _ := r.Allow(b, 1, later); !ok {
		t.Fatal("b after a long idle")
	}
	if _, ok := r.peers[a]; ok {
		t.Fatal("a idle past a minute is still remembered")
	}
}
