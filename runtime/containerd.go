package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/identifiers"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Defaults of Config.
const (
	DefaultAddress      = "/run/containerd/containerd.sock"
	DefaultNamespace    = "cortex"
	DefaultSnapshotter  = "overlayfs"
	DefaultOutputBuffer = 64 // chunks of at most 32 KiB each, per task
)

// Container labels the executor sets. A spec cannot set labels under
// labelPrefix (Policy.Apply refuses them).
const (
	labelOwner     = labelPrefix + "owner"
	labelTask      = labelPrefix + "task"
	labelIsolation = labelPrefix + "isolation"
)

// runcShim is the shim that runs both tiers: runc itself, or runsc through a
// wrapper given as the shim's runtime binary.
const runcShim = "io.containerd.runc.v2"

// Timeouts of the executor's own operations.
const (
	dialTimeout      = 5 * time.Second  // reaching containerd
	removeTimeout    = 30 * time.Second // killing and removing one task's container
	createTimeout    = 60 * time.Second // creating one task's snapshot, container and task
	metricsTimeout   = 5 * time.Second  // reading a finished task's cgroup
	killWaitTimeout  = 10 * time.Second // a killed task's exit, when removing it
	killResend       = 5 * time.Second  // SIGKILL again while a killed task has not exited
	closeDrainGrace  = 5 * time.Second  // Close lets readers drain this long before output is dropped
	removeRetries    = 5                // attempts at deleting a task that refuses to go
	removeRetryDelay = 100 * time.Millisecond
)

// Where the host's cgroup files are, to tell whether swap can be pinned to 0.
const (
	cgroupV1MemSwap  = "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"
	cgroupV2Controls = "/sys/fs/cgroup/cgroup.controllers"
)

// validOwner is what an Owner may look like, as it goes into label
// filters: 1 to 128 of [A-Za-z0-9._-], starting with a letter or digit. A
// loop rather than a regexp: compiling `{0,127}` at start cost every
// command of the binary a millisecond and 1,700 allocations.
func validOwner(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// Config configures a containerd executor.
type Config struct {
	// Address is containerd's socket.
	Address string
	// Namespace is the containerd namespace the executor's containers,
	// snapshots and images live in.
	Namespace string
	// Owner identifies this peer among those sharing one containerd: its
	// containers are labelled with it and Cleanup removes only those.
	// Letters, digits, '.', '_' and '-', at most 128 bytes.
	Owner string
	// StateDir is a directory the executor owns (it writes the gVisor
	// runtime wrappers there).
	StateDir string
	// Snapshotter makes the tasks' root filesystems.
	Snapshotter string
	// RunscPath is gVisor's runsc; empty means "runsc" looked up in PATH.
	// Without it, gVisor tasks are refused as unavailable.
	RunscPath string
	// OutputBuffer is how many output chunks a task may have in flight
	// before its writes block until the reader catches up.
	OutputBuffer int
	// Policy caps and completes every spec. The zero Policy means
	// DefaultPolicy().
	Policy Policy
	// Logger receives the executor's logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig is a Config with every default filled in but Owner and
// StateDir, which only the peer can choose.
func DefaultConfig() Config {
	return Config{
		Address:      DefaultAddress,
		Namespace:    DefaultNamespace,
		Snapshotter:  DefaultSnapshotter,
		OutputBuffer: DefaultOutputBuffer,
		Policy:       DefaultPolicy(),
	}
}

// withDefaults fills the zero fields of c.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Address == "" {
		c.Address = d.Address
	}
	if c.Namespace == "" {
		c.Namespace = d.Namespace
	}
	if c.Snapshotter == "" {
		c.Snapshotter = d.Snapshotter
	}
	if c.OutputBuffer == 0 {
		c.OutputBuffer = d.OutputBuffer
	}
	if c.Policy == (Policy{}) {
		c.Policy = d.Policy
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports what is wrong with c (after defaults are filled in).
func (c Config) Validate() error {
	var errs []error
	if !validOwner(c.Owner) {
		errs = append(errs, fmt.Errorf("runtime config: owner %q: want 1-128 letters, digits, '.', '_' or '-': %w", c.Owner, errdefs.ErrInvalid))
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("runtime config: state_dir %q must be an absolute path: %w", c.StateDir, errdefs.ErrInvalid))
	}
	if c.Namespace != "" && identifiers.Validate(c.Namespace) != nil {
		errs = append(errs, fmt.Errorf("runtime config: namespace %q is not a valid containerd namespace: %w", c.Namespace, errdefs.ErrInvalid))
	}
	if c.OutputBuffer < 0 {
		errs = append(errs, fmt.Errorf("runtime config: output_buffer %d is negative: %w", c.OutputBuffer, errdefs.ErrInvalid))
	}
	if err := c.Policy.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("runtime config: %w", err))
	}
	return errors.Join(errs...)
}

// Containerd runs tasks in containerd containers, under runc or gVisor.
// It is safe for concurrent use.
type Containerd struct {
	cfg    Config
	log    *slog.Logger
	client *containerd.Client
	bg     context.Context // namespaced, never cancelled: the tasks' own operations

	runscNone, runscHost string // gVisor wrappers; empty when runsc is missing
	pinSwap              bool   // the host can limit memory+swap

	closing chan struct{} // closed when Close starts: running tasks are killed
	discard chan struct{} // closed when Close gives up on readers: output is dropped

	mu     sync.Mutex
	closed bool
	tasks  map[string]*ctrTask // started or starting, until removed
	wg     sync.WaitGroup      // one per task from reserve until its run goroutine (or failed start) ends

	imgMu  sync.Mutex
	images map[string]imageInfo // by image target digest

	closeOnce sync.Once
	closeErr  error
}

var _ Executor = (*Containerd)(nil)

// maxImageCache bounds the image cache; when full it starts over.
const maxImageCache = 256

// imageInfo is what the executor needs from an image, cached by digest.
type imageInfo struct {
	chainID string // the snapshot the image unpacks to
	config  ocispec.ImageConfig
}

// NewContainerd connects to containerd and returns an executor. ctx bounds
// the connection attempt. A containerd that cannot be reached is reported
// as errdefs.ErrUnavailable.
func NewContainerd(ctx context.Context, cfg Config) (*Containerd, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	unreachable := func(err error) error {
		return fmt.Errorf("containerd at %s is not reachable (is it running? `make deps` installs and starts it): %w: %w", cfg.Address, err, errdefs.ErrUnavailable)
	}
	if _, err := os.Stat(cfg.Address); err != nil {
		return nil, unreachable(err)
	}
	timeout := dialTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	client, err := containerd.New(cfg.Address, containerd.WithDefaultNamespace(cfg.Namespace), containerd.WithTimeout(timeout))
	if err != nil {
		return nil, unreachable(err)
	}
	nsCtx := namespaces.WithNamespace(ctx, cfg.Namespace)
	if _, err := client.Version(nsCtx); err != nil {
		client.Close()
		return nil, unreachable(err)
	}
	e := &Containerd{
		cfg:     cfg,
		log:     cfg.Logger,
		client:  client,
		bg:      namespaces.WithNamespace(context.Background(), cfg.Namespace),
		pinSwap: canPinSwap(),
		closing: make(chan struct{}),
		discard: make(chan struct{}),
		tasks:   make(map[string]*ctrTask),
		images:  make(map[string]imageInfo),
	}
	if !e.pinSwap {
		e.log.Info("swap accounting is off on this host: tasks' memory limits do not cover swap")
	}
	if err := e.setupGVisor(); err != nil {
		client.Close()
		return nil, err
	}
	return e, nil
}

// canPinSwap reports whether the cgroup memory+swap limit can be set (it
// cannot where the kernel does no swap accounting).
func canPinSwap() bool {
	if _, err := os.Stat(cgroupV1MemSwap); err == nil {
		return true
	}
	if _, err := os.Stat(cgroupV2Controls); err != nil {
		return false
	}
	// cgroup v2: runc turns memory+swap = memory into memory.swap.max = 0,
	// which exists only with swap accounting.
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			_, err := os.Stat(filepath.Join("/sys/fs/cgroup", p, "memory.swap.max"))
			return err == nil
		}
	}
	return false
}

// setupGVisor finds runsc and writes the wrappers that the runc shim runs
// in place of runc: the shim takes a binary path only, and runsc needs
// --network=none to run in a network namespace it does not set up itself.
func (e *Containerd) setupGVisor() error {
	runsc := e.cfg.RunscPath
	if runsc == "" {
		p, err := exec.LookPath("runsc")
		if err != nil {
			e.log.Info("runsc not found: gVisor isolation unavailable (`make deps` installs it)")
			return nil
		}
		runsc = p
	}
	abs, err := filepath.Abs(runsc)
	if err != nil {
		return fmt.Errorf("runsc path %s: %w", runsc, err)
	}
	if fi, err := os.Stat(abs); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		e.log.Warn("runsc is not an executable file: gVisor isolation unavailable", "path", abs)
		return nil
	}
	if err := os.MkdirAll(e.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	write := func(name, network string) (string, error) {
		p := filepath.Join(e.cfg.StateDir, name)
		script := "#!/bin/sh\nexec " + shellQuote(abs) + " --network=" + network + " \"$@\"\n"
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
			return "", fmt.Errorf("write gVisor wrapper: %w", err)
		}
		if err := os.Chmod(tmp, 0o755); err != nil {
			return "", fmt.Errorf("write gVisor wrapper: %w", err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return "", fmt.Errorf("write gVisor wrapper: %w", err)
		}
		return p, nil
	}
	if e.runscNone, err = write("runsc-net-none", "none"); err != nil {
		return err
	}
	if e.runscHost, err = write("runsc-net-host", "host"); err != nil {
		return err
	}
	return nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Running is the number of tasks started (or starting) and not yet removed.
func (e *Containerd) Running() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.tasks)
}

// Close kills the tasks still running (their Wait reports Cancelled), lets
// their readers drain for a short grace, waits until their containers are
// removed and releases the connection. New tasks are refused from the
// moment it is called. Safe to call twice.
func (e *Containerd) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		n := len(e.tasks)
		e.mu.Unlock()
		if n > 0 {
			e.log.Warn("closing the executor: killing the tasks still running", "tasks", n)
		}
		close(e.closing)
		done := make(chan struct{})
		go func() { // owned here: ends when the tasks have, which is waited for below
			e.wg.Wait()
			close(done)
		}()
		grace := time.NewTimer(closeDrainGrace)
		select {
		case <-done:
		case <-grace.C:
			e.log.Warn("task output not drained by its reader: dropping it to finish closing")
			close(e.discard)
			<-done
		}
		grace.Stop()
		e.closeErr = e.client.Close()
	})
	return e.closeErr
}

// Start implements Executor.
func (e *Containerd) Start(ctx context.Context, spec Spec) (Task, error) {
	spec, err := e.cfg.Policy.Apply(spec)
	if err != nil {
		return nil, err
	}
	return e.startApplied(ctx, spec)
}

// startApplied starts a spec that Policy.Apply has completed and checked.
func (e *Containerd) startApplied(ctx context.Context, spec Spec) (Task, error) {
	if spec.Isolation == IsolationGVisor && e.runscNone == "" {
		return nil, fmt.Errorf("task %s: gVisor isolation asked for but runsc is not installed (`make deps` installs it): %w", spec.ID, errdefs.ErrUnavailable)
	}
	t, err := e.reserve(spec)
	if err != nil {
		return nil, err
	}
	if err := e.start(ctx, t); err != nil {
		e.release(t)
		return nil, fmt.Errorf("start task %s: %w", spec.ID, err)
	}
	return t, nil
}

// reserve records a task about to start, so that Close waits for it and
// Cleanup leaves it alone.
func (e *Containerd) reserve(spec Spec) (*ctrTask, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("start task %s: the executor is closed: %w", spec.ID, errdefs.ErrUnavailable)
	}
	if _, dup := e.tasks[spec.ID]; dup {
		return nil, fmt.Errorf("start task %s: a task with this id is running: %w", spec.ID, errdefs.ErrAlreadyExists)
	}
	t := newTask(e, spec)
	e.tasks[spec.ID] = t
	e.wg.Add(1)
	return t, nil
}

// release undoes reserve for a task that did not start.
func (e *Containerd) release(t *ctrTask) {
	e.forget(t)
	e.wg.Done()
}

// forget drops a task that is gone from the running set.
func (e *Containerd) forget(t *ctrTask) {
	e.mu.Lock()
	delete(e.tasks, t.spec.ID)
	e.mu.Unlock()
}

// start creates the container and its task and starts it; on failure it
// removes whatever it made.
//
// The calls that create something on the server run under a context of
// their own (bounded by createTimeout), not the caller's: a call cut short
// by the caller may still complete on the server after its client gave up,
// and then nothing would know to remove what it made. The caller's ctx is
// checked between the steps instead.
func (e *Containerd) start(callerCtx context.Context, t *ctrTask) (err error) {
	spec := t.spec
	callerCtx = namespaces.WithNamespace(callerCtx, e.cfg.Namespace)
	img, name, err := e.image(callerCtx, spec.Image)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(callerCtx), createTimeout)
	defer cancel()
	cancelled := func(step string) error {
		if err := callerCtx.Err(); err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		return nil
	}
	if spec.WorkspaceDir != "" && !spec.WorkspaceOwned {
		if err := chownTree(ctx, spec.WorkspaceDir, *spec.UID, *spec.GID); err != nil {
			return err
		}
	}

	labels := maps.Clone(spec.Labels)
	if labels == nil {
		labels = make(map[string]string, 3)
	}
	labels[labelOwner] = e.cfg.Owner
	labels[labelTask] = spec.ID
	labels[labelIsolation] = string(spec.Isolation)

	var runtimeOpts any
	if spec.Isolation == IsolationGVisor {
		bin := e.runscNone
		if spec.Network == NetworkHost {
			bin = e.runscHost
		}
		runtimeOpts = &runcoptions.Options{BinaryName: bin}
	}
	prof := profile{spec: spec, image: img.config, setSwap: e.pinSwap, hostname: shortHostname(spec.ID)}

	withSnapshot := func(ctx context.Context, client *containerd.Client, c *containers.Container) error {
		snapLabels := map[string]string{labelOwner: e.cfg.Owner, labelTask: spec.ID}
		if _, err := client.SnapshotService(e.cfg.Snapshotter).Prepare(ctx, spec.ID, img.chainID, snapshots.WithLabels(snapLabels)); err != nil {
			return fmt.Errorf("prepare root filesystem: %w", err)
		}
		c.Snapshotter, c.SnapshotKey, c.Image = e.cfg.Snapshotter, spec.ID, name
		return nil
	}
	if err := cancelled("create container"); err != nil {
		return err
	}
	container, err := e.client.NewContainer(ctx, spec.ID,
		containerd.WithContainerLabels(labels),
		withSnapshot,
		containerd.WithRuntime(runcShim, runtimeOpts),
		containerd.WithNewSpec(prof.specOpts()...),
	)
	if err != nil {
		if !cerrdefs.IsAlreadyExists(err) {
			// The snapshot may have been made before the container failed.
			e.scrub(spec.ID)
		}
		if cerrdefs.IsNotFound(err) {
			e.forgetImage(img) // its snapshot may be gone: look again next time
		}
		return classify("create container", err)
	}
	defer func() {
		if err != nil {
			rctx, cancel := e.removeContext()
			defer cancel()
			if rerr := e.removeContainer(rctx, container, nil); rerr != nil {
				e.log.Warn("remove a container whose task did not start", "task", spec.ID, "err", rerr)
			}
		}
	}()

	if err := cancelled("create task"); err != nil {
		return err
	}
	t.disk = newDiskWatch(spec) // measured before the task can write
	task, err := container.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, t.stdout, t.stderr)))
	if err != nil {
		e.log.Debug("create task", "task", spec.ID, "err", err)
		return classifyExec("create task", err)
	}
	if err := cancelled("start process"); err != nil {
		e.abortTask(task)
		return err
	}
	// The exit is watched from a context of the task's own: the caller's
	// ctx bounds the start only.
	waitCtx, stopWait := context.WithCancel(e.bg)
	exitCh, err := task.Wait(waitCtx)
	if err != nil {
		stopWait()
		e.abortTask(task)
		return classify("watch task", err)
	}
	t.startedAt = time.Now()
	if err := task.Start(ctx); err != nil {
		stopWait()
		e.abortTask(task)
		e.log.Debug("start process", "task", spec.ID, "err", err)
		return classifyExec("start process", err)
	}
	e.log.Debug("task started", "task", spec.ID, "isolation", spec.Isolation, "pid", task.Pid(), "image", name)
	go t.run(task, container, exitCh, stopWait) // owned by e.wg (reserve) and ended by Close
	return nil
}

// scrub removes the container and the snapshot named id if they carry this
// executor's owner label: what a start cut short (its ctx ended while a call
// was on its way) may have left on the server.
func (e *Containerd) scrub(id string) {
	ctx, cancel := e.removeContext()
	defer cancel()
	if c, err := e.client.LoadContainer(ctx, id); err == nil {
		if labels, err := c.Labels(ctx); err == nil && labels[labelOwner] == e.cfg.Owner {
			if err := e.removeContainer(ctx, c, nil); err != nil {
				e.log.Warn("remove the container of a failed start", "task", id, "err", err)
			}
		}
	}
	sn := e.client.SnapshotService(e.cfg.Snapshotter)
	if info, err := sn.Stat(ctx, id); err == nil && info.Labels[labelOwner] == e.cfg.Owner {
		if err := sn.Remove(ctx, id); err != nil && !cerrdefs.IsNotFound(err) {
			e.log.Warn("remove the snapshot of a failed start", "task", id, "err", err)
		}
	}
}

// abortTask removes a task that was created but is not going to be watched;
// the caller removes its container.
func (e *Containerd) abortTask(task containerd.Task) {
	ctx, cancel := e.removeContext()
	defer cancel()
	if err := e.removeTask(ctx, task); err != nil {
		e.log.Warn("remove a task that failed to start", "task", task.ID(), "err", err)
	}
}

func (e *Containerd) removeContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.bg, removeTimeout)
}

// removeTask kills and deletes a task in whatever state it is. A task is
// deleted only once stopped: one that runs, or was created but never started
// (a failed runsc start leaves one), is killed and waited for first. (Not
// containerd.WithProcessKill: it kills even a stopped task, which runsc
// answers with an error that fails the delete.)
func (e *Containerd) removeTask(ctx context.Context, task containerd.Task) error {
	var err error
	for attempt := range removeRetries {
		st, serr := task.Status(ctx)
		if cerrdefs.IsNotFound(serr) {
			return nil
		}
		if serr != nil || st.Status != containerd.Stopped {
			e.killAndWait(ctx, task)
		}
		_, err = task.Delete(ctx)
		if err == nil || cerrdefs.IsNotFound(err) {
			return nil
		}
		delay := time.NewTimer(removeRetryDelay * time.Duration(attempt+1))
		select {
		case <-ctx.Done():
			delay.Stop()
			return fmt.Errorf("delete task %s: %w (then %w)", task.ID(), err, ctx.Err())
		case <-delay.C:
		}
	}
	return fmt.Errorf("delete task %s: %w", task.ID(), err)
}

// killAndWait sends SIGKILL to every process of a task and waits (a bounded
// while) for its exit.
func (e *Containerd) killAndWait(ctx context.Context, task containerd.Task) {
	ctx, cancel := context.WithTimeout(ctx, killWaitTimeout)
	defer cancel()
	exited, err := task.Wait(ctx)
	if err != nil {
		e.log.Debug("watch a task to remove it", "task", task.ID(), "err", err)
	}
	if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil {
		if !cerrdefs.IsNotFound(err) && !cerrdefs.IsFailedPrecondition(err) {
			e.log.Debug("kill a task to remove it", "task", task.ID(), "err", err)
		}
		// It may be stopped already.
		if st, serr := task.Status(ctx); serr == nil && st.Status == containerd.Stopped {
			return
		}
	}
	if exited != nil {
		select {
		case <-exited:
		case <-ctx.Done():
		}
	}
}

// removeContainer removes a container, its task (if any: task may be nil
// to look it up) and its snapshot.
func (e *Containerd) removeContainer(ctx context.Context, c containerd.Container, task containerd.Task) error {
	if task == nil {
		t, err := c.Task(ctx, nil)
		switch {
		case err == nil:
			task = t
		case !cerrdefs.IsNotFound(err):
			return fmt.Errorf("load task of container %s: %w", c.ID(), err)
		}
	}
	if task != nil {
		if err := e.removeTask(ctx, task); err != nil {
			return err
		}
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", c.ID(), err)
	}
	return nil
}

// Leftover is a task a previous run of this peer left in containerd, as
// Cleanup found it before removing it.
type Leftover struct {
	TaskID string
	// Exited says the task ended by itself while nobody watched; ExitCode
	// is then its status. Otherwise it was still running (or never
	// started) and Cleanup killed it.
	Exited   bool
	ExitCode int
}

// Cleanup removes what a previous run of this peer left behind in the
// namespace: every container labelled with this executor's Owner (its task
// killed and deleted, its snapshot removed) and every snapshot so labelled
// that no container uses. Tasks this executor is running are left alone.
// It returns the tasks it found, so that their records can say how they
// ended rather than guess.
func (e *Containerd) Cleanup(ctx context.Context) ([]Leftover, error) {
	ctx = namespaces.WithNamespace(ctx, e.cfg.Namespace)
	filter := fmt.Sprintf("labels.%q==%q", labelOwner, e.cfg.Owner)
	ctrs, err := e.client.Containers(ctx, filter)
	if err != nil {
		return nil, classify("cleanup: list containers", err)
	}
	live := func(id string) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		_, ok := e.tasks[id]
		return ok
	}
	var found []Leftover
	var errs []error
	for _, c := range ctrs {
		if live(c.ID()) {
			continue
		}
		left := Leftover{TaskID: c.ID()}
		if labels, err := c.Labels(ctx); err == nil && labels[labelTask] != "" {
			left.TaskID = labels[labelTask]
		}
		if task, err := c.Task(ctx, nil); err == nil {
			if st, err := task.Status(ctx); err == nil && st.Status == containerd.Stopped {
				left.Exited, left.ExitCode = true, int(st.ExitStatus)
			}
		}
		if err := e.removeContainer(ctx, c, nil); err != nil {
			errs = append(errs, err)
			continue
		}
		found = append(found, left)
		e.log.Info("removed a leftover container", "container", c.ID(), "exited", left.Exited, "exit", left.ExitCode)
	}
	sn := e.client.SnapshotService(e.cfg.Snapshotter)
	var orphans []string
	err = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive && !live(info.Name) {
			orphans = append(orphans, info.Name)
		}
		return nil
	}, filter)
	if err != nil {
		errs = append(errs, fmt.Errorf("cleanup: list snapshots: %w", err))
	}
	for _, key := range orphans {
		if _, err := e.client.ContainerService().Get(ctx, key); err == nil {
			continue // a container of ours that is still there uses it
		}
		if err := sn.Remove(ctx, key); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("cleanup: remove snapshot %s: %w", key, err))
			continue
		}
		e.log.Info("removed a leftover snapshot", "snapshot", key)
	}
	if err := errors.Join(errs...); err != nil {
		return found, fmt.Errorf("cleanup: %w", err)
	}
	return found, nil
}

// image finds an image and what the executor needs of it, unpacking it for
// the snapshotter if needed. It returns the image's stored name.
func (e *Containerd) image(ctx context.Context, ref string) (imageInfo, string, error) {
	img, err := e.client.GetImage(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		if named, perr := reference.ParseDockerRef(ref); perr == nil && named.String() != ref {
			img, err = e.client.GetImage(ctx, named.String())
		}
	}
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			ns := e.cfg.Namespace
			return imageInfo{}, "", fmt.Errorf("image %q is not in containerd namespace %q: pull it, or import it with `ctr -n %s images import FILE` (the test image comes with `make deps`): %w", ref, ns, ns, errdefs.ErrNotFound)
		}
		return imageInfo{}, "", classify(fmt.Sprintf("look up image %q", ref), err)
	}
	key := img.Target().Digest.String()
	e.imgMu.Lock()
	info, ok := e.images[key]
	e.imgMu.Unlock()
	if ok {
		return info, img.Name(), nil
	}
	unpacked, err := img.IsUnpacked(ctx, e.cfg.Snapshotter)
	if err != nil {
		return imageInfo{}, "", classify(fmt.Sprintf("image %q", ref), err)
	}
	if !unpacked {
		if err := img.Unpack(ctx, e.cfg.Snapshotter); err != nil {
			return imageInfo{}, "", classify(fmt.Sprintf("unpack image %q", ref), err)
		}
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return imageInfo{}, "", classify(fmt.Sprintf("image %q layers", ref), err)
	}
	cfg, err := img.Spec(ctx)
	if err != nil {
		return imageInfo{}, "", classify(fmt.Sprintf("image %q config", ref), err)
	}
	info = imageInfo{chainID: identity.ChainID(diffIDs).String(), config: cfg.Config}
	e.imgMu.Lock()
	if len(e.images) >= maxImageCache {
		clear(e.images)
	}
	e.images[key] = info
	e.imgMu.Unlock()
	return info, img.Name(), nil
}

func (e *Containerd) forgetImage(info imageInfo) {
	e.imgMu.Lock()
	defer e.imgMu.Unlock()
	maps.DeleteFunc(e.images, func(_ string, v imageInfo) bool { return v.chainID == info.chainID })
}

// classify wraps a containerd error with what was being done and the
// errdefs kind it corresponds to.
func classify(what string, err error) error {
	var kind error
	switch {
	case cerrdefs.IsNotFound(err):
		kind = errdefs.ErrNotFound
	case cerrdefs.IsAlreadyExists(err):
		kind = errdefs.ErrAlreadyExists
	case cerrdefs.IsInvalidArgument(err):
		kind = errdefs.ErrInvalid
	case cerrdefs.IsUnavailable(err):
		kind = errdefs.ErrUnavailable
	case cerrdefs.IsPermissionDenied(err):
		kind = errdefs.ErrPermissionDenied
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", what, err)
	}
	if kind == nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, err, kind)
}
