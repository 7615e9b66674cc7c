package apiserver

import (
	"context"
	"fmt"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
	"github.com/cortex-peer/cortex-peer/runtime/images"
)

// imageService implements the ImageService of the local API.
type imageService struct {
	im    Images
	roots Roots
}

// Images is this peer's containerd image store (tasks.Images).
type Images interface {
	Store(ctx context.Context) (*images.Store, error)
	Changed()
}

var _ apiv1connect.ImageServiceHandler = (*imageService)(nil)

func imageToAPI(im images.Image) *apiv1.Image {
	out := &apiv1.Image{Name: im.Name, Digest: im.Digest, Size: uint64(max(im.Size, 0))}
	if !im.Created.IsZero() {
		out.Created = timestamppb.New(im.Created)
	}
	return out
}

func (s *imageService) Import(ctx context.Context, req *connect.Request[apiv1.ImportImageRequest]) (*connect.Response[apiv1.ImportImageResponse], error) {
	defer s.im.Changed() // the heartbeat lists images
	p, err := s.roots.Resolve("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	st, err := s.im.Store(ctx)
	if err != nil {
		return nil, err
	}
	f, err := openRegular(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ims, err := st.Import(ctx, f, images.ImportOptions{Name: req.Msg.GetName()})
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", p, err)
	}
	out := &apiv1.ImportImageResponse{}
	for _, im := range ims {
		out.Images = append(out.Images, imageToAPI(im))
	}
	return connect.NewResponse(out), nil
}

func (s *imageService) Pull(ctx context.Context, req *connect.Request[apiv1.PullImageRequest], stream *connect.ServerStream[apiv1.PullImageEvent]) error {
	defer s.im.Changed() // the heartbeat lists images
	if req.Msg.GetRef() == "" {
		return fmt.Errorf("pull: ref is empty: %w", errdefs.ErrInvalid)
	}
	st, err := s.im.Store(ctx)
	if err != nil {
		return err
	}
	var sendMu sync.Mutex
	im, err := st.Pull(ctx, req.Msg.GetRef(), images.PullOptions{Progress: func(p images.PullProgress) {
		sendMu.Lock()
		defer sendMu.Unlock()
		_ = stream.Send(&apiv1.PullImageEvent{Event: &apiv1.PullImageEvent_Progress{Progress: &apiv1.Progress{
			Phase: "pulling", Bytes: uint64(max(p.Done, 0)), TotalBytes: uint64(max(p.Total, 0)),
		}}})
	}})
	if err != nil {
		return err
	}
	sendMu.Lock()
	defer sendMu.Unlock()
	return stream.Send(&apiv1.PullImageEvent{Event: &apiv1.PullImageEvent_Image{Image: imageToAPI(im)}})
}

func (s *imageService) List(ctx context.Context, _ *connect.Request[apiv1.ListImagesRequest]) (*connect.Response[apiv1.ListImagesResponse], error) {
	st, err := s.im.Store(ctx)
	if err != nil {
		return nil, err
	}
	ims, err := st.List(ctx)
	if err != nil {
		return nil, err
	}
	out := &apiv1.ListImagesResponse{}
	for _, im := range ims {
		out.Images = append(out.Images, imageToAPI(im))
	}
	return connect.NewResponse(out), nil
}

func (s *imageService) Remove(ctx context.Context, req *connect.Request[apiv1.RemoveImageRequest]) (*connect.Response[apiv1.RemoveImageResponse], error) {
	defer s.im.Changed() // the heartbeat lists images
	if req.Msg.GetName() == "" {
		return nil, fmt.Errorf("remove image: name is empty: %w", errdefs.ErrInvalid)
	}
	st, err := s.im.Store(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Remove(ctx, req.Msg.GetName()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&apiv1.RemoveImageResponse{}), nil
}
