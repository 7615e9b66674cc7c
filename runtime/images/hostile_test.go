package images

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/namespaces"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// hostTmp is the host directory hostile layers aim at. The containerd
// daemon runs on this host, so a file it wrote outside the snapshot would
// be seen here.
const hostTmp = "/tmp"

// TestImportHostileLayers imports layers that try to write outside the
// snapshot. Import must refuse them with ErrInvalid, or contain them:
// nothing appears, changes or disappears outside the snapshot on the host.
func TestImportHostileLayers(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	repo := uniqueRepo(t, s, "h")
	id := randHex(t)
	host := func(name string) string { return filepath.Join(hostTmp, name+"-"+id) }
	reg := func(name, data string) layerFile {
		return layerFile{Name: name, Mode: 0o644, Type: tar.TypeReg, Data: []byte(data)}
	}

	// victims are host files that hostile layers try to delete or link to.
	victim := func(t *testing.T, name string) string {
		p := host(name)
		if err := os.WriteFile(p, []byte("safe"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(p) })
		return p
	}

	cases := []struct {
		name   string
		files  func(t *testing.T) []layerFile
		second []layerFile                                   // a second layer, applied over the first
		absent []string                                      // host paths that must not exist afterwards
		setup  func(t *testing.T) (check func(t *testing.T)) // makes victims, returns the check that they are intact
	}{
		{
			name: "dotdot",
			files: func(*testing.T) []layerFile {
				return []layerFile{reg("../../../../../../.."+host("escaped-dotdot"), "evil")}
			},
			absent: []string{host("escaped-dotdot")},
		},
		{
			name: "absolute",
			files: func(*testing.T) []layerFile {
				return []layerFile{reg(host("escaped-abs"), "evil")}
			},
			absent: []string{host("escaped-abs")},
		},
		{
			name: "absolute symlink then write through it",
			files: func(*testing.T) []layerFile {
				return []layerFile{
					{Name: "link", Mode: 0o777, Type: tar.TypeSymlink, Linkname: hostTmp},
					reg("link/"+filepath.Base(host("escaped-link")), "evil"),
					{Name: "link/" + filepath.Base(host("escaped-linkdir")) + "/", Mode: 0o755, Type: tar.TypeDir},
				}
			},
			absent: []string{host("escaped-link"), host("escaped-linkdir")},
		},
		{
			name: "relative symlink climbing out then write through it",
			files: func(*testing.T) []layerFile {
				return []layerFile{
					{Name: "rel", Mode: 0o777, Type: tar.TypeSymlink, Linkname: "../../../../../../../../.." + hostTmp},
					reg("rel/"+filepath.Base(host("escaped-rel")), "evil"),
				}
			},
			absent: []string{host("escaped-rel")},
		},
		{
			name: "hard link to a host file",
			setup: func(t *testing.T) func(t *testing.T) {
				p := victim(t, "victim-hardlink")
				return func(t *testing.T) {
					var st syscall.Stat_t
					if err := syscall.Stat(p, &st); err != nil {
						t.Fatalf("victim %s: %v", p, err)
					}
					if st.Nlink != 1 {
						t.Errorf("host file %s has %d links: the layer linked to it", p, st.Nlink)
					}
				}
			},
			files: func(*testing.T) []layerFile {
				return []layerFile{{Name: "hl", Mode: 0o644, Type: tar.TypeLink, Linkname: "../../../../../../.." + host("victim-hardlink")}}
			},
		},
		{
			name: "whiteout of a host file",
			setup: func(t *testing.T) func(t *testing.T) {
				p := victim(t, "victim-whiteout")
				q := victim(t, "victim-whiteout-link")
				return func(t *testing.T) {
					for _, v := range []string{p, q} {
						if b, err := os.ReadFile(v); err != nil || string(b) != "safe" {
							t.Errorf("host file %s: %q, %v: the layer deleted or changed it", v, b, err)
						}
					}
				}
			},
			files: func(*testing.T) []layerFile {
				return []layerFile{
					reg("../../../../../../../tmp/.wh."+filepath.Base(host("victim-whiteout")), ""),
					{Name: "wl", Mode: 0o777, Type: tar.TypeSymlink, Linkname: hostTmp},
					reg("wl/.wh."+filepath.Base(host("victim-whiteout-link")), ""),
				}
			},
		},
		{
			name: "second layer writes through a symlink of the first",
			setup: func(t *testing.T) func(t *testing.T) {
				p := victim(t, "victim-second")
				return func(t *testing.T) {
					if b, err := os.ReadFile(p); err != nil || string(b) != "safe" {
						t.Errorf("host file %s: %q, %v: the layer deleted or changed it", p, b, err)
					}
				}
			},
			files: func(*testing.T) []layerFile {
				return []layerFile{
					{Name: "abs", Mode: 0o777, Type: tar.TypeSymlink, Linkname: hostTmp},
					{Name: "rel", Mode: 0o777, Type: tar.TypeSymlink, Linkname: "../../../../../../../.." + hostTmp},
				}
			},
			second: []layerFile{
				reg("abs/"+filepath.Base(host("escaped-second-abs")), "evil"),
				reg("rel/"+filepath.Base(host("escaped-second-rel")), "evil"),
				reg("abs/.wh."+filepath.Base(host("victim-second")), ""),
			},
			absent: []string{host("escaped-second-abs"), host("escaped-second-rel")},
		},
		{
			name: "device nodes",
			files: func(*testing.T) []layerFile {
				return []layerFile{
					{Name: "dev/", Mode: 0o755, Type: tar.TypeDir},
					{Name: "dev/evilnull", Mode: 0o666, Type: tar.TypeChar, Major: 1, Minor: 3},
					{Name: "dev/evilsda", Mode: 0o660, Type: tar.TypeBlock, Major: 8, Minor: 0},
					{Name: "dev/evilfifo", Mode: 0o644, Type: tar.TypeFifo},
				}
			},
		},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var check func(t *testing.T)
			if c.setup != nil {
				check = c.setup(t)
			}
			files := append(c.files(t), reg("marker", id))
			layer, err := buildLayer(files)
			if err != nil {
				t.Fatal(err)
			}
			name := repo + ":" + string(rune('a'+i))
			layers := [][]byte{layer}
			if c.second != nil {
				l2, err := buildLayer(c.second)
				if err != nil {
					t.Fatal(err)
				}
				layers = append(layers, l2)
			}
			ti := newTestImage(t, ocispec.ImageConfig{}, layers...)
			imgs, err := s.Import(testContext(t), bytes.NewReader(ti.layout(t, named(name))), ImportOptions{})
			for _, p := range c.absent {
				if _, serr := os.Lstat(p); serr == nil {
					os.RemoveAll(p)
					t.Errorf("ESCAPE: the layer wrote %s on the host", p)
				}
			}
			if check != nil {
				check(t)
			}
			if err != nil {
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("refused with err = %v, want ErrInvalid", err)
				}
				if listed(t, s, name) {
					t.Fatalf("refused image %s is listed", name)
				}
				t.Logf("REFUSED: %v", err)
				return
			}
			if len(imgs) != 1 || !imgs[0].Unpacked {
				t.Fatalf("imported %+v", imgs)
			}
			t.Logf("CONTAINED: unpacked root filesystem:\n  %s", strings.Join(snapshotTree(t, s, name), "\n  "))
		})
	}
}

// TestImportMalformed feeds broken archives: each gets a clear error of the
// right kind, no panic, and nothing of it is listed afterwards.
func TestImportMalformed(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	repo := uniqueRepo(t, s, "m")
	good := newTestImage(t, ocispec.ImageConfig{}, smallLayer(t, "malformed "+randHex(t)))
	name := repo + ":x"
	goodTar := good.layout(t, named(name))

	garbage := make([]byte, 8192)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	// without drops the blob of the given media type from the layout.
	without := func(mediaType string) []byte {
		ti := testImage{manifest: good.manifest}
		for _, b := range good.blobs {
			if b.desc.MediaType != mediaType {
				ti.blobs = append(ti.blobs, b)
			}
		}
		return ti.layout(t, named(name))
	}
	// withManifest returns a layout whose index points at desc.
	withManifest := func(desc ocispec.Descriptor, blobs []blob) []byte {
		ti := testImage{manifest: desc, blobs: blobs}
		return ti.layout(t, named(name))
	}
	wrongDigest := good.manifest
	wrongDigest.Digest = digest.FromString("not the manifest")
	wrongSize := good.manifest
	wrongSize.Size++
	// A layer whose bytes differ from what the manifest and config say.
	tamperedLayer := func() []byte {
		var blobs []blob
		for _, b := range good.blobs {
			if b.desc.MediaType == ocispec.MediaTypeImageLayer {
				evil := smallLayer(t, "tampered "+randHex(t))
				b = blob{desc: b.desc, data: evil}
			}
			blobs = append(blobs, b)
		}
		return withManifest(good.manifest, blobs)
	}
	// A config whose diff_ids do not match the layer: the layer's digest is
	// right, so only unpacking can tell.
	wrongDiffID := func() []byte {
		layer := smallLayer(t, "diffid "+randHex(t))
		lb := newBlob(ocispec.MediaTypeImageLayer, layer)
		cfg, _ := jsonBlob(ocispec.MediaTypeImageConfig, ocispec.Image{
			Platform: *good.manifest.Platform,
			RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromString("other")}},
		})
		m, _ := jsonBlob(ocispec.MediaTypeImageManifest, ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			Config: cfg.desc, Layers: []ocispec.Descriptor{lb.desc},
		})
		return withManifest(m.desc, []blob{lb, cfg, m})
	}
	otherPlatform := func() []byte {
		ti := newTestImage(t, ocispec.ImageConfig{}, smallLayer(t, "arch "+randHex(t)))
		p := ocispec.Platform{OS: "linux", Architecture: "s390x"}
		if ti.manifest.Platform.Architecture == "s390x" {
			p.Architecture = "riscv64"
		}
		ti.manifest.Platform = &p
		return ti.layout(t, named(name))
	}
	files := func(fs ...layerFile) []byte {
		p, err := buildLayer(fs)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	reg := func(name string, data []byte) layerFile {
		return layerFile{Name: name, Mode: 0o644, Type: tar.TypeReg, Data: data}
	}
	emptyIndex, _ := json.Marshal(ocispec.Index{Manifests: []ocispec.Descriptor{}})
	// A tar header that claims a 1 TiB file, and no data.
	var huge bytes.Buffer
	tw := tar.NewWriter(&huge)
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/x", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}

	// A docker-archive whose config is too big to read into memory.
	bigConfig := files(
		reg("manifest.json", []byte(`[{"Config":"c.json","RepoTags":["`+name+`"],"Layers":["l.tar"]}]`)),
		reg("c.json", append([]byte(`{"architecture":"amd64","os":"linux","x":"`), append(bytes.Repeat([]byte("a"), int(maxJSONSize)), '"', '}')...)),
		reg("l.tar", smallLayer(t, "big config")),
	)

	// An OCI image whose config is too big to read into memory.
	bigOCIConfig := func() []byte {
		lb := newBlob(ocispec.MediaTypeImageLayer, smallLayer(t, "big oci config"))
		cfg := newBlob(ocispec.MediaTypeImageConfig, append([]byte(`{"x":"`), append(bytes.Repeat([]byte("a"), int(maxJSONSize)), '"', '}')...))
		m, _ := jsonBlob(ocispec.MediaTypeImageManifest, ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			Config: cfg.desc, Layers: []ocispec.Descriptor{lb.desc},
		})
		return withManifest(m.desc, []blob{lb, cfg, m})
	}

	cases := []struct {
		name    string
		archive []byte
		kind    error
	}{
		{"oci config over the document cap", bigOCIConfig(), errdefs.ErrResourceExhausted},
		{"docker config over the document cap", bigConfig, errdefs.ErrResourceExhausted},
		{"empty", nil, errdefs.ErrInvalid},
		{"garbage", garbage, errdefs.ErrInvalid},
		{"truncated", goodTar[:len(goodTar)/2], errdefs.ErrInvalid},
		{"truncated in a header", goodTar[:700], errdefs.ErrInvalid},
		{"missing layer blob", without(ocispec.MediaTypeImageLayer), errdefs.ErrInvalid},
		{"missing config blob", without(ocispec.MediaTypeImageConfig), errdefs.ErrInvalid},
		{"missing manifest blob", without(ocispec.MediaTypeImageManifest), errdefs.ErrInvalid},
		{"manifest with wrong digest", withManifest(wrongDigest, good.blobs), errdefs.ErrInvalid},
		{"manifest with wrong size", withManifest(wrongSize, good.blobs), errdefs.ErrInvalid},
		{"layer not matching its digest", tamperedLayer(), errdefs.ErrInvalid},
		{"layer not matching its diff id", wrongDiffID(), errdefs.ErrInvalid},
		{"only another platform", otherPlatform(), errdefs.ErrInvalid},
		{"index.json not json", files(reg("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)), reg("index.json", []byte("{nope"))), errdefs.ErrInvalid},
		{"no index.json", files(reg("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))), errdefs.ErrInvalid},
		{"empty index", files(reg("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)), reg("index.json", emptyIndex)), errdefs.ErrInvalid},
		{"unknown layout version", files(reg("oci-layout", []byte(`{"imageLayoutVersion":"9"}`)), reg("index.json", emptyIndex)), errdefs.ErrInvalid},
		{"docker manifest missing layer", files(reg("manifest.json", []byte(`[{"Config":"c.json","RepoTags":["`+name+`"],"Layers":["nope/layer.tar"]}]`)),
			reg("c.json", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))), errdefs.ErrInvalid},
		{"docker manifest not json", files(reg("manifest.json", []byte(`[{`))), errdefs.ErrInvalid},
		{"claims a 1 TiB file", huge.Bytes(), errdefs.ErrResourceExhausted},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			imgs, err := s.Import(testContext(t), bytes.NewReader(c.archive), ImportOptions{Name: name})
			if !errors.Is(err, c.kind) {
				t.Fatalf("err = %v (images %+v), want %v", err, imgs, c.kind)
			}
			t.Logf("error: %v", err)
			if listed(t, s, name) {
				t.Fatalf("%s is listed after a failed import", name)
			}
		})
	}

	// A failed import does not move an existing name.
	imgs, err := s.Import(testContext(t), bytes.NewReader(goodTar), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(testContext(t), bytes.NewReader(wrongDiffID()), ImportOptions{}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bad import over a good name: err = %v", err)
	}
	if img, err := s.Get(testContext(t), name); err != nil || img.Digest != imgs[0].Digest || !img.Unpacked {
		t.Fatalf("after a failed import over it: %+v, %v; want digest %s", img, err, imgs[0].Digest)
	}

	// No partial ingest of this test is left in the content store.
	ctx := namespaces.WithNamespace(testContext(t), testNamespace)
	statuses, err := s.client.ContentStore().ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range statuses {
		if strings.HasPrefix(st.Ref, "cortex-import-") {
			t.Logf("ingest in progress (maybe of a parallel test): %s", st.Ref)
		}
	}
}

// TestImportSizeCaps refuses archives over the caps before storing them.
func TestImportSizeCaps(t *testing.T) {
	t.Parallel()
	repo := uniqueRepo(t, newTestStore(t), "cap")
	var bb bytes.Buffer
	if err := BuildBusybox(&bb, testBusybox, repo+":x"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		opt  Option
	}{
		{"blob cap", WithMaxBlobSize(1 << 20)},
		{"archive cap", WithMaxArchiveSize(64 << 10)},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTestStore(t, c.opt)
			_, err := s.Import(testContext(t), bytes.NewReader(bb.Bytes()), ImportOptions{})
			if !errors.Is(err, errdefs.ErrResourceExhausted) {
				t.Fatalf("err = %v, want ErrResourceExhausted", err)
			}
			t.Logf("error: %v", err)
			if listed(t, s, repo+":x") {
				t.Fatal("image over the cap is listed")
			}
		})
	}
}
