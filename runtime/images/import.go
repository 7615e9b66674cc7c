package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/archive/compression"
	"github.com/containerd/containerd/content"
	cimages "github.com/containerd/containerd/images"
	"github.com/containerd/containerd/images/archive"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/google/uuid"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// ImportOptions says how to name the images of an archive.
//
// Names are taken as `ctr images import` takes them, per manifest of the
// archive's index that is for the host platform:
//
//  1. the io.containerd.image.name annotation, as is (docker-archive
//     RepoTags arrive here, normalized: "alpine:3" becomes
//     "docker.io/library/alpine:3");
//  2. else the org.opencontainers.image.ref.name annotation: as is when it
//     is a whole reference (holds '/', ':' or '@'); when it is only a tag
//     ("test"), BaseName + ":" + tag if BaseName is set. A bare tag is not
//     used as a name by itself (ctr would invent "import-<date>:test"):
//     without BaseName the manifest counts as unnamed;
//  3. else Name, which can name one unnamed manifest.
//
// An archive that ends up naming nothing is refused with ErrInvalid, as is
// one that gives one name to two different manifests.
type ImportOptions struct {
	// BaseName is the repository that completes tag-only ref names, e.g.
	// "cortex/busybox" for ref name "test". Unlike ctr's --base-name it
	// does not filter the archive's other names.
	BaseName string
	// Name names the image when the archive names none (or names it only
	// by a tag and BaseName is empty).
	Name string
}

func (o ImportOptions) validate() error {
	if o.Name != "" {
		if err := validName(o.Name); err != nil {
			return fmt.Errorf("import options: %w", err)
		}
	}
	if o.BaseName != "" {
		if err := validName(o.BaseName); err != nil {
			return fmt.Errorf("import options: base name: %w", err)
		}
		if strings.ContainsAny(o.BaseName, ":@") {
			return fmt.Errorf("import options: base name %q must be a repository without tag or digest: %w", o.BaseName, errdefs.ErrInvalid)
		}
	}
	return nil
}

// target is one image an archive names.
type target struct {
	name string
	desc ocispec.Descriptor
}

// Import reads an image archive from r — an OCI image layout or a `docker
// save` tarball, plain or compressed with gzip or zstd — stores its images
// for the host platform, unpacks them to the store's snapshotter and names
// them (see ImportOptions). An existing image of the same name is moved to
// the new content. Either every image of the archive is imported, or, on
// error, none is and no name changed.
//
// A malformed archive (not a tarball, truncated, a blob missing or not
// matching its digest, a layer that cannot be extracted) wraps ErrInvalid;
// an archive over the size caps wraps ErrResourceExhausted.
//
// Import stops at the next write to containerd once ctx is done; a reader
// that blocks forever must be closed by the caller.
func (s *Store) Import(ctx context.Context, r io.Reader, opts ImportOptions) (_ []Image, retErr error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ctx = s.withNamespace(ctx)
	ctx, release, err := s.withLease(ctx)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer func() { release(retErr != nil) }()

	index, err := s.importIndex(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	cs := s.client.ContentStore()
	targets, err := s.nameManifests(ctx, cs, index, opts)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	for _, t := range targets {
		if err := s.checkAndUnpack(ctx, cs, t); err != nil {
			return nil, fmt.Errorf("import %s: %w", t.name, err)
		}
	}
	recs, err := s.record(ctx, targets)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	out := make([]Image, 0, len(recs))
	for _, rec := range recs {
		s.log.Info("imported image", "name", rec.Name, "digest", rec.Target.Digest.String())
		d, err := s.describe(ctx, rec)
		if err != nil {
			// The import is done; only its description failed.
			s.log.Warn("describe imported image", "name", rec.Name, "err", err)
			d = Image{Name: rec.Name, Digest: rec.Target.Digest.String(), MediaType: rec.Target.MediaType,
				Created: rec.CreatedAt, Updated: rec.UpdatedAt, Unpacked: true}
		}
		out = append(out, d)
	}
	return out, nil
}

// importIndex stores every file of the archive as a blob, under caps, and
// returns the descriptor of its index (containerd writes one for a
// docker-archive).
func (s *Store) importIndex(ctx context.Context, r io.Reader) (ocispec.Descriptor, error) {
	dr, err := compression.DecompressStream(r)
	if err != nil {
		return ocispec.Descriptor{}, withKind(errdefs.ErrInvalid, fmt.Errorf("read archive: %w", err))
	}
	defer dr.Close()
	counted := &countingReader{r: dr, max: s.cfg.maxArchiveSize}
	ing := &cappedIngester{
		Store:   s.client.ContentStore(),
		maxBlob: s.cfg.maxBlobSize,
		prefix:  "cortex-import-" + uuid.NewString() + "-",
	}
	index, err := archive.ImportIndex(ctx, ing, counted)
	if err == nil {
		return index, nil
	}
	var se *storeError
	switch {
	case counted.exceeded:
		return ocispec.Descriptor{}, fmt.Errorf("archive is larger than the cap of %d bytes: %w", s.cfg.maxArchiveSize, errdefs.ErrResourceExhausted)
	case errors.Is(err, errdefs.ErrResourceExhausted):
		return ocispec.Descriptor{}, err
	case ctx.Err() != nil:
		return ocispec.Descriptor{}, fmt.Errorf("read archive: %w", ctx.Err())
	case errors.As(err, &se):
		return ocispec.Descriptor{}, fmt.Errorf("store archive content: %w", fromContainerd(se.err))
	case cerrdefs.IsUnavailable(err):
		return ocispec.Descriptor{}, fmt.Errorf("store archive content: %w", fromContainerd(err))
	}
	return ocispec.Descriptor{}, withKind(errdefs.ErrInvalid,
		fmt.Errorf("not a valid OCI image layout or docker-archive tarball: %w", err))
}

// nameManifests reads the archive's index and names its manifests for the
// host platform, following ImportOptions.
func (s *Store) nameManifests(ctx context.Context, cs content.Store, index ocispec.Descriptor, opts ImportOptions) ([]target, error) {
	p, err := readJSONBlob(ctx, cs, index)
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(p, &idx); err != nil {
		return nil, withKind(errdefs.ErrInvalid, fmt.Errorf("index.json is not an OCI index: %w", err))
	}
	var (
		named   []target
		unnamed []ocispec.Descriptor
		byName  = map[string]ocispec.Descriptor{}
		skipped int
	)
	for _, m := range idx.Manifests {
		if !isManifestOrIndex(m.MediaType) {
			s.log.Debug("archive entry skipped: not a manifest or index", "media_type", m.MediaType, "digest", m.Digest.String())
			skipped++
			continue
		}
		if m.Platform != nil && !s.platform.Match(*m.Platform) {
			s.log.Debug("archive entry skipped: other platform", "platform", platforms.Format(*m.Platform), "digest", m.Digest.String())
			skipped++
			continue
		}
		name := archiveName(m.Annotations, opts.BaseName)
		if name == "" {
			unnamed = append(unnamed, m)
			continue
		}
		if err := validName(name); err != nil {
			return nil, fmt.Errorf("archive names an image: %w", err)
		}
		if prev, ok := byName[name]; ok {
			if prev.Digest != m.Digest {
				return nil, fmt.Errorf("archive gives the name %s to two images (%s and %s): %w", name, prev.Digest, m.Digest, errdefs.ErrInvalid)
			}
			continue
		}
		byName[name] = m
		named = append(named, target{name: name, desc: m})
	}
	switch {
	case len(unnamed) > 0 && opts.Name != "":
		if len(unnamed) > 1 {
			return nil, fmt.Errorf("archive holds %d unnamed images for %s; a name can be given to one only: %w",
				len(unnamed), platforms.Format(platforms.DefaultSpec()), errdefs.ErrInvalid)
		}
		if prev, ok := byName[opts.Name]; ok && prev.Digest != unnamed[0].Digest {
			return nil, fmt.Errorf("archive names another image %s already: %w", opts.Name, errdefs.ErrInvalid)
		}
		named = append(named, target{name: opts.Name, desc: unnamed[0]})
	case len(unnamed) > 0:
		s.log.Info("archive holds unnamed images, not imported", "count", len(unnamed))
	}
	if len(named) == 0 {
		switch {
		case len(unnamed) > 0:
			return nil, fmt.Errorf("archive names none of its %d images; give a name (or a base name for tag-only names): %w", len(unnamed), errdefs.ErrInvalid)
		case skipped > 0:
			return nil, fmt.Errorf("archive holds no image for %s: %w", platforms.Format(platforms.DefaultSpec()), errdefs.ErrInvalid)
		default:
			return nil, fmt.Errorf("archive holds no image: %w", errdefs.ErrInvalid)
		}
	}
	return named, nil
}

// archiveName is the name an index entry gives its image (see
// ImportOptions), or "".
func archiveName(annotations map[string]string, baseName string) string {
	if name := annotations[cimages.AnnotationImageName]; name != "" {
		return name
	}
	ref := annotations[ocispec.AnnotationRefName]
	switch {
	case ref == "":
		return ""
	case strings.ContainsAny(ref, "/:@"):
		return ref
	case baseName != "":
		return baseName + ":" + ref
	}
	return ""
}

// checkAndUnpack walks the content of one image — every blob must be in
// the store with its size, manifests and configs small — marks it for the
// garbage collector as belonging together, and unpacks it for the host
// platform.
func (s *Store) checkAndUnpack(ctx context.Context, cs content.Store, t target) error {
	children := cimages.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if err := checkBlob(ctx, cs, desc); err != nil {
			return nil, err
		}
		c, err := cimages.Children(ctx, cs, desc)
		if err != nil {
			return nil, withKind(errdefs.ErrInvalid, fmt.Errorf("read %s %s: %w", desc.MediaType, desc.Digest, err))
		}
		return c, nil
	})
	handler := cimages.SetChildrenLabels(cs, cimages.FilterPlatforms(children, s.platform))
	if err := cimages.WalkNotEmpty(ctx, handler, t.desc); err != nil {
		if errors.Is(err, cimages.ErrEmptyWalk) {
			return fmt.Errorf("image holds nothing for %s: %w", platforms.Format(platforms.DefaultSpec()), errdefs.ErrInvalid)
		}
		return classifyContent(ctx, err)
	}
	img := containerd.NewImageWithPlatform(s.client, cimages.Image{Name: t.name, Target: t.desc}, s.platform)
	if err := img.Unpack(ctx, s.cfg.snapshotter); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("unpack: %w", ctx.Err())
		}
		if cerrdefs.IsUnavailable(err) {
			return fmt.Errorf("unpack: %w", fromContainerd(err))
		}
		return withKind(errdefs.ErrInvalid, fmt.Errorf("unpack to %s for %s: %w", s.cfg.snapshotter, platforms.Format(platforms.DefaultSpec()), err))
	}
	return nil
}

// checkBlob refuses a descriptor whose blob is not in the store, differs in
// size, or is a document too big to read into memory.
func checkBlob(ctx context.Context, cs content.Store, desc ocispec.Descriptor) error {
	if err := desc.Digest.Validate(); err != nil {
		return withKind(errdefs.ErrInvalid, fmt.Errorf("%s descriptor: bad digest %q: %w", desc.MediaType, desc.Digest, err))
	}
	info, err := cs.Info(ctx, desc.Digest)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("%s %s is missing from the archive, or no blob has that digest: %w", desc.MediaType, desc.Digest, errdefs.ErrInvalid)
		}
		return fmt.Errorf("%s %s: %w", desc.MediaType, desc.Digest, fromContainerd(err))
	}
	if info.Size != desc.Size {
		return fmt.Errorf("%s %s is %d bytes but its descriptor says %d: %w", desc.MediaType, desc.Digest, info.Size, desc.Size, errdefs.ErrInvalid)
	}
	if isDocument(desc.MediaType) && info.Size > maxJSONSize {
		return fmt.Errorf("%s %s is %d bytes, over the cap of %d for a document: %w", desc.MediaType, desc.Digest, info.Size, maxJSONSize, errdefs.ErrResourceExhausted)
	}
	return nil
}

// classifyContent maps an error of walking stored content: kinds already
// given stay, an unreachable containerd is ErrUnavailable, the rest is bad
// input.
func classifyContent(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, errdefs.ErrInvalid), errors.Is(err, errdefs.ErrResourceExhausted),
		errors.Is(err, errdefs.ErrUnavailable):
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	case cerrdefs.IsUnavailable(err):
		return fromContainerd(err)
	}
	return withKind(errdefs.ErrInvalid, err)
}

// record points each name at its target, all or none: on error the names
// already written are put back as they were.
func (s *Store) record(ctx context.Context, targets []target) (_ []cimages.Image, retErr error) {
	is := s.client.ImageService()
	var (
		out  []cimages.Image
		undo []func(context.Context) error
	)
	defer func() {
		if retErr == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			if err := undo[i](cctx); err != nil {
				s.log.Warn("undo image name", "err", err)
			}
		}
	}()
	for _, t := range targets {
		img := cimages.Image{Name: t.name, Target: t.desc}
		prev, err := is.Get(ctx, t.name)
		switch {
		case err == nil:
			rec, err := is.Update(ctx, img, "target")
			if err != nil {
				return nil, fmt.Errorf("name %s: %w", t.name, fromContainerd(err))
			}
			undo = append(undo, func(ctx context.Context) error {
				_, err := is.Update(ctx, prev, "target")
				return err
			})
			out = append(out, rec)
		case cerrdefs.IsNotFound(err):
			rec, err := is.Create(ctx, img)
			if err != nil {
				return nil, fmt.Errorf("name %s: %w", t.name, fromContainerd(err))
			}
			undo = append(undo, func(ctx context.Context) error {
				return is.Delete(ctx, t.name)
			})
			out = append(out, rec)
		default:
			return nil, fmt.Errorf("name %s: %w", t.name, fromContainerd(err))
		}
	}
	return out, nil
}

// readJSONBlob reads a document blob, refusing one over maxJSONSize.
func readJSONBlob(ctx context.Context, cs content.Store, desc ocispec.Descriptor) ([]byte, error) {
	info, err := cs.Info(ctx, desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", desc.Digest, fromContainerd(err))
	}
	if info.Size > maxJSONSize {
		return nil, fmt.Errorf("%s is %d bytes, over the cap of %d for a document: %w", desc.Digest, info.Size, maxJSONSize, errdefs.ErrResourceExhausted)
	}
	desc.Size = info.Size
	p, err := content.ReadBlob(ctx, cs, desc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", desc.Digest, fromContainerd(err))
	}
	return p, nil
}

func isManifestOrIndex(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageManifest, cimages.MediaTypeDockerSchema2Manifest,
		ocispec.MediaTypeImageIndex, cimages.MediaTypeDockerSchema2ManifestList:
		return true
	}
	return false
}

// isDocument tells the media types that are read into memory.
func isDocument(mt string) bool {
	return isManifestOrIndex(mt) || cimages.IsKnownConfig(mt)
}

// countingReader fails once more than max bytes were read.
type countingReader struct {
	r        io.Reader
	n, max   int64
	exceeded bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.exceeded {
		return 0, errArchiveTooLarge
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		c.exceeded = true
		return n, errArchiveTooLarge
	}
	return n, err
}

var errArchiveTooLarge = errors.New("archive too large")

// cappedIngester is the content store as archive.ImportIndex sees it: it
// refuses blobs over the cap before they are read, bounds how many blobs
// one archive writes, gives each ingest a ref unique to this import (so
// that concurrent imports never wait on each other's "tar-index.json"),
// aborts ingests that were not committed, and marks the store's own errors
// so that they are not taken for a malformed archive.
type cappedIngester struct {
	content.Store
	maxBlob int64
	prefix  string
	blobs   int
}

func (c *cappedIngester) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	if wo.Desc.Size > c.maxBlob {
		return nil, fmt.Errorf("archive file %s is %d bytes, over the cap of %d: %w",
			strings.TrimPrefix(wo.Ref, "tar-"), wo.Desc.Size, c.maxBlob, errdefs.ErrResourceExhausted)
	}
	c.blobs++
	if c.blobs > maxArchiveBlobs {
		return nil, fmt.Errorf("archive holds more than %d files: %w", maxArchiveBlobs, errdefs.ErrResourceExhausted)
	}
	ref := c.prefix + wo.Ref
	w, err := c.Store.Writer(ctx, append(opts, content.WithRef(ref))...)
	if err != nil {
		if cerrdefs.IsAlreadyExists(err) {
			return nil, err // content.WriteBlob skips blobs the store holds
		}
		// Not unwrapped to containerd's kinds: content.OpenWriter would
		// retry an unavailable store until the context ends.
		return nil, &storeError{err: err}
	}
	return &abortingWriter{Writer: w, store: c.Store, ref: ref, ctx: ctx}, nil
}

// ReaderAt refuses to open a document (manifest, index, config) over
// maxJSONSize: archive.ImportIndex reads a docker-archive's config whole
// into memory to find its platform.
func (c *cappedIngester) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	if isDocument(desc.MediaType) {
		info, err := c.Store.Info(ctx, desc.Digest)
		if err != nil {
			return nil, &storeError{err: err}
		}
		if info.Size > maxJSONSize {
			return nil, fmt.Errorf("%s %s is %d bytes, over the cap of %d for a document: %w",
				desc.MediaType, desc.Digest, info.Size, maxJSONSize, errdefs.ErrResourceExhausted)
		}
	}
	return c.Store.ReaderAt(ctx, desc)
}

// storeError marks an error of the content store itself.
type storeError struct{ err error }

func (e *storeError) Error() string { return "content store: " + e.err.Error() }

// abortingWriter aborts its ingest when closed uncommitted, so a failed
// import leaves no partial ingest in containerd.
type abortingWriter struct {
	content.Writer
	store     content.Store
	ref       string
	ctx       context.Context
	committed bool
}

func (w *abortingWriter) Write(p []byte) (int, error) {
	n, err := w.Writer.Write(p)
	if err != nil {
		err = &storeError{err: err}
	}
	return n, err
}

func (w *abortingWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	err := w.Writer.Commit(ctx, size, expected, opts...)
	if err == nil || cerrdefs.IsAlreadyExists(err) {
		w.committed = true
		return err
	}
	return &storeError{err: err}
}

func (w *abortingWriter) Close() error {
	err := w.Writer.Close()
	if !w.committed {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), cleanupTimeout)
		defer cancel()
		if aerr := w.store.Abort(cctx, w.ref); aerr != nil && !cerrdefs.IsNotFound(aerr) {
			return errors.Join(err, aerr)
		}
	}
	return err
}
