package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/containerd/containerd"

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/runtime/images"
)

// Images is this peer's containerd image store. It connects to containerd
// on first use, like the runner, so a peer without containerd still starts.
type Images struct {
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

// NewImages returns the image store of containerd at socket, in namespace.
func NewImages(socket, namespace string, log *slog.Logger) *Images {
	return &Images{socket: socket, namespace: namespace, log: log}
}

// Store connects to containerd once and returns its image store.
func (s *Images) Store(ctx context.Context) (*images.Store, error) {
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

// HeldNames lists the images held, newest first, at most
// protocol.MaxImages, from a cache; "none" when containerd cannot be asked
// (a peer without containerd holds no images).
func (s *Images) HeldNames(ctx context.Context) []string {
	s.namesMu.Lock()
	defer s.namesMu.Unlock()
	if !s.namesAt.IsZero() && time.Since(s.namesAt) < imageNamesTTL {
		return s.names
	}
	s.namesAt = time.Now()
	ctx, cancel := context.WithTimeout(ctx, containerdDialTimeout)
	defer cancel()
	st, err := s.Store(ctx)
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

// Changed makes the next HeldNames list the images again.
func (s *Images) Changed() {
	s.namesMu.Lock()
	s.namesAt = time.Time{}
	s.namesMu.Unlock()
}

// Close releases the containerd connection. Safe to call twice.
func (s *Images) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		return nil
	}
	err := s.client.Close()
	s.client, s.store = nil, nil
	return err
}

// Ensure pulls image from its registry when this peer lacks it; a pull that
// fails says which image. task names the task that needs it, for the log.
func (s *Images) Ensure(ctx context.Context, task, image string) error {
	st, err := s.Store(ctx)
	if err != nil {
		return err
	}
	if _, err := st.Get(ctx, image); err == nil {
		return nil
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("image %q: %w", image, err)
	}
	s.log.Info("pulling the image of a task", "task", task, "image", image)
	defer s.Changed()
	if _, err := st.Pull(ctx, image, images.PullOptions{}); err != nil {
		return fmt.Errorf("image %q is not here and could not be pulled: %w", image, err)
	}
	return nil
}
