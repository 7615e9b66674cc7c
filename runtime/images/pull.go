package images

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	cimages "github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	remoteserrors "github.com/containerd/containerd/remotes/errors"
	cerrdefs "github.com/containerd/errdefs"
	distref "github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// progressInterval is how often Pull reports progress.
const progressInterval = 200 * time.Millisecond

// PullOptions tune a Pull.
type PullOptions struct {
	// Progress, when set, is called from one goroutine about every 200 ms
	// while content is fetched, and once more when the pull succeeded (with
	// Done == Total). It must not block.
	Progress func(PullProgress)
	// Credentials returns the user and secret for a registry host (user
	// empty and secret a token for an identity token; both empty for
	// anonymous). Nil reads the docker config file at
	// DefaultDockerConfigPath().
	Credentials func(host string) (user, secret string, err error)
	// PlainHTTP talks http instead of https to every registry. Registries
	// on localhost are talked to over http without it.
	PlainHTTP bool
}

// PullProgress is how far a pull is. Total grows as manifests are read and
// reveal more blobs; blobs the store already held count as done.
type PullProgress struct {
	Done, Total int64 // bytes
}

// Pull fetches ref from its registry for the host platform, unpacks it to
// the store's snapshotter and names it: the name is ref normalized the
// docker way ("alpine" is stored as "docker.io/library/alpine:latest").
// Nothing is named unless the whole image was fetched and unpacked.
//
// It wraps ErrInvalid for a malformed reference, ErrUnavailable naming the
// host when the registry cannot be reached (bounded by ctx),
// ErrUnauthenticated when it refuses the credentials, ErrNotFound when it
// has no such image, ErrResourceExhausted for a blob over the size cap.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (_ Image, retErr error) {
	named, err := distref.ParseDockerRef(ref)
	if err != nil {
		return Image{}, fmt.Errorf("pull %q: %w", ref, withKind(errdefs.ErrInvalid, err))
	}
	name := named.String()
	host := distref.Domain(named)

	creds := opts.Credentials
	if creds == nil {
		dc, err := LoadDockerConfig(DefaultDockerConfigPath())
		if err != nil {
			return Image{}, fmt.Errorf("pull %s: %w", name, err)
		}
		if h := dc.Helper(host); h != "" {
			s.log.Warn("docker credential helpers are not supported; pulling anonymously (add an auths entry to the docker config)",
				"registry", host, "helper", h)
		}
		creds = dc.Credentials
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	hc := &http.Client{Transport: transport}
	plainHTTP := docker.MatchLocalhost
	if opts.PlainHTTP {
		plainHTTP = docker.MatchAllHosts
	}
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(
			docker.WithClient(hc),
			docker.WithPlainHTTP(plainHTTP),
			docker.WithAuthorizer(docker.NewDockerAuthorizer(
				docker.WithAuthClient(hc),
				docker.WithAuthCreds(creds),
			)),
		),
	})

	ctx = s.withNamespace(ctx)
	ctx, release, err := s.withLease(ctx)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", name, err)
	}
	defer func() { release(retErr != nil) }()

	tr := &pullTracker{maxBlob: s.cfg.maxBlobSize, descs: map[digest.Digest]ocispec.Descriptor{}, done: map[digest.Digest]bool{}}
	stop := func() {}
	if opts.Progress != nil {
		stop = tr.report(ctx, s.client.ContentStore(), opts.Progress)
	}
	s.log.Info("pulling image", "name", name)
	img, err := s.client.Pull(ctx, name,
		containerd.WithResolver(resolver),
		containerd.WithPlatformMatcher(s.platform),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(s.cfg.snapshotter),
		containerd.WithImageHandler(cimages.HandlerFunc(tr.handle)),
	)
	stop()
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", name, classifyPull(ctx, host, err))
	}
	if opts.Progress != nil {
		total := tr.total()
		opts.Progress(PullProgress{Done: total, Total: total})
	}
	s.log.Info("pulled image", "name", name, "digest", img.Target().Digest.String())
	d, err := s.describe(ctx, img.Metadata())
	if err != nil {
		s.log.Warn("describe pulled image", "name", name, "err", err)
		md := img.Metadata()
		d = Image{Name: md.Name, Digest: md.Target.Digest.String(), MediaType: md.Target.MediaType,
			Created: md.CreatedAt, Updated: md.UpdatedAt, Unpacked: true}
	}
	return d, nil
}

// classifyPull maps a pull error by the kinds of protocol/errdefs.
func classifyPull(ctx context.Context, host string, err error) error {
	var (
		status remoteserrors.ErrUnexpectedStatus
		opErr  *net.OpError
		dnsErr *net.DNSError
		netErr net.Error
	)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("registry %s: %w (%w)", host, ctx.Err(), err)
	case errors.Is(err, errdefs.ErrResourceExhausted):
		return err
	case errors.As(err, &status):
		switch {
		case status.StatusCode == http.StatusUnauthorized || status.StatusCode == http.StatusForbidden:
			return fmt.Errorf("registry %s refused the credentials (see the docker config's auths): %w",
				host, withKind(errdefs.ErrUnauthenticated, err))
		case status.StatusCode == http.StatusNotFound:
			return withKind(errdefs.ErrNotFound, err)
		case status.StatusCode == http.StatusTooManyRequests || status.StatusCode >= 500:
			return fmt.Errorf("registry %s: %w", host, withKind(errdefs.ErrUnavailable, err))
		}
		return err
	case errors.Is(err, docker.ErrInvalidAuthorization):
		return fmt.Errorf("registry %s refused the credentials (see the docker config's auths): %w",
			host, withKind(errdefs.ErrUnauthenticated, err))
	case errors.As(err, &dnsErr), errors.As(err, &opErr), errors.Is(err, syscall.ECONNREFUSED),
		errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Errorf("registry %s is unreachable: %w", host, withKind(errdefs.ErrUnavailable, err))
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("registry %s: %w", host, withKind(errdefs.ErrNotFound, err))
	}
	return fromContainerd(err)
}

// pullTracker refuses blobs over the caps before they are fetched and
// records what a pull fetches, for progress.
type pullTracker struct {
	maxBlob int64

	mu    sync.Mutex
	descs map[digest.Digest]ocispec.Descriptor
	done  map[digest.Digest]bool
}

func (t *pullTracker) handle(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	if desc.Size > t.maxBlob {
		return nil, fmt.Errorf("%s %s is %d bytes, over the cap of %d: %w", desc.MediaType, desc.Digest, desc.Size, t.maxBlob, errdefs.ErrResourceExhausted)
	}
	if isDocument(desc.MediaType) && desc.Size > maxJSONSize {
		return nil, fmt.Errorf("%s %s is %d bytes, over the cap of %d for a document: %w", desc.MediaType, desc.Digest, desc.Size, maxJSONSize, errdefs.ErrResourceExhausted)
	}
	t.mu.Lock()
	t.descs[desc.Digest] = desc
	t.mu.Unlock()
	return nil, nil
}

func (t *pullTracker) total() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for _, d := range t.descs {
		n += d.Size
	}
	return n
}

// report calls fn every progressInterval until the returned stop is called;
// stop returns once the reporting goroutine has ended.
func (t *pullTracker) report(ctx context.Context, cs content.Store, fn func(PullProgress)) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(progressInterval)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				if p, ok := t.progress(ctx, cs); ok {
					fn(p)
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		wg.Wait()
	}
}

// progress sums the bytes of the blobs seen so far: committed ones fully,
// ones being written up to their offset.
func (t *pullTracker) progress(ctx context.Context, cs content.Store) (PullProgress, bool) {
	statuses, err := cs.ListStatuses(ctx)
	if err != nil {
		return PullProgress{}, false
	}
	offsets := make(map[string]int64, len(statuses))
	for _, st := range statuses {
		offsets[st.Ref] = st.Offset
	}
	t.mu.Lock()
	descs := make([]ocispec.Descriptor, 0, len(t.descs))
	for _, d := range t.descs {
		descs = append(descs, d)
	}
	t.mu.Unlock()

	var p PullProgress
	for _, d := range descs {
		p.Total += d.Size
		t.mu.Lock()
		done := t.done[d.Digest]
		t.mu.Unlock()
		if done {
			p.Done += d.Size
			continue
		}
		if off, ok := offsets[remotes.MakeRefKey(ctx, d)]; ok {
			p.Done += off
			continue
		}
		if _, err := cs.Info(ctx, d.Digest); err == nil {
			t.mu.Lock()
			t.done[d.Digest] = true
			t.mu.Unlock()
			p.Done += d.Size
		}
	}
	return p, true
}
