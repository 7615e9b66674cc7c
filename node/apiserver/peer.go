package apiserver

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// Peer is what the PeerService reports: this peer and its view of the mesh.
type Peer interface {
	ID() peer.ID
	FullAddrs() []string
	Peers(includeExpired bool) []p2p.PeerEntry
	IsConnected(p peer.ID) bool
	Status() Status
	// Drain makes the peer ineligible, lets its tasks end (deadline 0: the
	// configured one) and delivers their results; unless stay, the peer
	// then stops. progress is called as the drain goes.
	Drain(ctx context.Context, deadline time.Duration, stay bool, progress func(DrainStatus)) (DrainStatus, error)
	// Eligible undoes a drain that stayed; it reports whether the peer was
	// draining.
	Eligible() bool
}

// DrainStatus is where a drain stands.
type DrainStatus struct {
	Running, Undelivered, Completed, Returned, LeftUndelivered int
	Elapsed                                                    time.Duration
	Done, Stopping                                             bool
}

// Status is this peer as `cortex-peer status` shows it.
type Status struct {
	Version        string
	StartedAt      time.Time
	DataDir        string
	ListenAddrs    []string
	ConnectedPeers int
	KnownPeers     int
	Labels         map[string]string
	Capabilities   protocol.Capabilities
	Capacity       protocol.Capacity
	StoreBytes     uint64
	PrivateNetwork bool
	AllowlistSize  int
	// MeshBytesReceived and MeshBytesSent count stream payload since start.
	MeshBytesReceived, MeshBytesSent uint64
	Draining                         bool
}

// peerService implements the PeerService of the local API.
type peerService struct {
	p Peer
}

var _ apiv1connect.PeerServiceHandler = (*peerService)(nil)

func (p *peerService) Identity(context.Context, *connect.Request[apiv1.IdentityRequest]) (*connect.Response[apiv1.IdentityResponse], error) {
	return connect.NewResponse(&apiv1.IdentityResponse{
		Id:    p.p.ID().String(),
		Addrs: p.p.FullAddrs(),
	}), nil
}

func (p *peerService) Peers(_ context.Context, req *connect.Request[apiv1.PeersRequest]) (*connect.Response[apiv1.PeersResponse], error) {
	entries := p.p.Peers(req.Msg.GetIncludeExpired())
	out := &apiv1.PeersResponse{Peers: make([]*apiv1.PeerInfo, 0, len(entries))}
	for _, e := range entries {
		out.Peers = append(out.Peers, p.peerInfo(e))
	}
	return connect.NewResponse(out), nil
}

func (p *peerService) peerInfo(e p2p.PeerEntry) *apiv1.PeerInfo {
	addrs := make([]string, len(e.Addrs))
	for i, a := range e.Addrs {
		addrs[i] = a.String()
	}
	h := e.Heartbeat
	return &apiv1.PeerInfo{
		Id:           e.ID.String(),
		Addrs:        addrs,
		Labels:       h.Labels,
		Version:      h.Version,
		Protocols:    h.Protocols,
		Capabilities: capabilitiesToAPI(h.Capabilities),
		Capacity:     capacityToAPI(h.Capacity),
		LastSeen:     timestamppb.New(e.LastSeen),
		Connected:    p.p.IsConnected(e.ID),
		Expired:      e.Expired,
		Images:       h.Images,
		Draining:     h.Draining,
	}
}

func (p *peerService) Status(context.Context, *connect.Request[apiv1.StatusRequest]) (*connect.Response[apiv1.StatusResponse], error) {
	st := p.p.Status()
	return connect.NewResponse(&apiv1.StatusResponse{
		Id:                p.p.ID().String(),
		Version:           st.Version,
		StartedAt:         timestamppb.New(st.StartedAt),
		DataDir:           st.DataDir,
		ListenAddrs:       st.ListenAddrs,
		ConnectedPeers:    uint32(st.ConnectedPeers),
		KnownPeers:        uint32(st.KnownPeers),
		Labels:            st.Labels,
		Capabilities:      capabilitiesToAPI(st.Capabilities),
		Capacity:          capacityToAPI(st.Capacity),
		Protocols:         protocol.Protocols(),
		StoreBytes:        st.StoreBytes,
		PrivateNetwork:    st.PrivateNetwork,
		AllowlistSize:     uint32(st.AllowlistSize),
		MeshBytesReceived: st.MeshBytesReceived,
		MeshBytesSent:     st.MeshBytesSent,
		Draining:          st.Draining,
	}), nil
}

func (p *peerService) Drain(ctx context.Context, req *connect.Request[apiv1.DrainRequest], stream *connect.ServerStream[apiv1.DrainEvent]) error {
	if ms := req.Msg.GetDeadlineMs(); ms < 0 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("deadline %d ms: want 0 (the configured one) or more", ms))
	}
	event := func(st DrainStatus) *apiv1.DrainEvent {
		return &apiv1.DrainEvent{
			Running: uint32(st.Running), Undelivered: uint32(st.Undelivered), Done: st.Done,
			Completed: uint32(st.Completed), Returned: uint32(st.Returned), LeftUndelivered: uint32(st.LeftUndelivered),
			ElapsedMs: st.Elapsed.Milliseconds(), Stopping: st.Stopping,
		}
	}
	var th throttledSender
	st, err := p.p.Drain(ctx, time.Duration(req.Msg.GetDeadlineMs())*time.Millisecond, req.Msg.GetStay(), func(st DrainStatus) {
		th.maybe(func() { _ = stream.Send(event(st)) })
	})
	if err != nil {
		return err
	}
	return th.send(func() error { return stream.Send(event(st)) })
}

func (p *peerService) Eligible(context.Context, *connect.Request[apiv1.EligibleRequest]) (*connect.Response[apiv1.EligibleResponse], error) {
	return connect.NewResponse(&apiv1.EligibleResponse{WasDraining: p.p.Eligible()}), nil
}

func capabilitiesToAPI(c protocol.Capabilities) *apiv1.Capabilities {
	return &apiv1.Capabilities{Containerd: c.Containerd, Gvisor: c.GVisor, Chromium: c.Chromium, Gopls: c.Gopls}
}

func capacityToAPI(c protocol.Capacity) *apiv1.Capacity {
	return &apiv1.Capacity{
		Cpus:                 c.CPUs,
		MemoryTotalBytes:     c.MemoryTotalBytes,
		MemoryAvailableBytes: c.MemoryAvailableBytes,
		RunningTasks:         c.RunningTasks,
	}
}
