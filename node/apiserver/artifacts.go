package apiserver

import (
	"context"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// PutResult is what an artifact put stored.
type PutResult struct {
	Root  cid.Cid
	Bytes int64
	Dir   bool
}

// ArtifactGot is what an artifact get fetched and wrote.
type ArtifactGot struct {
	Path                string
	Bytes, FetchedBytes int64
	Providers           map[peer.ID]int64
}

// Artifacts is the artifacts capability (artifacts.Service, through an
// adapter).
type Artifacts interface {
	Put(ctx context.Context, path string, progress func(files, bytes uint64)) (PutResult, error)
	// Get reports progress as a Progress event (total_bytes set for a file).
	Get(ctx context.Context, root cid.Cid, dest string, force bool, stall time.Duration, progress func(*apiv1.Progress)) (ArtifactGot, error)
	Size(ctx context.Context, root cid.Cid, stall time.Duration) (int64, error)
	Read(ctx context.Context, root cid.Cid, off, n int64, stall time.Duration, w io.Writer) (int64, error)
	Unpin(root cid.Cid) error
}

// artifactService implements the ArtifactService of the local API.
type artifactService struct {
	a     Artifacts
	roots Roots
}

var _ apiv1connect.ArtifactServiceHandler = (*artifactService)(nil)

func (s *artifactService) Put(ctx context.Context, req *connect.Request[apiv1.ArtifactPutRequest], stream *connect.ServerStream[apiv1.ArtifactPutEvent]) error {
	path, err := s.roots.Resolve("path", req.Msg.GetPath())
	if err != nil {
		return err
	}
	var th throttledSender
	res, err := s.a.Put(ctx, path, func(files, bytes uint64) {
		th.maybe(func() {
			_ = stream.Send(&apiv1.ArtifactPutEvent{Event: &apiv1.ArtifactPutEvent_Progress{Progress: &apiv1.Progress{Phase: "reading", Done: files, Bytes: bytes}}})
		})
	})
	if err != nil {
		return err
	}
	return th.send(func() error {
		return stream.Send(&apiv1.ArtifactPutEvent{Event: &apiv1.ArtifactPutEvent_Result{Result: &apiv1.ArtifactPutResult{
			Cid: res.Root.String(), Bytes: uint64(res.Bytes), Directory: res.Dir}}})
	})
}

func (s *artifactService) Get(ctx context.Context, req *connect.Request[apiv1.ArtifactGetRequest], stream *connect.ServerStream[apiv1.ArtifactGetEvent]) error {
	root, err := parseCID("cid", req.Msg.GetCid())
	if err != nil {
		return err
	}
	dest, err := s.roots.Resolve("dest", req.Msg.GetDest())
	if err != nil {
		return err
	}
	var th throttledSender
	res, err := s.a.Get(ctx, root, dest, req.Msg.GetForce(), time.Duration(req.Msg.GetStallSeconds())*time.Second, func(p *apiv1.Progress) {
		th.maybe(func() {
			_ = stream.Send(&apiv1.ArtifactGetEvent{Event: &apiv1.ArtifactGetEvent_Progress{Progress: p}})
		})
	})
	if err != nil {
		return err
	}
	providers := make(map[string]uint64, len(res.Providers))
	for p, n := range res.Providers {
		providers[p.String()] = uint64(n)
	}
	return th.send(func() error {
		return stream.Send(&apiv1.ArtifactGetEvent{Event: &apiv1.ArtifactGetEvent_Result{Result: &apiv1.ArtifactGetResult{
			Cid: root.String(), Path: res.Path, Bytes: uint64(res.Bytes), FetchedBytes: uint64(res.FetchedBytes), Providers: providers}}})
	})
}

func (s *artifactService) Read(ctx context.Context, req *connect.Request[apiv1.ArtifactReadRequest], stream *connect.ServerStream[apiv1.ArtifactChunk]) error {
	root, err := parseCID("cid", req.Msg.GetCid())
	if err != nil {
		return err
	}
	stall := time.Duration(req.Msg.GetStallSeconds()) * time.Second
	size, err := s.a.Size(ctx, root, stall)
	if err != nil {
		return err
	}
	n := int64(-1)
	if l := req.Msg.GetLength(); l > 0 {
		n = int64(min(l, 1<<62))
	}
	first := true
	cw := &chunkWriter{send: func(b []byte) error {
		c := &apiv1.ArtifactChunk{Data: b}
		if first {
			c.Size, first = uint64(size), false
		}
		return stream.Send(c)
	}}
	if _, err := s.a.Read(ctx, root, int64(min(req.Msg.GetOffset(), 1<<62)), n, stall, cw); err != nil {
		return err
	}
	if err := cw.flush(); err != nil {
		return err
	}
	if first { // nothing to read: the size alone
		return stream.Send(&apiv1.ArtifactChunk{Size: uint64(size)})
	}
	return nil
}

func (s *artifactService) Unpin(_ context.Context, req *connect.Request[apiv1.ArtifactUnpinRequest]) (*connect.Response[apiv1.ArtifactUnpinResponse], error) {
	root, err := parseCID("cid", req.Msg.GetCid())
	if err != nil {
		return nil, err
	}
	if err := s.a.Unpin(root); err != nil {
		return nil, err
	}
	return connect.NewResponse(&apiv1.ArtifactUnpinResponse{}), nil
}
