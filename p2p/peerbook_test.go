package p2p

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/protocol"
)

// A peer that stays connected while its heartbeats stop arriving (as on a
// starved machine) stays listed; once it is disconnected it expires.
func TestConnectedPeerWithLateHeartbeatsStaysListed(t *testing.T) {
	key := mustMeshKey(t)
	a := startPeer(t, testConfig(t, key))
	cfgB := testConfig(t, key)
	cfgB.Bootstrap = a.host.FullAddrs()
	b := startPeer(t, cfgB)
	idB := b.host.ID()
	waitFor(t, "a and b to see each other", patience, func() bool { return sees(a, idB) && sees(b, a.host.ID()) })

	b.stopHeartbeat()
	expiry := a.book.expiry
	var last PeerEntry
	waitFor(t, "b's last heartbeat to be older than twice the expiry", patience, func() bool {
		e, ok := a.book.Get(idB, time.Now())
		last = e
		return ok && time.Since(e.LastSeen) > 2*expiry
	})
	now := time.Now()
	if !a.host.IsConnected(idB) {
		t.Fatal("b is not connected to a any more; the test needs the connection")
	}
	if !sees(a, idB) {
		t.Fatalf("a connected peer whose heartbeat is %s old (expiry %s) is not listed", now.Sub(last.LastSeen), expiry)
	}
	if e, _ := a.book.Get(idB, now); e.Expired {
		t.Fatal("Get reports a connected peer with a late heartbeat expired")
	}
	// The same heartbeat judged by heartbeats alone: expired.
	hbOnly := NewBook(expiry, nil)
	hbOnly.Observe(idB, last.Heartbeat, last.LastSeen)
	if len(hbOnly.List(now, false)) != 0 {
		t.Fatal("without a connection check the late peer should have expired")
	}

	a.host.Block(idB)
	waitFor(t, "b to expire once disconnected", patience, func() bool { return !sees(a, idB) })
	if a.host.IsConnected(idB) {
		t.Fatal("b is connected although blocked")
	}
	if e, ok := a.book.Get(idB, time.Now()); !ok || !e.Expired {
		t.Fatalf("Get after the disconnection: %+v, %v; want an expired entry", e, ok)
	}
	all := a.book.List(time.Now(), true)
	if len(all) != 1 || all[0].ID != idB || !all[0].Expired {
		t.Fatalf("List with expired entries: %+v; want b, expired", all)
	}
}

// The rules of expiry on a book, at chosen times: late heartbeats are
// forgiven a connected peer, up to maxSilence.
func TestBookExpiry(t *testing.T) {
	const expiry = time.Second
	id := func() peer.ID {
		sk, err := GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		p, err := peer.IDFromPrivateKey(sk)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	t0 := time.Now()
	hb := protocol.Heartbeat{StartedAt: t0, Seq: 1}
	tests := []struct {
		name      string
		connected bool
		nilFunc   bool
		age       time.Duration
		listed    bool // in List(now, false)
		kept      bool // in List(now, true)
	}{
		{"fresh, not connected", false, false, expiry / 2, true, true},
		{"late, connected", true, false, 3 * expiry, true, true},
		{"late, not connected", false, false, 3 * expiry, false, true},
		{"late, heartbeats only", true, true, 3 * expiry, false, true},
		// forgetAfterExpiries (20 s here) is below maxSilence (1 min): a
		// connected peer is not forgotten while it is live.
		{"silent past the forget age, connected", true, false, 30 * expiry, true, true},
		{"silent past the forget age, not connected", false, false, 30 * expiry, false, false},
		{"silent past maxSilence, connected", true, false, minMaxSilence + expiry, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := id()
			conn := func(q peer.ID) bool { return q == p && tc.connected }
			if tc.nilFunc {
				conn = nil
			}
			b := NewBook(expiry, conn)
			if !b.Observe(p, hb, t0) {
				t.Fatal("first heartbeat not fresh")
			}
			now := t0.Add(tc.age)
			e, ok := b.Get(p, now)
			if !ok || e.Expired == tc.listed {
				t.Fatalf("Get: %v, expired %v; want expired %v", ok, e.Expired, !tc.listed)
			}
			if got := len(b.List(now, false)) == 1; got != tc.listed {
				t.Fatalf("listed %v, want %v", got, tc.listed)
			}
			if got := len(b.List(now, true)) == 1; got != tc.kept {
				t.Fatalf("kept %v, want %v", got, tc.kept)
			}
			// A heartbeat after the gap reports the peer as back only if
			// it had expired.
			if tc.kept {
				next := hb
				next.Seq++
				if fresh := b.Observe(p, next, now); fresh == tc.listed {
					t.Fatalf("Observe after the gap: fresh %v, want %v", fresh, !tc.listed)
				}
			}
		})
	}
	if d := NewBook(time.Hour, nil).maxSilence(); d != maxSilentExpiries*time.Hour {
		t.Fatalf("maxSilence with a long expiry: %s", d)
	}
}
