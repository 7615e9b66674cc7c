package runtime

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The containerd namespace and image every test uses (`make deps` imports
// the image there).
const (
	testNamespace = "cortex-test"
	testImage     = "cortex/busybox:test"
	needDeps      = "run `make deps` (it starts containerd and imports " + testImage + " into namespace " + testNamespace + ")"
)

// testTimeout bounds one test's waiting on containerd.
const testTimeout = 60 * time.Second

var nameJunk = regexp.MustCompile(`[^A-Za-z0-9]+`)

// testOwner is an owner label unique to one test, so that tests in parallel
// (and packages in parallel) never see each other's containers.
func testOwner(t testing.TB) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := strings.Trim(nameJunk.ReplaceAllString(t.Name(), "-"), "-")
	if len(name) > 24 {
		name = name[:24]
	}
	return strings.ToLower(name) + "-" + hex.EncodeToString(b[:])
}

// testExec is an executor for one test, with helpers.
type testExec struct {
	*Containerd
	t     testing.TB
	owner string
	n     atomic.Int64
}

// newTestExec connects to containerd in the test namespace. A missing
// containerd or test image fails the test (never skips it).
func newTestExec(t testing.TB, edit ...func(*Config)) *testExec {
	t.Helper()
	owner := testOwner(t)
	cfg := DefaultConfig()
	cfg.Namespace = testNamespace
	cfg.Owner = owner
	cfg.StateDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", "runtime", "test", t.Name())
	for _, f := range edit {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	e, err := NewContainerd(ctx, cfg)
	if err != nil {
		t.Fatalf("containerd: %v\n%s", err, needDeps)
	}
	te := &testExec{Containerd: e, t: t, owner: owner}
	if _, err := e.client.GetImage(namespaces.WithNamespace(ctx, testNamespace), testImage); err != nil {
		e.Close()
		t.Fatalf("test image %s: %v\n%s", testImage, err, needDeps)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close executor: %v", err)
		}
		te.assertNothingLeft()
	})
	return te
}

// id returns a fresh task id for this test.
func (te *testExec) id() string {
	return fmt.Sprintf("%s-%d", te.owner, te.n.Add(1))
}

// spec is a spec for this test running sh -c script.
func (te *testExec) spec(script string) Spec {
	return Spec{ID: te.id(), Image: testImage, Command: []string{"sh", "-c", script}, Timeout: testTimeout}
}

// ran is everything a task produced.
type ran struct {
	Stdout, Stderr string
	Chunks         []Chunk
	Result         Result
	Err            error
	FirstChunk     time.Time // when the first chunk was received
	Ended          time.Time // when Output was closed
}

// run starts spec, drains its output and waits for it.
func (te *testExec) run(t testing.TB, spec Spec) ran {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout+30*time.Second)
	defer cancel()
	task, err := te.Start(ctx, spec)
	if err != nil {
		return ran{Err: err}
	}
	return collect(ctx, t, task)
}

// collect drains a task's output and waits for it.
func collect(ctx context.Context, t testing.TB, task Task) ran {
	t.Helper()
	var r ran
	var out, errb strings.Builder
	seq := map[Stream]uint64{}
	for c := range task.Output() {
		if r.FirstChunk.IsZero() {
			r.FirstChunk = time.Now()
		}
		seq[c.Stream]++
		if c.Seq != seq[c.Stream] {
			t.Errorf("%s chunk seq %d, want %d", c.Stream, c.Seq, seq[c.Stream])
		}
		if c.Time.IsZero() {
			t.Errorf("%s chunk %d has no time", c.Stream, c.Seq)
		}
		switch c.Stream {
		case Stdout:
			out.Write(c.Data)
		case Stderr:
			errb.Write(c.Data)
		default:
			t.Errorf("chunk of unknown stream %d", c.Stream)
		}
		r.Chunks = append(r.Chunks, c)
	}
	r.Ended = time.Now()
	r.Stdout, r.Stderr = out.String(), errb.String()
	r.Result, r.Err = task.Wait(ctx)
	return r
}

// mustRun is run that fails the test on a start or wait error.
func (te *testExec) mustRun(t testing.TB, spec Spec) ran {
	t.Helper()
	r := te.run(t, spec)
	if r.Err != nil {
		t.Fatalf("task %s: %v", spec.ID, r.Err)
	}
	return r
}

// assertNothingLeft checks that no container, snapshot or mount of this
// test's owner remains.
func (te *testExec) assertNothingLeft() {
	t := te.t
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), testNamespace), testTimeout)
	defer cancel()
	client, err := newRawClient()
	if err != nil {
		t.Errorf("check leftovers: %v", err)
		return
	}
	defer client.Close()
	filter := fmt.Sprintf("labels.%q==%q", labelOwner, te.owner)
	ctrs, err := client.Containers(ctx, filter)
	if err != nil {
		t.Errorf("list containers: %v", err)
	}
	for _, c := range ctrs {
		t.Errorf("container %s left behind", c.ID())
	}
	err = client.SnapshotService(DefaultSnapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		t.Errorf("snapshot %s left behind", info.Name)
		return nil
	}, filter)
	if err != nil {
		t.Errorf("list snapshots: %v", err)
	}
	// Snapshots are named after their task, whose id starts with the owner.
	err = client.SnapshotService(DefaultSnapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, te.owner) {
			t.Errorf("snapshot %s left behind", info.Name)
		}
		return nil
	})
	if err != nil {
		t.Errorf("list snapshots: %v", err)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("mountinfo: %v", err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), te.owner) {
			t.Errorf("mount left behind: %s", sc.Text())
		}
	}
}

// isKind reports whether err is of the errdefs kind, and says so if not.
func wantKind(t testing.TB, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error %v: want kind %v", err, kind)
	}
}

// newRawClient is a plain containerd client, for checks behind the
// executor's back.
func newRawClient() (*containerd.Client, error) {
	c, err := containerd.New(DefaultAddress, containerd.WithDefaultNamespace(testNamespace), containerd.WithTimeout(dialTimeout))
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, needDeps)
	}
	return c, nil
}

// statUID is the owner of a file.
func statUID(fi os.FileInfo) uint32 {
	return fi.Sys().(*syscall.Stat_t).Uid
}
