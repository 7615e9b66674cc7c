package delegation

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/node/store"
	"github.com/cortex-peer/cortex-peer/node/tasks"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/ipfs/go-cid"
)

// taskState is where a task is in its life. Both sides keep one: the
// coordinator for the tasks it delegated, the executor for those it runs.
type taskState string

const (
	stateSubmitted taskState = "submitted"
	stateFetching  taskState = "fetching"
	stateRunning   taskState = "running"
	stateExited    taskState = "exited"    // ended; result stored, not yet acknowledged by the coordinator
	stateDelivered taskState = "delivered" // the coordinator holds the result
	stateCancelled taskState = "cancelled" // the coordinator holds the result of a task cancelled before its end
	stateLost      taskState = "lost"      // the executor went away and did not come back in time
	stateFailed    taskState = "failed"    // could not run: refused, workspace, image, executor restarted
	stateReturned  taskState = "returned"  // the executor was drained: killed at the drain's deadline and handed back
)

// final reports whether nothing more will happen to a task in this state
// (from the coordinator's point of view).
func (s taskState) final() bool {
	return s == stateDelivered || s == stateCancelled || s == stateLost || s == stateFailed || s == stateReturned
}

// endedState is the coordinator's state of a task whose result it holds:
// cancelled when it was, so that a cancelled task reads the same in tasks,
// result and the API.
func endedState(r *taskResultRecord) taskState {
	if r != nil && r.Returned {
		return stateReturned
	}
	if r != nil && r.Cancelled {
		return stateCancelled
	}
	return stateDelivered
}

// taskResultRecord is how a task ended, as both sides store it.
type taskResultRecord struct {
	ExitCode        int       `json:"exit_code"`
	Signal          string    `json:"signal,omitempty"`
	OOMKilled       bool      `json:"oom_killed,omitempty"`
	TimedOut        bool      `json:"timed_out,omitempty"`
	Cancelled       bool      `json:"cancelled,omitempty"`
	CPUSeconds      float64   `json:"cpu_seconds"`
	PeakMemoryBytes uint64    `json:"peak_memory_bytes"`
	Duration        float64   `json:"duration_seconds"`
	StartedAt       time.Time `json:"started_at"`
	ResultRoot      string    `json:"result_root,omitempty"`
	Error           string    `json:"error,omitempty"`
	StdoutChunks    uint64    `json:"stdout_chunks"`
	StderrChunks    uint64    `json:"stderr_chunks"`
	StdoutBytes     uint64    `json:"stdout_bytes"`
	StderrBytes     uint64    `json:"stderr_bytes"`
	LogDropped      uint64    `json:"log_dropped_bytes"`
	// DiskLimitExceeded: the task wrote past its disk limit; nothing of
	// its workspace comes back.
	DiskLimitExceeded bool `json:"disk_limit_exceeded,omitempty"`
	// Artifacts are DAGs on the executor, pinned there with the task.
	Artifacts []artifactRecord `json:"artifacts,omitempty"`
	// Returned: the executor was drained and killed the task at the
	// drain's deadline; it may be placed again.
	Returned bool `json:"returned,omitempty"`
}

// artifactRecord is one artifact of a task.
type artifactRecord struct {
	Path  string `json:"path"`
	Root  string `json:"root"`
	Bytes int64  `json:"bytes"`
}

func artifactRecords(as []tasks.Artifact) []artifactRecord {
	out := make([]artifactRecord, 0, len(as))
	for _, a := range as {
		out = append(out, artifactRecord{Path: a.Path, Root: a.Root.String(), Bytes: a.Bytes})
	}
	return out
}

func artifactsOf(rs []artifactRecord) []tasks.Artifact {
	out := make([]tasks.Artifact, 0, len(rs))
	for _, r := range rs {
		if c, err := cid.Decode(r.Root); err == nil {
			out = append(out, tasks.Artifact{Path: r.Path, Root: c, Bytes: r.Bytes})
		}
	}
	return out
}

// TaskRecord is one task as its coordinator remembers it.
type TaskRecord struct {
	ID       string `json:"id"`
	Executor string `json:"executor"` // peer id
	// ExecutorAddrs are where the executor listened when the task was
	// submitted: a restarted coordinator dials them to follow the task, even
	// before the mesh has introduced the executor again.
	ExecutorAddrs []string          `json:"executor_addrs,omitempty"`
	Command       []string          `json:"command"`
	Image         string            `json:"image,omitempty"`
	Workspace     string            `json:"workspace,omitempty"` // the caller's directory
	BaseRoot      string            `json:"base_root,omitempty"`
	State         taskState         `json:"state"`
	Submitted     time.Time         `json:"submitted"`
	Updated       time.Time         `json:"updated"`
	Result        *taskResultRecord `json:"result,omitempty"`
	Merge         *dag.MergeReport  `json:"merge,omitempty"`
	MergeErr      string            `json:"merge_error,omitempty"`
	Merged        bool              `json:"merged,omitempty"`
	Error         string            `json:"error,omitempty"`
	// Verify is run --verify's mode (report, block), VerifyReport what
	// the check found before the merge.
	Verify       string              `json:"verify,omitempty"`
	VerifyReport *tasks.VerifyReport `json:"verify_report,omitempty"`
	// CancelPending: the task was cancelled while lost; the cancel goes to
	// the executor when it is back.
	CancelPending bool `json:"cancel_pending,omitempty"`

	// observed: a task another peer coordinates, as its executor reports
	// it (see Delegation.Task); never stored.
	observed bool
}

// execRecord is one task as its executor remembers it.
type execRecord struct {
	ID          string `json:"id"`
	Coordinator string `json:"coordinator"` // peer id
	// CoordinatorAddrs are where the coordinator listened when it submitted
	// the task: a restarted executor dials them to deliver the result.
	CoordinatorAddrs []string          `json:"coordinator_addrs,omitempty"`
	State            taskState         `json:"state"`
	Updated          time.Time         `json:"updated"`
	Result           *taskResultRecord `json:"result,omitempty"`
}

// Key prefixes in the peer's store.
var (
	taskRecordPrefix = []byte("task/c/")
	execRecordPrefix = []byte("task/e/")
)

// records keeps task records in the peer's store, as JSON: they are local
// state, never on the wire.
type records struct {
	st *store.Store
}

func (r records) put(prefix []byte, id string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return r.st.Put(append(append([]byte{}, prefix...), id...), b)
}

func (r records) delete(prefix []byte, id string) error {
	return r.st.Delete(append(append([]byte{}, prefix...), id...))
}

func (r records) get(prefix []byte, id string, v any) error {
	b, err := r.st.Get(append(append([]byte{}, prefix...), id...))
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("task %s: no such task here: %w", id, errdefs.ErrNotFound)
		}
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("task %s: corrupt record: %w", id, err)
	}
	return nil
}

func (r records) putTask(t *TaskRecord) error {
	t.Updated = time.Now()
	return r.put(taskRecordPrefix, t.ID, t)
}

func (r records) task(id string) (*TaskRecord, error) {
	var t TaskRecord
	if err := r.get(taskRecordPrefix, id, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// tasks lists the coordinator's records, newest first.
func (r records) tasks() ([]*TaskRecord, error) {
	out, err := scanRecords[TaskRecord](r, taskRecordPrefix)
	sort.Slice(out, func(i, j int) bool { return out[i].Submitted.After(out[j].Submitted) })
	return out, err
}

// scanRecords decodes every record under prefix, skipping any that do not
// decode.
func scanRecords[T any](r records, prefix []byte) ([]*T, error) {
	var out []*T
	err := r.st.Scan(prefix, func(_, v []byte) error {
		rec := new(T)
		if json.Unmarshal(v, rec) == nil {
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

func (r records) putExec(e *execRecord) error {
	e.Updated = time.Now()
	return r.put(execRecordPrefix, e.ID, e)
}

func (r records) exec(id string) (*execRecord, error) {
	var e execRecord
	if err := r.get(execRecordPrefix, id, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

func (r records) execs() ([]*execRecord, error) {
	return scanRecords[execRecord](r, execRecordPrefix)
}

// The pins that keep a task's roots here: the workspace it ran on, and
// its result (which tasks.Runner pins under the same name on the peer
// that ran it).
func basePin(id string) string   { return "task:" + id + ":base" }
func resultPin(id string) string { return "task:" + id }

// unpinTask drops the pins of a task's roots and artifacts; any may be
// missing.
func (d *Delegation) unpinTask(id string) error {
	var errs []error
	pins := []string{resultPin(id), basePin(id)}
	if all, err := d.dags.Pins(); err == nil {
		for name := range all {
			if strings.HasPrefix(name, tasks.ArtifactPinPrefix(id)) {
				pins = append(pins, name)
			}
		}
	}
	for _, pin := range pins {
		if err := d.dags.Unpin(pin); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
