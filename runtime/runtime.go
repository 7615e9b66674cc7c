package runtime

import (
	"context"
	"time"
)

// Isolation is the sandbox tier a task runs in.
type Isolation string

const (
	// IsolationRunc runs the task in Linux namespaces and cgroups under runc.
	IsolationRunc Isolation = "runc"
	// IsolationGVisor runs the same spec with runsc (gVisor) as the runtime
	// binary under the runc shim: the task talks to a user-space kernel.
	IsolationGVisor Isolation = "gvisor"
)

// Network is the network a task sees.
type Network string

const (
	// NetworkNone gives the task its own network namespace with only loopback.
	NetworkNone Network = "none"
	// NetworkHost shares the host's network namespace; policy must allow it.
	NetworkHost Network = "host"
)

// Limits bound what one task may use. A zero field means "the policy's
// default"; Policy.Apply fills them in and refuses values over the caps.
type Limits struct {
	MemoryBytes int64   // cgroup memory limit; swap is always 0
	CPUs        float64 // CPU quota in cores (1.5 = one and a half cores)
	Pids        int64   // cgroup pids limit
	TmpBytes    int64   // size of the tmpfs mounted at /tmp
	// DiskBytes bounds what the task writes to /workspace (the bytes of
	// the files it creates or changes there); see diskWatch.
	DiskBytes int64
	OpenFiles uint64 // RLIMIT_NOFILE
}

// Spec is one task to run. It comes from a caller that is not trusted: a
// spec can ask for less than the executor's policy, never for more, and it
// never names a host path. WorkspaceDir is set by the peer itself (the
// materialised copy of a workspace), not taken from the wire.
type Spec struct {
	ID        string            // unique task id; containers are named after it
	Image     string            // image reference; empty means the policy's default
	Command   []string          // argv; empty means the image's default command
	Env       []string          // K=V pairs added to the image's environment
	Workdir   string            // absolute path inside the task; default /workspace with a workspace, else /
	UID       *uint32           // user to run as; nil means the policy's default (65534)
	GID       *uint32           // group to run as; nil means the same as the user
	Limits    Limits            // zero fields take the policy's defaults
	Timeout   time.Duration     // zero means the policy's default; the whole task is killed at the deadline
	Network   Network           // empty means none
	Isolation Isolation         // empty means runc
	Labels    map[string]string // extra container labels (task metadata), never security settings
	// Artifacts are paths or globs relative to /workspace that the peer
	// imports as DAGs when the task ends, apart from the workspace. The
	// runtime does not read them.
	Artifacts []string

	// WorkspaceDir is a host directory bind-mounted read-write at /workspace
	// (nosuid,nodev). The executor makes it owned by the task's user, unless
	// WorkspaceOwned says the peer did already: on an overlay mount, a
	// chown of every file would copy every file up.
	WorkspaceDir   string
	WorkspaceOwned bool
	// WorkspaceChanges is where the task's writes to /workspace land (the
	// upper directory of the peer's overlay), measured against
	// Limits.DiskBytes. Empty measures WorkspaceDir itself, less its size
	// when the task starts (a plain copy of the workspace).
	WorkspaceChanges string
}

// Stream says which output a chunk came from.
type Stream uint8

const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return "unknown"
}

// Chunk is one piece of a task's output, in the order the task wrote it to
// that stream. Seq starts at 1 and counts chunks per stream, without gaps.
type Chunk struct {
	Stream Stream
	Seq    uint64
	Time   time.Time
	Data   []byte
}

// Result is how a task ended.
type Result struct {
	ExitCode  int    // the process's exit status; 128+signal when killed by one
	Signal    string // e.g. "SIGKILL" when the task was killed by a signal
	OOMKilled bool   // the kernel killed it for exceeding its memory limit
	TimedOut  bool   // killed at its deadline
	Cancelled bool   // killed because the caller cancelled it
	// DiskLimitExceeded: the task wrote more than Limits.DiskBytes to
	// /workspace; it was killed (or had ended) and its workspace must not
	// be taken back.
	DiskLimitExceeded bool
	CPUSeconds        float64       // user+system CPU time of the whole task
	PeakMemoryBytes   uint64        // peak memory use of the task's cgroup
	StartedAt         time.Time     // when the process started
	Duration          time.Duration // from start to exit
}

// Executor runs task specs. Implementations must be safe for concurrent use.
type Executor interface {
	// Start validates spec against the policy, creates the sandbox and starts
	// the task. Output begins to flow at once; the caller must drain
	// Task.Output or the task blocks on its writes.
	Start(ctx context.Context, spec Spec) (Task, error)
	// Close refuses new tasks, kills the tasks still running (their Wait
	// reports Cancelled; a node drains before closing so that none are),
	// waits until they are removed and releases the executor's connection.
	// Output nobody reads is dropped after a short grace so that Close
	// always returns. Safe to call twice.
	Close() error
}

// Task is a started task.
type Task interface {
	ID() string
	// Output delivers the task's stdout and stderr chunks as they are
	// written. It is closed once both streams have ended.
	Output() <-chan Chunk
	// Wait blocks until the task has ended and its container, snapshot and
	// mounts are removed, and returns how it ended. ctx bounds only the
	// waiting, not the task.
	Wait(ctx context.Context) (Result, error)
	// Kill ends the task (all of its processes) now; Wait then reports
	// Cancelled. Safe to call at any time and more than once.
	Kill(ctx context.Context) error
}
