package images

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/identifiers"
	cimages "github.com/containerd/containerd/images"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/namespaces"
	cerrdefs "github.com/containerd/errdefs"
	clog "github.com/containerd/log"
	"github.com/containerd/platforms"
	distref "github.com/distribution/reference"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

const (
	// DefaultMaxBlobSize is the default cap on one blob (layer, config,
	// manifest) of an imported archive or a pulled image.
	DefaultMaxBlobSize int64 = 8 << 30
	// DefaultMaxArchiveSize is the default cap on the bytes of one archive
	// (after decompression) that Import reads.
	DefaultMaxArchiveSize int64 = 64 << 30

	// maxJSONSize bounds a manifest, index or image config: they are read
	// into memory. Real ones are a few KiB.
	maxJSONSize int64 = 4 << 20
	// maxArchiveBlobs bounds the files of one archive that are stored as
	// blobs. A docker-archive holds 3 files per layer at most, and overlayfs
	// stacks a few hundred layers at most.
	maxArchiveBlobs = 10_000
	// maxNameLen bounds an image name.
	maxNameLen = 512

	// leaseExpiration is how long content being imported or pulled is kept
	// from the garbage collector if this process dies before releasing it
	// (containerd's own default).
	leaseExpiration = 24 * time.Hour
	// cleanupTimeout bounds releasing a lease or aborting an ingest, which
	// run even when the caller's context is done.
	cleanupTimeout = 30 * time.Second
)

// Image describes one named image of the store.
type Image struct {
	Name      string    // as stored, e.g. "cortex/busybox:test" or "docker.io/library/alpine:3.20"
	Digest    string    // digest of the manifest or index the name points at
	MediaType string    // media type of that manifest or index
	Size      int64     // bytes of content for the host platform (compressed layers, config, manifests); 0 if unknown
	Platforms []string  // platforms the image holds content for, e.g. "linux/amd64"
	Unpacked  bool      // unpacked to the store's snapshotter for the host platform, so it can run
	Created   time.Time // when the name was first recorded
	Updated   time.Time // when the name last changed target
}

// Store holds the images of one containerd namespace. It is safe for
// concurrent use; it owns no goroutines beyond the calls in progress.
type Store struct {
	client    *containerd.Client
	namespace string
	log       *slog.Logger
	clog      *clog.Entry // containerd's client logs, sent to log
	cfg       config
	platform  platforms.MatchComparer
}

type config struct {
	snapshotter    string
	maxBlobSize    int64
	maxArchiveSize int64
}

// Option configures a Store.
type Option func(*config) error

// WithSnapshotter names the snapshotter images are unpacked to (default
// containerd.DefaultSnapshotter, overlayfs on Linux). The executor must
// create its containers' snapshots with the same one.
func WithSnapshotter(name string) Option {
	return func(c *config) error {
		if name == "" {
			return fmt.Errorf("snapshotter name is empty: %w", errdefs.ErrInvalid)
		}
		c.snapshotter = name
		return nil
	}
}

// WithMaxBlobSize caps one blob of an archive or a pulled image (default
// DefaultMaxBlobSize). Larger blobs are refused with ErrResourceExhausted
// before they are read.
func WithMaxBlobSize(n int64) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("max blob size %d: %w", n, errdefs.ErrInvalid)
		}
		c.maxBlobSize = n
		return nil
	}
}

// WithMaxArchiveSize caps the bytes Import reads from one archive, after
// decompression (default DefaultMaxArchiveSize).
func WithMaxArchiveSize(n int64) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("max archive size %d: %w", n, errdefs.ErrInvalid)
		}
		c.maxArchiveSize = n
		return nil
	}
}

// New returns the image store of namespace on client. The client stays the
// caller's: the Store does not close it. A nil logger discards logs.
func New(client *containerd.Client, namespace string, logger *slog.Logger, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, fmt.Errorf("images: nil containerd client: %w", errdefs.ErrInvalid)
	}
	if err := identifiers.Validate(namespace); err != nil {
		return nil, fmt.Errorf("images: namespace %q: %w", namespace, withKind(errdefs.ErrInvalid, err))
	}
	cfg := config{
		snapshotter:    containerd.DefaultSnapshotter,
		maxBlobSize:    DefaultMaxBlobSize,
		maxArchiveSize: DefaultMaxArchiveSize,
	}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("images: %w", err)
		}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "images", "namespace", namespace)
	return &Store{
		client:    client,
		namespace: namespace,
		log:       logger,
		clog:      containerdLogger(logger),
		cfg:       cfg,
		platform:  platforms.Default(),
	}, nil
}

// Namespace returns the containerd namespace of the store.
func (s *Store) Namespace() string { return s.namespace }

// Snapshotter returns the snapshotter images are unpacked to.
func (s *Store) Snapshotter() string { return s.cfg.snapshotter }

// List returns every image of the namespace, sorted by name (containerd's
// order).
func (s *Store) List(ctx context.Context) ([]Image, error) {
	ctx = s.withNamespace(ctx)
	imgs, err := s.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images in namespace %s: %w", s.namespace, fromContainerd(err))
	}
	out := make([]Image, 0, len(imgs))
	for _, img := range imgs {
		d, err := s.describe(ctx, img)
		if err != nil {
			return nil, fmt.Errorf("list images in namespace %s: %w", s.namespace, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// Get returns the image called name. A name that is not stored as given is
// also looked up in its normalized docker form ("alpine" is
// "docker.io/library/alpine:latest"), the form Pull stores. It wraps
// ErrNotFound when there is no such image.
func (s *Store) Get(ctx context.Context, name string) (Image, error) {
	ctx = s.withNamespace(ctx)
	img, err := s.lookup(ctx, name)
	if err != nil {
		return Image{}, err
	}
	return s.describe(ctx, img)
}

// Open returns the containerd image called name (looked up as Get does),
// bound to the host platform: what the executor hands to
// containerd.WithNewSnapshot and oci.WithImageConfig, with Snapshotter().
// The context used with it must carry the store's namespace.
func (s *Store) Open(ctx context.Context, name string) (containerd.Image, error) {
	img, err := s.lookup(s.withNamespace(ctx), name)
	if err != nil {
		return nil, err
	}
	return containerd.NewImageWithPlatform(s.client, img, s.platform), nil
}

// Remove deletes the name of an image (looked up as Get does); the content
// and snapshots no other image uses are garbage collected before Remove
// returns. It wraps ErrNotFound when there is no such image.
func (s *Store) Remove(ctx context.Context, name string) error {
	ctx = s.withNamespace(ctx)
	img, err := s.lookup(ctx, name)
	if err != nil {
		return err
	}
	if err := s.client.ImageService().Delete(ctx, img.Name, cimages.SynchronousDelete()); err != nil {
		return fmt.Errorf("remove image %s: %w", img.Name, fromContainerd(err))
	}
	s.log.Info("removed image", "name", img.Name, "digest", img.Target.Digest.String())
	return nil
}

// withNamespace returns ctx for calls to containerd: the store's namespace,
// and containerd's client logs sent to the store's logger.
func (s *Store) withNamespace(ctx context.Context) context.Context {
	return clog.WithLogger(namespaces.WithNamespace(ctx, s.namespace), s.clog)
}

// lookup finds the record called name, or its normalized docker form.
// Refers reports whether held, a name as List gives it, is the image that
// want names, as Get resolves want: the same name, or the same once docker's
// normalisation is applied (busybox is docker.io/library/busybox:latest).
func Refers(held, want string) bool {
	if held == want {
		return true
	}
	ref, err := distref.ParseDockerRef(want)
	return err == nil && ref.String() == held
}

func (s *Store) lookup(ctx context.Context, name string) (cimages.Image, error) {
	if name == "" {
		return cimages.Image{}, fmt.Errorf("image name is empty: %w", errdefs.ErrInvalid)
	}
	is := s.client.ImageService()
	img, err := is.Get(ctx, name)
	if err == nil {
		return img, nil
	}
	if !cerrdefs.IsNotFound(err) {
		return cimages.Image{}, fmt.Errorf("get image %s: %w", name, fromContainerd(err))
	}
	if ref, perr := distref.ParseDockerRef(name); perr == nil && ref.String() != name {
		img, err = is.Get(ctx, ref.String())
		if err == nil {
			return img, nil
		}
		if !cerrdefs.IsNotFound(err) {
			return cimages.Image{}, fmt.Errorf("get image %s: %w", ref.String(), fromContainerd(err))
		}
	}
	return cimages.Image{}, fmt.Errorf("image %s in namespace %s: %w (import or pull it first)", name, s.namespace, errdefs.ErrNotFound)
}

// describe fills an Image from a record. Content that cannot be read (an
// image whose blobs were lost) leaves Size, Platforms and Unpacked empty
// rather than failing: only an unreachable containerd or a done context is
// an error.
func (s *Store) describe(ctx context.Context, img cimages.Image) (Image, error) {
	out := Image{
		Name:      img.Name,
		Digest:    img.Target.Digest.String(),
		MediaType: img.Target.MediaType,
		Created:   img.CreatedAt,
		Updated:   img.UpdatedAt,
	}
	cs := s.client.ContentStore()
	degraded := func(what string, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cerrdefs.IsUnavailable(err) {
			return fmt.Errorf("%s of image %s: %w", what, img.Name, fromContainerd(err))
		}
		s.log.Debug("image content unreadable", "name", img.Name, "what", what, "err", err)
		return nil
	}
	if ps, err := cimages.Platforms(ctx, cs, img.Target); err != nil {
		if err := degraded("platforms", err); err != nil {
			return Image{}, err
		}
	} else {
		for _, p := range ps {
			out.Platforms = append(out.Platforms, platforms.Format(p))
		}
	}
	ci := containerd.NewImageWithPlatform(s.client, img, s.platform)
	if size, err := ci.Size(ctx); err != nil {
		if err := degraded("size", err); err != nil {
			return Image{}, err
		}
	} else {
		out.Size = size
	}
	if ok, err := ci.IsUnpacked(ctx, s.cfg.snapshotter); err != nil {
		if err := degraded("unpack state", err); err != nil {
			return Image{}, err
		}
	} else {
		out.Unpacked = ok
	}
	return out, nil
}

// withLease returns ctx carrying a new lease that keeps what is written
// under it from the garbage collector, and the function that releases it.
// release(true) collects garbage at once, so that a failed operation leaves
// nothing behind when it returns.
func (s *Store) withLease(ctx context.Context) (context.Context, func(failed bool), error) {
	ls := s.client.LeasesService()
	l, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(leaseExpiration))
	if err != nil {
		return nil, nil, fmt.Errorf("create lease: %w", fromContainerd(err))
	}
	release := func(failed bool) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		var opts []leases.DeleteOpt
		if failed {
			opts = append(opts, leases.SynchronousDelete)
		}
		if err := ls.Delete(cctx, l, opts...); err != nil {
			s.log.Warn("release lease", "lease", l.ID, "err", err)
		}
	}
	return leases.WithLease(ctx, l.ID), release, nil
}

// kindError classifies err by one of the errdefs kinds without changing its
// message.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// withKind returns err classified as kind (err itself if it already is).
func withKind(kind, err error) error {
	if err == nil || errors.Is(err, kind) {
		return err
	}
	return &kindError{kind: kind, err: err}
}

// fromContainerd classifies an error returned by containerd by the kinds of
// protocol/errdefs, keeping its message and chain.
func fromContainerd(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case cerrdefs.IsNotFound(err):
		return withKind(errdefs.ErrNotFound, err)
	case cerrdefs.IsAlreadyExists(err):
		return withKind(errdefs.ErrAlreadyExists, err)
	case cerrdefs.IsInvalidArgument(err):
		return withKind(errdefs.ErrInvalid, err)
	case cerrdefs.IsUnavailable(err):
		return withKind(errdefs.ErrUnavailable, fmt.Errorf("%w (is containerd running? `make deps` starts it)", err))
	case cerrdefs.IsUnauthorized(err):
		return withKind(errdefs.ErrUnauthenticated, err)
	case cerrdefs.IsPermissionDenied(err):
		return withKind(errdefs.ErrPermissionDenied, err)
	case cerrdefs.IsResourceExhausted(err):
		return withKind(errdefs.ErrResourceExhausted, err)
	}
	return err
}

// validName refuses names that no reference parser would accept: empty,
// too long, or holding spaces or control characters.
func validName(name string) error {
	if name == "" {
		return fmt.Errorf("image name is empty: %w", errdefs.ErrInvalid)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("image name of %d bytes is longer than %d: %w", len(name), maxNameLen, errdefs.ErrInvalid)
	}
	for _, r := range name {
		if r <= ' ' || r >= 0x7f {
			return fmt.Errorf("image name %q holds a space, control or non-ASCII character: %w", name, errdefs.ErrInvalid)
		}
	}
	return nil
}
