package p2p

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// traffic counts stream bytes per peer and per protocol, totals only. It
// stands in for libp2p's BandwidthCounter, whose rate meters run on a
// process-wide goroutine that never stops; nothing here needs rates.
type traffic struct {
	in, out atomic.Int64
	mu      sync.Mutex
	peers   map[peer.ID]*counts
	protos  map[protocol.ID]*counts
}

type counts struct{ in, out atomic.Int64 }

var _ metrics.Reporter = (*traffic)(nil)

func newTraffic() *traffic {
	return &traffic{peers: map[peer.ID]*counts{}, protos: map[protocol.ID]*counts{}}
}

func (t *traffic) of(p peer.ID, proto protocol.ID) (*counts, *counts) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pc, ok := t.peers[p]
	if !ok {
		pc = &counts{}
		t.peers[p] = pc
	}
	prc, ok := t.protos[proto]
	if !ok {
		prc = &counts{}
		t.protos[proto] = prc
	}
	return pc, prc
}

func (t *traffic) LogSentMessage(n int64) { t.out.Add(n) }
func (t *traffic) LogRecvMessage(n int64) { t.in.Add(n) }

func (t *traffic) LogSentMessageStream(n int64, proto protocol.ID, p peer.ID) {
	pc, prc := t.of(p, proto)
	pc.out.Add(n)
	prc.out.Add(n)
}

func (t *traffic) LogRecvMessageStream(n int64, proto protocol.ID, p peer.ID) {
	pc, prc := t.of(p, proto)
	pc.in.Add(n)
	prc.in.Add(n)
}

func (c *counts) stats() metrics.Stats {
	if c == nil {
		return metrics.Stats{}
	}
	return metrics.Stats{TotalIn: c.in.Load(), TotalOut: c.out.Load()}
}

func (t *traffic) GetBandwidthForPeer(p peer.ID) metrics.Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.peers[p].stats()
}

func (t *traffic) GetBandwidthForProtocol(proto protocol.ID) metrics.Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.protos[proto].stats()
}

func (t *traffic) GetBandwidthTotals() metrics.Stats {
	return metrics.Stats{TotalIn: t.in.Load(), TotalOut: t.out.Load()}
}

func (t *traffic) GetBandwidthByPeer() map[peer.ID]metrics.Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[peer.ID]metrics.Stats, len(t.peers))
	for p, c := range t.peers {
		out[p] = c.stats()
	}
	return out
}

func (t *traffic) GetBandwidthByProtocol() map[protocol.ID]metrics.Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[protocol.ID]metrics.Stats, len(t.protos))
	for p, c := range t.protos {
		out[p] = c.stats()
	}
	return out
}

func (t *traffic) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.in.Store(0)
	t.out.Store(0)
	t.peers = map[peer.ID]*counts{}
	t.protos = map[protocol.ID]*counts{}
}

// TrimIdle forgets the peers not heard from, as libp2p asks of a reporter;
// the counts are totals, so nothing is idle: kept as they are.
func (t *traffic) TrimIdle(time.Time) {}
