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
	// Every read and write of every stream is counted here: the maps are
	// sync.Maps, read without a lock once a peer or protocol is known.
	peers  sync.Map // peer.ID -> *counts
	protos sync.Map // protocol.ID -> *counts
}

type counts struct{ in, out atomic.Int64 }

var _ metrics.Reporter = (*traffic)(nil)

func newTraffic() *traffic { return &traffic{} }

func countsIn(m *sync.Map, k any) *counts {
	if c, ok := m.Load(k); ok {
		return c.(*counts)
	}
	c, _ := m.LoadOrStore(k, &counts{})
	return c.(*counts)
}

func (t *traffic) of(p peer.ID, proto protocol.ID) (*counts, *counts) {
	return countsIn(&t.peers, p), countsIn(&t.protos, proto)
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
	if c, ok := t.peers.Load(p); ok {
		return c.(*counts).stats()
	}
	return metrics.Stats{}
}

func (t *traffic) GetBandwidthForProtocol(proto protocol.ID) metrics.Stats {
	if c, ok := t.protos.Load(proto); ok {
		return c.(*counts).stats()
	}
	return metrics.Stats{}
}

func (t *traffic) GetBandwidthTotals() metrics.Stats {
	return metrics.Stats{TotalIn: t.in.Load(), TotalOut: t.out.Load()}
}

func (t *traffic) GetBandwidthByPeer() map[peer.ID]metrics.Stats {
	out := map[peer.ID]metrics.Stats{}
	t.peers.Range(func(k, v any) bool {
		out[k.(peer.ID)] = v.(*counts).stats()
		return true
	})
	return out
}

func (t *traffic) GetBandwidthByProtocol() map[protocol.ID]metrics.Stats {
	out := map[protocol.ID]metrics.Stats{}
	t.protos.Range(func(k, v any) bool {
		out[k.(protocol.ID)] = v.(*counts).stats()
		return true
	})
	return out
}

func (t *traffic) Reset() {
	t.in.Store(0)
	t.out.Store(0)
	t.peers.Clear()
	t.protos.Clear()
}

// TrimIdle forgets the peers not heard from, as libp2p asks of a reporter;
// the counts are totals, so nothing is idle: kept as they are.
func (t *traffic) TrimIdle(time.Time) {}
