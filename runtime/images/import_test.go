package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func TestBuildBusyboxReproducible(t *testing.T) {
	t.Parallel()
	var a, b bytes.Buffer
	if err := BuildBusybox(&a, testBusybox, "cortex/busybox:test"); err != nil {
		t.Fatal(err)
	}
	if err := BuildBusybox(&b, testBusybox, "cortex/busybox:test"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two builds of the same binary and name differ")
	}

	// The index names the image, the layer has the promised files.
	files := untar(t, a.Bytes())
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Annotations["io.containerd.image.name"] != "cortex/busybox:test" ||
		idx.Manifests[0].Annotations[ocispec.AnnotationRefName] != "test" {
		t.Fatalf("index manifests = %+v", idx.Manifests)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(files["blobs/sha256/"+idx.Manifests[0].Digest.Encoded()], &m); err != nil {
		t.Fatal(err)
	}
	layer := untar(t, files["blobs/sha256/"+m.Layers[0].Digest.Encoded()])
	for _, want := range []string{"bin/busybox", "bin/sh", "bin/echo", "etc/passwd", "tmp/", "workspace/", "proc/", "dev/", "sys/"} {
		if _, ok := layer[want]; !ok {
			t.Errorf("layer lacks %s", want)
		}
	}
	if !strings.Contains(string(layer["etc/passwd"]), "nobody:x:65534:65534:") {
		t.Errorf("passwd = %q", layer["etc/passwd"])
	}

	if err := BuildBusybox(&a, testBusybox, "Not A Name"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("bad name: err = %v, want ErrInvalid", err)
	}
	if err := BuildBusybox(&a, filepath.Join(t.TempDir(), "nothing"), "x:y"); err == nil {
		t.Error("missing busybox: no error")
	}
}

// untar returns the files of a tarball by name (directories with empty
// content).
func untar(t testing.TB, p []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(p))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(tr); err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = buf.Bytes()
	}
	return out
}

// TestImportBusyboxRuns imports BuildBusybox's output, named by its
// annotation, and runs a command in it.
func TestImportBusyboxRuns(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	name := uniqueRepo(t, s, "bb") + ":v1"
	var buf bytes.Buffer
	if err := BuildBusybox(&buf, testBusybox, name); err != nil {
		t.Fatal(err)
	}
	imgs, err := s.Import(testContext(t), &buf, ImportOptions{Name: "cortex-test/not-used:x"})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Name != name {
		t.Fatalf("imported %+v, want one image %s", imgs, name)
	}
	img := imgs[0]
	host := platforms.Format(platforms.DefaultSpec())
	if !img.Unpacked || img.Size < 1<<20 || len(img.Platforms) != 1 || img.Platforms[0] != host ||
		img.MediaType != ocispec.MediaTypeImageManifest || !strings.HasPrefix(img.Digest, "sha256:") || img.Created.IsZero() {
		t.Errorf("image = %+v", img)
	}
	got, err := s.Get(testContext(t), name)
	if err != nil || got.Digest != img.Digest {
		t.Fatalf("get = %+v, %v", got, err)
	}
	code, out := runInImage(t, s, name, "echo", "hi")
	if code != 0 || out != "hi\n" {
		t.Fatalf("echo hi: exit %d, output %q", code, out)
	}
	code, out = runInImage(t, s, name, "sh", "-c", "echo $PATH; test -d /workspace && test -k /tmp && grep -c . /etc/passwd")
	if code != 0 || out != "/bin\n2\n" {
		t.Fatalf("sh: exit %d, output %q", code, out)
	}
}

// TestImportWithCtr checks that `ctr images import` and `ctr run` (what
// `make deps` uses) take BuildBusybox's output.
func TestImportWithCtr(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		t.Fatalf("ctr not found: %v; run `make deps`", err)
	}
	name := uniqueRepo(t, s, "ctr") + ":v1"
	file := filepath.Join(t.TempDir(), "busybox.tar")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := BuildBusybox(f, testBusybox, name); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	if out, err := exec.CommandContext(ctx, ctr, "-n", testNamespace, "images", "import", file).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	img, err := s.Get(ctx, name)
	if err != nil || !img.Unpacked {
		t.Fatalf("after ctr import: %+v, %v", img, err)
	}
	out, err := exec.CommandContext(ctx, ctr, "-n", testNamespace, "run", "--rm", name, "images-test-"+randHex(t), "echo", "hi").CombinedOutput()
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("ctr run: %v, output %q", err, out)
	}
}

func TestImportNaming(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ti := newTestImage(t, ocispec.ImageConfig{Cmd: []string{"sh"}}, smallLayer(t, "naming "+randHex(t)))
	repo := uniqueRepo(t, s, "n")

	cases := []struct {
		name        string
		annotations map[string]string
		opts        ImportOptions
		want        string // "" for an error
	}{
		{"annotation wins", map[string]string{"io.containerd.image.name": repo + ":ann", ocispec.AnnotationRefName: "tag"},
			ImportOptions{BaseName: repo + "-other", Name: repo + ":unused"}, repo + ":ann"},
		{"tag with base name", map[string]string{ocispec.AnnotationRefName: "v1"}, ImportOptions{BaseName: repo}, repo + ":v1"},
		{"tag without base name falls back to name", map[string]string{ocispec.AnnotationRefName: "v2"}, ImportOptions{Name: repo + ":fallback"}, repo + ":fallback"},
		{"tag only, no base name, no name", map[string]string{ocispec.AnnotationRefName: "v3"}, ImportOptions{}, ""},
		{"full ref name", map[string]string{ocispec.AnnotationRefName: repo + ":full"}, ImportOptions{BaseName: "ignored/repo"}, repo + ":full"},
		{"unnamed with name", nil, ImportOptions{Name: repo + ":given"}, repo + ":given"},
		{"unnamed without name", nil, ImportOptions{}, ""},
		{"bad base name", map[string]string{ocispec.AnnotationRefName: "v4"}, ImportOptions{BaseName: repo + ":tag"}, ""},
		{"bad name", nil, ImportOptions{Name: "has space"}, ""},
		{"bad annotated name", named("has\nnewline"), ImportOptions{}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			imgs, err := s.Import(testContext(t), bytes.NewReader(ti.layout(t, c.annotations)), c.opts)
			if c.want == "" {
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("err = %v (images %+v), want ErrInvalid", err, imgs)
				}
				t.Logf("refused: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs) != 1 || imgs[0].Name != c.want || !imgs[0].Unpacked {
				t.Fatalf("imported %+v, want %s", imgs, c.want)
			}
		})
	}
}

// TestImportDockerArchive imports `docker save` tarballs, plain and
// gzipped, named by RepoTags.
func TestImportDockerArchive(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	repo := uniqueRepo(t, s, "docker")
	layer, err := busyboxLayer(testBusybox)
	if err != nil {
		t.Fatal(err)
	}
	ti := newTestImage(t, busyboxConfig(), layer)
	var config []byte
	for _, b := range ti.blobs {
		if b.desc.MediaType == ocispec.MediaTypeImageConfig {
			config = b.data
		}
	}
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   "cfg.json",
		"RepoTags": []string{repo + ":v1", repo + ":v2"},
		"Layers":   []string{"abc/layer.tar"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	archive, err := buildLayer([]layerFile{
		{Name: "manifest.json", Mode: 0o644, Type: tar.TypeReg, Data: manifest},
		{Name: "cfg.json", Mode: 0o644, Type: tar.TypeReg, Data: config},
		{Name: "abc/", Mode: 0o755, Type: tar.TypeDir},
		{Name: "abc/layer.tar", Mode: 0o644, Type: tar.TypeReg, Data: layer},
		{Name: "abc/VERSION", Mode: 0o644, Type: tar.TypeReg, Data: []byte("1.0")},
	})
	if err != nil {
		t.Fatal(err)
	}

	imgs, err := s.Import(testContext(t), bytes.NewReader(archive), ImportOptions{})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	// RepoTags are normalized the docker way, as ctr does.
	if len(imgs) != 2 || imgs[0].Name != "docker.io/"+repo+":v1" || imgs[1].Name != "docker.io/"+repo+":v2" || !imgs[0].Unpacked {
		t.Fatalf("imported %+v", imgs)
	}
	// Get finds them by the familiar name too.
	if img, err := s.Get(testContext(t), repo+":v1"); err != nil || img.Name != "docker.io/"+repo+":v1" {
		t.Fatalf("get familiar name: %+v, %v", img, err)
	}
	if code, out := runInImage(t, s, repo+":v2", "echo", "hi"); code != 0 || out != "hi\n" {
		t.Fatalf("echo hi: exit %d, output %q", code, out)
	}

	// The same, gzipped, with a different tag.
	manifest = bytes.Replace(manifest, []byte(`:v1"`), []byte(`:gz"`), 1)
	archive, err = buildLayer([]layerFile{
		{Name: "manifest.json", Mode: 0o644, Type: tar.TypeReg, Data: manifest},
		{Name: "cfg.json", Mode: 0o644, Type: tar.TypeReg, Data: config},
		{Name: "abc/layer.tar", Mode: 0o644, Type: tar.TypeReg, Data: layer},
	})
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(archive); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	imgs, err = s.Import(testContext(t), &gz, ImportOptions{})
	if err != nil {
		t.Fatalf("import gzipped: %v", err)
	}
	if len(imgs) != 2 || imgs[0].Name != "docker.io/"+repo+":gz" {
		t.Fatalf("imported gzipped %+v", imgs)
	}
}

func TestListRemove(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	repo := uniqueRepo(t, s, "lr")
	ti := newTestImage(t, ocispec.ImageConfig{}, smallLayer(t, "list "+randHex(t)))
	for _, tag := range []string{"a", "b"} {
		if _, err := s.Import(testContext(t), bytes.NewReader(ti.layout(t, named(repo+":"+tag))), ImportOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	imgs, err := s.List(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]Image{}
	for _, img := range imgs {
		found[img.Name] = img
	}
	a, b := found[repo+":a"], found[repo+":b"]
	if a.Name == "" || b.Name == "" || a.Digest != b.Digest || !a.Unpacked || a.Size == 0 || len(a.Platforms) != 1 {
		t.Fatalf("list: a=%+v b=%+v", a, b)
	}
	if _, ok := found["cortex/busybox:test"]; !ok {
		t.Log("note: cortex/busybox:test is not imported in cortex-test (run `make deps`)")
	}

	ctx := testContext(t)
	if err := s.Remove(ctx, repo+":a"); err != nil {
		t.Fatal(err)
	}
	if listed(t, s, repo+":a") || !listed(t, s, repo+":b") {
		t.Fatal("after remove of a: a listed or b gone")
	}
	if err := s.Remove(ctx, repo+":a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second remove: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, repo+":a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get removed: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Open(ctx, repo+":a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("open removed: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, ""); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("get empty name: err = %v, want ErrInvalid", err)
	}
	// b still runs from the content it shared with a.
	if img, err := s.Get(ctx, repo+":b"); err != nil || !img.Unpacked {
		t.Fatalf("b after removing a: %+v, %v", img, err)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	client := newTestClient(t)
	if _, err := New(nil, testNamespace, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("nil client: %v", err)
	}
	if _, err := New(client, "bad namespace!", nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("bad namespace: %v", err)
	}
	if _, err := New(client, testNamespace, nil, WithMaxBlobSize(0)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("zero cap: %v", err)
	}
	s, err := New(client, testNamespace, nil, WithSnapshotter("native"))
	if err != nil || s.Snapshotter() != "native" || s.Namespace() != testNamespace {
		t.Errorf("snapshotter option: %v", err)
	}
}
