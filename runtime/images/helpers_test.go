package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/platforms"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

const (
	// testNamespace is the only containerd namespace these tests touch.
	testNamespace     = "cortex-test"
	containerdAddress = "/run/containerd/containerd.sock"
	testBusybox       = "/bin/busybox"
	// dialTimeout bounds connecting to containerd.
	dialTimeout = 5 * time.Second
	// testTimeout bounds one test's calls to containerd.
	testTimeout = 2 * time.Minute
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testWriter sends a logger's lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newTestClient connects to the containerd daemon, failing the test (not
// skipping it) when it is not there.
func newTestClient(t testing.TB) *containerd.Client {
	t.Helper()
	client, err := containerd.New(containerdAddress, containerd.WithTimeout(dialTimeout))
	if err != nil {
		t.Fatalf("containerd is not reachable at %s: %v\nrun `make deps` (it installs containerd and starts it)", containerdAddress, err)
	}
	t.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	if _, err := client.Version(ctx); err != nil {
		t.Fatalf("containerd at %s does not answer: %v\nrun `make deps` (it installs containerd and starts it)", containerdAddress, err)
	}
	return client
}

// newTestStore returns a store of the cortex-test namespace.
func newTestStore(t testing.TB, opts ...Option) *Store {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(newTestClient(t), testNamespace, logger, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func randHex(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

var nameUnsafe = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueName returns a repository name unique to this test and run,
// "cortex-test/<test>-<what>", and registers its removal (of name and of
// name:<any tag> given to tagged()) at the end of the test.
func uniqueRepo(t testing.TB, s *Store, what string) string {
	t.Helper()
	test := strings.Trim(nameUnsafe.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(test) > 60 {
		test = test[:60]
	}
	repo := fmt.Sprintf("cortex-test/%s-%s-%s", test, what, randHex(t))
	t.Cleanup(func() { removeRepo(t, s, repo) })
	return repo
}

// removeRepo removes every image whose name starts with repo (as given, or
// docker-normalized).
func removeRepo(t testing.TB, s *Store, repo string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	imgs, err := s.List(ctx)
	if err != nil {
		t.Errorf("cleanup: list: %v", err)
		return
	}
	for _, img := range imgs {
		n := strings.TrimPrefix(img.Name, "docker.io/")
		if strings.HasPrefix(n, repo+":") || strings.HasPrefix(n, repo+"@") || n == repo {
			if img.Name == "cortex/busybox:test" {
				t.Fatalf("cleanup would remove cortex/busybox:test")
			}
			if err := s.Remove(ctx, img.Name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("cleanup: remove %s: %v", img.Name, err)
			}
		}
	}
}

// listed tells whether List shows name.
func listed(t testing.TB, s *Store, name string) bool {
	t.Helper()
	imgs, err := s.List(testContext(t))
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, img := range imgs {
		if img.Name == name || img.Name == "docker.io/"+name {
			return true
		}
	}
	return false
}

// smallLayer is a layer of one file.
func smallLayer(t testing.TB, content string) []byte {
	t.Helper()
	l, err := buildLayer([]layerFile{
		{Name: "hello.txt", Mode: 0o644, Type: tar.TypeReg, Data: []byte(content)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage is an image being built for a test archive.
type testImage struct {
	manifest ocispec.Descriptor
	blobs    []blob
}

func newTestImage(t testing.TB, cfg ocispec.ImageConfig, layers ...[]byte) testImage {
	t.Helper()
	m, blobs, err := buildImage(platforms.DefaultSpec(), cfg, layers)
	if err != nil {
		t.Fatal(err)
	}
	return testImage{manifest: m, blobs: blobs}
}

// layout returns an OCI layout tarball of the image with the given index
// annotations.
func (ti testImage) layout(t testing.TB, annotations map[string]string) []byte {
	t.Helper()
	m := ti.manifest
	m.Annotations = annotations
	var buf bytes.Buffer
	if err := writeLayout(&buf, []ocispec.Descriptor{m}, ti.blobs); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func named(name string) map[string]string {
	return map[string]string{"io.containerd.image.name": name}
}

// runInImage runs args in a container of image name and returns its exit
// status and combined output.
func runInImage(t testing.TB, s *Store, name string, args ...string) (uint32, string) {
	t.Helper()
	ctx := namespaces.WithNamespace(testContext(t), testNamespace)
	img, err := s.Open(ctx, name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	id := "images-test-" + randHex(t)
	c, err := s.client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(s.Snapshotter()),
		containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)),
	)
	if err != nil {
		t.Fatalf("new container of %s: %v", name, err)
	}
	defer func() {
		if err := c.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container: %v", err)
		}
	}()
	var out syncBuffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &out, &out), cio.WithFIFODir(t.TempDir())))
	if err != nil {
		t.Fatalf("new task of %s: %v", name, err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task of %s: %v", name, err)
	}
	st := <-exited
	code, _, err := st.Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Errorf("delete task: %v", err)
	}
	return code, out.String()
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// snapshotTree mounts the unpacked root filesystem of image name read-only
// and returns one line per file: path, type and mode, device numbers,
// link target.
func snapshotTree(t testing.TB, s *Store, name string) []string {
	t.Helper()
	ctx := namespaces.WithNamespace(testContext(t), testNamespace)
	img, err := s.Open(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The view needs a lease, or a garbage collection run by a parallel
	// test removes it.
	ctx, release, err := s.withLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release(false)
	sn := s.client.SnapshotService(s.Snapshotter())
	key := "images-test-view-" + randHex(t)
	mounts, err := sn.View(ctx, key, identity.ChainID(diffIDs).String())
	if err != nil {
		t.Fatalf("view snapshot of %s: %v", name, err)
	}
	defer func() {
		if err := sn.Remove(context.WithoutCancel(ctx), key); err != nil {
			t.Errorf("remove view: %v", err)
		}
	}()
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatalf("mount snapshot: %v", err)
	}
	defer func() {
		if err := mount.UnmountAll(dir, 0); err != nil {
			t.Errorf("unmount snapshot: %v", err)
		}
	}()
	var lines []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			// overlayfs lists the whiteouts of a directory that only the
			// upper layer has, and hides them from lookups.
			lines = append(lines, rel+" (listed but not there: an overlay whiteout)")
			return nil
		}
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %v", rel, info.Mode())
		if st, ok := info.Sys().(*syscall.Stat_t); ok && info.Mode()&(fs.ModeDevice|fs.ModeCharDevice) != 0 {
			line += fmt.Sprintf(" dev=%d:%d", (st.Rdev>>8)&0xfff, (st.Rdev&0xff)|((st.Rdev>>12)&0xfff00))
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			line += " -> " + target
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatalf("walk snapshot: %v", err)
	}
	sort.Strings(lines)
	return lines
}
