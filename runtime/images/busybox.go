package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	cimages "github.com/containerd/containerd/images"
	"github.com/containerd/platforms"
	distref "github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// buildEpoch is the modification time (Unix seconds) of every file
// BuildBusybox writes, so that its output depends on its inputs only.
const buildEpoch = 0

// maxBusyboxSize bounds the busybox binary read into memory (Debian's
// static one is about 2 MiB).
const maxBusyboxSize = 64 << 20

// BuildBusybox writes to w an OCI image layout tarball of a minimal image
// for the host platform made of the static busybox binary at busyboxPath:
// /bin/busybox and a symlink per applet (from `busybox --list`), PATH=/bin,
// default command sh, /etc/passwd with root and nobody (65534), /etc/group,
// and empty /tmp (1777), /workspace, /proc, /dev, /sys. It has one
// uncompressed layer owned by 0:0; its index names it name with the
// io.containerd.image.name annotation (and its tag as
// org.opencontainers.image.ref.name), so `ctr images import` and Import
// both name it name. The output is reproducible: fixed times, sorted
// entries.
func BuildBusybox(w io.Writer, busyboxPath, name string) error {
	ref, err := distref.ParseNormalizedNamed(name)
	if err != nil {
		return fmt.Errorf("build busybox image: name %q: %w", name, withKind(errdefs.ErrInvalid, err))
	}
	tag := "latest"
	if t, ok := ref.(distref.Tagged); ok {
		tag = t.Tag()
	}
	layer, err := busyboxLayer(busyboxPath)
	if err != nil {
		return fmt.Errorf("build busybox image: %w", err)
	}
	manifest, blobs, err := buildImage(platforms.DefaultSpec(), busyboxConfig(), [][]byte{layer})
	if err != nil {
		return fmt.Errorf("build busybox image: %w", err)
	}
	manifest.Annotations = map[string]string{
		cimages.AnnotationImageName: name,
		ocispec.AnnotationRefName:   tag,
	}
	if err := writeLayout(w, []ocispec.Descriptor{manifest}, blobs); err != nil {
		return fmt.Errorf("build busybox image: %w", err)
	}
	return nil
}

// busyboxConfig is the runtime configuration of the busybox image.
func busyboxConfig() ocispec.ImageConfig {
	return ocispec.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}}
}

// busyboxLayer returns the one layer of the busybox image.
func busyboxLayer(busyboxPath string) ([]byte, error) {
	bin, err := readBounded(busyboxPath, maxBusyboxSize)
	if err != nil {
		return nil, err
	}
	applets, err := busyboxApplets(busyboxPath)
	if err != nil {
		return nil, err
	}
	files := []layerFile{
		{Name: "bin/", Mode: 0o755, Type: tar.TypeDir},
		{Name: "bin/busybox", Mode: 0o755, Type: tar.TypeReg, Data: bin},
		{Name: "dev/", Mode: 0o755, Type: tar.TypeDir},
		{Name: "etc/", Mode: 0o755, Type: tar.TypeDir},
		{Name: "etc/group", Mode: 0o644, Type: tar.TypeReg, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Name: "etc/passwd", Mode: 0o644, Type: tar.TypeReg,
			Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")},
		{Name: "proc/", Mode: 0o555, Type: tar.TypeDir},
		{Name: "sys/", Mode: 0o555, Type: tar.TypeDir},
		{Name: "tmp/", Mode: 0o1777, Type: tar.TypeDir},
		{Name: "workspace/", Mode: 0o755, Type: tar.TypeDir},
	}
	for _, a := range applets {
		files = append(files, layerFile{Name: "bin/" + a, Mode: 0o777, Type: tar.TypeSymlink, Linkname: "busybox"})
	}
	return buildLayer(files)
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(p)) > max {
		return nil, fmt.Errorf("%s is over %d bytes: %w", path, max, errdefs.ErrResourceExhausted)
	}
	return p, nil
}

// busyboxApplets returns the sorted applet names `busybox --list` prints,
// without busybox itself and without any name that is not a plain file
// name.
func busyboxApplets(path string) ([]string, error) {
	out, err := exec.Command(path, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list (is it a busybox binary for this platform?): %w", path, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a == "busybox" || a == "." || a == ".." || strings.ContainsAny(a, "/\x00") {
			continue
		}
		applets = append(applets, a)
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list printed no applets: %w", path, errdefs.ErrInvalid)
	}
	sort.Strings(applets)
	return applets, nil
}

// layerFile is one entry of a layer built by buildLayer.
type layerFile struct {
	Name     string // relative; directories end in '/'
	Mode     int64
	Type     byte
	Data     []byte // regular files
	Linkname string // symlinks and hard links
	Major    int64  // devices
	Minor    int64
}

// buildLayer returns an uncompressed layer tar of files, sorted by name,
// owned by 0:0, every time buildEpoch.
func buildLayer(files []layerFile) ([]byte, error) {
	sorted := append([]layerFile(nil), files...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range sorted {
		hdr := &tar.Header{
			Typeflag: f.Type,
			Name:     f.Name,
			Linkname: f.Linkname,
			Mode:     f.Mode,
			ModTime:  time.Unix(buildEpoch, 0),
			Devmajor: f.Major,
			Devminor: f.Minor,
		}
		if f.Type == tar.TypeReg {
			hdr.Size = int64(len(f.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", f.Name, err)
		}
		if f.Type == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("layer entry %s: %w", f.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// blob is a piece of content of an image layout.
type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{
		desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))},
		data: data,
	}
}

func jsonBlob(mediaType string, v any) (blob, error) {
	p, err := json.Marshal(v)
	if err != nil {
		return blob{}, err
	}
	return newBlob(mediaType, p), nil
}

// buildImage makes the config and manifest of an image of uncompressed
// layers, and returns the manifest's descriptor (with its platform) and
// every blob of the image.
func buildImage(platform ocispec.Platform, cfg ocispec.ImageConfig, layers [][]byte) (ocispec.Descriptor, []blob, error) {
	var (
		blobs   []blob
		diffIDs []digest.Digest
		ldescs  []ocispec.Descriptor
	)
	for _, l := range layers {
		b := newBlob(ocispec.MediaTypeImageLayer, l)
		blobs = append(blobs, b)
		diffIDs = append(diffIDs, b.desc.Digest)
		ldescs = append(ldescs, b.desc)
	}
	config, err := jsonBlob(ocispec.MediaTypeImageConfig, ocispec.Image{
		Platform: platform,
		Config:   cfg,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	manifest, err := jsonBlob(ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config.desc,
		Layers:    ldescs,
	})
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	blobs = append(blobs, config, manifest)
	desc := manifest.desc
	desc.Platform = &platform
	return desc, blobs, nil
}

// writeLayout writes an OCI image layout tarball: oci-layout, an
// index.json listing manifests, and the blobs, sorted, every time
// buildEpoch.
func writeLayout(w io.Writer, manifests []ocispec.Descriptor, blobs []blob) error {
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: manifests,
	})
	if err != nil {
		return err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return err
	}
	files := map[string][]byte{
		ocispec.ImageLayoutFile: layout,
		"index.json":            index,
	}
	algos := map[string]bool{}
	for _, b := range blobs {
		algos[b.desc.Digest.Algorithm().String()] = true
		files["blobs/"+b.desc.Digest.Algorithm().String()+"/"+b.desc.Digest.Encoded()] = b.data
	}
	entries := []layerFile{{Name: "blobs/", Mode: 0o755, Type: tar.TypeDir}}
	for a := range algos {
		entries = append(entries, layerFile{Name: "blobs/" + a + "/", Mode: 0o755, Type: tar.TypeDir})
	}
	for n, p := range files {
		entries = append(entries, layerFile{Name: n, Mode: 0o644, Type: tar.TypeReg, Data: p})
	}
	tarball, err := buildLayer(entries)
	if err != nil {
		return err
	}
	_, err = w.Write(tarball)
	return err
}
