package node

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
	"github.com/cortex-peer/cortex-peer/runtime/images"
)

// imageStore connects to containerd for images on first use, like the
// executor, so a peer without containerd still starts.
type imageStore struct {
	socket, namespace string
	log               *slog.Logger

	mu     sync.Mutex
	client *containerd.Client
	store  *images.Store

	// The names of the images held, for the heartbeat, listed again once
	// older than imageNamesTTL or after a change made through this peer.
	namesMu sync.Mutex
	names   []string
	namesAt time.Time
}

const imageNamesTTL = 10 * time.Second

const containerdDialTimeout = 5 * time.Second

func (s *imageStore) get(ctx context.Context) (*images.Store, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.store != nil {
		return s.store, nil
	}
	client, err := containerd.New(s.socket, containerd.WithDefaultNamespace(s.namespace), containerd.WithTimeout(containerdDialTimeout))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %v (run `make deps` to install and start it): %w", s.socket, err, errdefs.ErrUnavailable)
	}
	st, err := images.New(client, s.namespace, s.log)
	if err != nil {
		client.Close()
		return nil, err
	}
	s.client, s.store = client, st
	return st, nil
}

// heldNames lists the images held, newest first, at most
// protocol.MaxImages, from a cache; "none" when containerd cannot be asked
// (a peer without containerd holds no images).
func (s *imageStore) heldNames(ctx context.Context) []string {
	s.namesMu.Lock()
	defer s.namesMu.Unlock()
	if !s.namesAt.IsZero() && time.Since(s.namesAt) < imageNamesTTL {
		return s.names
	}
	s.namesAt = time.Now()
	ctx, cancel := context.WithTimeout(ctx, containerdDialTimeout)
	defer cancel()
	st, err := s.get(ctx)
	if err != nil {
		s.names = nil
		return nil
	}
	list, err := st.List(ctx)
	if err != nil {
		s.log.Debug("list images for the heartbeat", "err", err)
		return s.names
	}
	slices.SortFunc(list, func(a, b images.Image) int { return b.Created.Compare(a.Created) })
	names := make([]string, 0, min(len(list), protocol.MaxImages))
	for _, im := range list[:min(len(list), protocol.MaxImages)] {
		names = append(names, im.Name)
	}
	s.names = names
	return names
}

// changed makes the next heldNames list the images again.
func (s *imageStore) changed() {
	s.namesMu.Lock()
	s.namesAt = time.Time{}
	s.namesMu.Unlock()
}

// Close releases the containerd connection. Safe to call twice.
func (s *imageStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		return nil
	}
	err := s.client.Close()
	s.client, s.store = nil, nil
	return err
}

// imageService implements the ImageService of the local API.
type imageService struct {
	n *Node
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
	defer s.n.images.changed() // the heartbeat lists images
	p, err := absPath("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	st, err := s.n.images.get(ctx)
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
	defer s.n.images.changed() // the heartbeat lists images
	if req.Msg.GetRef() == "" {
		return fmt.Errorf("pull: ref is empty: %w", errdefs.ErrInvalid)
	}
	st, err := s.n.images.get(ctx)
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
	st, err := s.n.images.get(ctx)
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
	defer s.n.images.changed() // the heartbeat lists images
	if req.Msg.GetName() == "" {
		return nil, fmt.Errorf("remove image: name is empty: %w", errdefs.ErrInvalid)
	}
	st, err := s.n.images.get(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Remove(ctx, req.Msg.GetName()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&apiv1.RemoveImageResponse{}), nil
}
