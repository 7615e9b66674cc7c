package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// cancelGrace bounds the explicit cancel sent after a cancelled run_task:
// the API kills a task whose Run call ends, this only makes sure of it.
const cancelGrace = 5 * time.Second

func (s *Server) addTools() {
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:  "run_task",
		Title: "Run a command in a sandbox and wait for it",
		Description: `Run a command in a sandboxed container on a peer of the mesh and wait until it ends.
Each line of output is sent as a progress notification (and a log notification, if you set a log level) while it runs; cancelling the call kills the task.
Returns the exit code, resource usage, the workspace's result root and the merge report. Output up to 16 KiB per stream is returned whole; longer output returns its head, tail, size and a ref to page through with task_logs.
workspace: an absolute directory path on the peer's machine (imported, mounted at /workspace, and the task's changes merged back into it three-way, never overwriting local edits) or a root CID (fetched into a fresh temporary directory that is removed afterwards; read the changes from result_root).
For work longer than a few minutes use start_task.`,
		Annotations: &mcp.ToolAnnotations{OpenWorldHint: new(true)},
	}, s.runTask)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:  "start_task",
		Title: "Start a command in a sandbox and return at once",
		Description: `Start a command like run_task but return as soon as it is submitted, with its task_id. Ask later with get_task (state and result) and task_logs (output), or stop it with cancel_task.
A workspace given as a CID is fetched into a temporary directory that is kept (workspace_path) so the task's changes can merge back into it.`,
		Annotations: &mcp.ToolAnnotations{OpenWorldHint: new(true)},
	}, s.startTask)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "get_task",
		Title:       "Get a task's state and result",
		Description: `Return a task's state (submitted, fetching, running, exited, delivered, cancelled, lost, failed), its executor and, once it has ended, its result (exit code, usage, roots, merge report) and output sizes. Does not return output: use task_logs.`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.getTask)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:  "task_logs",
		Title: "Page through a task's output",
		Description: `Return a page of a task's kept output for one stream (stdout by default), as chunks with sequence numbers.
Start at from_seq (1 is the first chunk) and continue with next_seq and next_offset while has_more is true; or ask for the last tail chunks. A page holds at most limit chunks and max_bytes bytes (a chunk bigger than that comes in parts, each with its offset).`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.taskLogs)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "cancel_task",
		Title:       "Cancel a task",
		Description: `Kill a task wherever it runs. Its result (cancelled: true) can still be read with get_task.`,
		Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: true},
	}, s.cancelTask)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "list_tasks",
		Title:       "List tasks",
		Description: `List the tasks this peer coordinates, newest first, with state and executor (at most limit, default 50; filter by state).`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.listTasks)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "list_peers",
		Title:       "List the peers of the mesh",
		Description: `List the other peers of the mesh this peer sees (this peer is always a candidate too): id, labels, capabilities (containerd, gvisor, chromium, gopls), capacity and running tasks. Use an id as run_task's peer, or labels to place a task.`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.listPeers)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "workspace_add",
		Title:       "Import a directory as a workspace",
		Description: `Import a directory on the peer's machine (incrementally: unchanged files are not read again) and return its root CID, which any peer of the mesh can fetch.`,
		Annotations: &mcp.ToolAnnotations{IdempotentHint: true},
	}, s.workspaceAdd)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "workspace_get",
		Title:       "Fetch a workspace into a new directory",
		Description: `Fetch a root CID from the mesh (only the blocks this peer lacks) and write it into a new directory on the peer's machine; the path must not exist yet. Modes are kept; symlinks pointing out of the tree are skipped and listed unless allow_escaping_links.`,
	}, s.workspaceGet)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "workspace_diff",
		Title:       "Diff two workspace roots",
		Description: `List the paths that differ from one root CID to another: added, removed, modified or mode-changed.`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.workspaceDiff)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "workspace_merge",
		Title:       "Merge a workspace change into a directory",
		Description: `Apply the change base -> theirs (two root CIDs) to a directory that may have local edits, three-way: local edits are never overwritten; a conflict leaves PATH.theirs beside the file and is listed in the report.`,
		Annotations: &mcp.ToolAnnotations{DestructiveHint: new(false)},
	}, s.workspaceMerge)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "workspace_verify",
		Title:       "Check a root's blocks, or the whole store",
		Description: `Check that every block the DAG of a root CID needs is on this peer and hashes to its CID (without cid: every pin's DAG and every stored block), as ipfs repo verify does. Returns the blocks checked and the missing and corrupt ones (the first 100 of each, with whole counts). Changes nothing.`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.workspaceVerify)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "peer_drain",
		Title:       "Drain this peer",
		Description: `Make this peer take no new tasks (the mesh places them elsewhere), let the tasks it runs end within deadline (default: the peer's drain_deadline, 10m), then stop the rest and hand them back to their coordinators as returned, and deliver every result. Then the peer stops, unless stay: it stays up taking no tasks until peer_eligible. Returns how many tasks completed and were returned.`,
		Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true)},
	}, s.peerDrain)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "peer_eligible",
		Title:       "Make a drained peer take tasks again",
		Description: `Undo a peer_drain that stayed: this peer takes tasks again. Returns whether it was draining.`,
		Annotations: &mcp.ToolAnnotations{IdempotentHint: true},
	}, s.peerEligible)
}

// DrainInput is peer_drain's arguments.
type DrainInput struct {
	Deadline string `json:"deadline,omitempty" jsonschema:"how long running tasks may take before they are stopped and returned, as a duration like 2m (default: the peer's drain_deadline)"`
	Stay     bool   `json:"stay,omitempty" jsonschema:"keep the peer up, taking no tasks, after the drain"`
}

// DrainOutput is peer_drain's result.
type DrainOutput struct {
	Completed       uint32  `json:"completed" jsonschema:"tasks that ran to their end during the drain"`
	Returned        uint32  `json:"returned" jsonschema:"tasks stopped at the deadline and handed back to their coordinators"`
	LeftUndelivered uint32  `json:"left_undelivered" jsonschema:"results not yet acknowledged (delivered after the peer's next start)"`
	Seconds         float64 `json:"seconds"`
	Stopping        bool    `json:"stopping" jsonschema:"the peer stops now"`
}

func (s *Server) peerDrain(ctx context.Context, creq *mcp.CallToolRequest, in DrainInput) (*mcp.CallToolResult, DrainOutput, error) {
	var deadline time.Duration
	if in.Deadline != "" {
		d, err := time.ParseDuration(in.Deadline)
		if err != nil || d < 0 {
			return nil, DrainOutput{}, toolError(fmt.Errorf("deadline %q: want a duration like 2m: %w", in.Deadline, errdefs.ErrInvalid))
		}
		deadline = d
	}
	n := newNotifier(creq, s.log)
	ev, err := s.api.Drain(ctx, deadline, in.Stay, func(ev *apiv1.DrainEvent) {
		n.status(ctx, fmt.Sprintf("draining: %d tasks running, %d results to deliver", ev.GetRunning(), ev.GetUndelivered()))
	})
	if err != nil {
		return nil, DrainOutput{}, toolError(err)
	}
	return nil, DrainOutput{Completed: ev.GetCompleted(), Returned: ev.GetReturned(), LeftUndelivered: ev.GetLeftUndelivered(),
		Seconds: float64(ev.GetElapsedMs()) / 1000, Stopping: ev.GetStopping()}, nil
}

// EligibleOutput is peer_eligible's result.
type EligibleOutput struct {
	WasDraining bool `json:"was_draining"`
}

func (s *Server) peerEligible(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, EligibleOutput, error) {
	was, err := s.api.Eligible(ctx)
	if err != nil {
		return nil, EligibleOutput{}, toolError(err)
	}
	return nil, EligibleOutput{WasDraining: was}, nil
}

// VerifyInput is workspace_verify's arguments.
type VerifyInput struct {
	CID string `json:"cid,omitempty" jsonschema:"a root CID; empty: the whole store"`
}

// VerifyOutput is workspace_verify's result.
type VerifyOutput struct {
	OK           bool     `json:"ok" jsonschema:"nothing missing, nothing corrupt"`
	Blocks       uint64   `json:"blocks"`
	Bytes        uint64   `json:"bytes"`
	Missing      []string `json:"missing,omitempty"`
	Corrupt      []string `json:"corrupt,omitempty"`
	MissingCount uint64   `json:"missing_count"`
	CorruptCount uint64   `json:"corrupt_count"`
}

func (s *Server) workspaceVerify(ctx context.Context, creq *mcp.CallToolRequest, in VerifyInput) (*mcp.CallToolResult, VerifyOutput, error) {
	n := newNotifier(creq, s.log)
	r, err := s.api.WorkspaceVerify(ctx, in.CID, func(pr *apiv1.Progress) {
		n.status(ctx, fmt.Sprintf("verified %d blocks, %d bytes", pr.GetDone(), pr.GetBytes()))
	})
	if err != nil {
		return nil, VerifyOutput{}, toolError(err)
	}
	return nil, VerifyOutput{OK: r.GetMissingCount() == 0 && r.GetCorruptCount() == 0, Blocks: r.GetBlocks(), Bytes: r.GetBytes(),
		Missing: r.GetMissing(), Corrupt: r.GetCorrupt(), MissingCount: r.GetMissingCount(), CorruptCount: r.GetCorruptCount()}, nil
}

// TaskInput is what run_task and start_task take.
type TaskInput struct {
	Command      []string          `json:"command" jsonschema:"the command and its arguments, e.g. [\"sh\", \"-c\", \"make test\"]"`
	Image        string            `json:"image,omitempty" jsonschema:"container image (default: the executing peer's default image)"`
	Workspace    string            `json:"workspace,omitempty" jsonschema:"absolute directory path on the peer's machine, or a workspace root CID; mounted at /workspace"`
	Workdir      string            `json:"workdir,omitempty" jsonschema:"absolute working directory inside the task (default /workspace with a workspace, else /)"`
	Env          []string          `json:"env,omitempty" jsonschema:"environment variables as K=V"`
	Peer         string            `json:"peer,omitempty" jsonschema:"peer id to run on (from list_peers); default: the least loaded matching peer"`
	Labels       map[string]string `json:"labels,omitempty" jsonschema:"labels the executing peer must carry"`
	Require      []string          `json:"require,omitempty" jsonschema:"capabilities the executing peer must have: containerd, gvisor, chromium, gopls"`
	Timeout      string            `json:"timeout,omitempty" jsonschema:"kill the task after this long, as a duration like 30s or 10m (default: the peer's)"`
	MemoryMiB    int64             `json:"memory_mib,omitempty" jsonschema:"memory limit in MiB"`
	DiskMiB      int64             `json:"disk_mib,omitempty" jsonschema:"bound on what the task writes to /workspace, in MiB; over it the task is killed and nothing is merged"`
	CPUs         float64           `json:"cpus,omitempty" jsonschema:"CPU limit in cores"`
	Pids         int64             `json:"pids,omitempty" jsonschema:"most processes at once"`
	Network      string            `json:"network,omitempty" jsonschema:"none (default: loopback only) or host, if the peer allows it"`
	Isolation    string            `json:"isolation,omitempty" jsonschema:"runc (default) or gvisor"`
	UID          *uint32           `json:"uid,omitempty" jsonschema:"numeric user id to run as (default 65534)"`
	Verify       string            `json:"verify,omitempty" jsonschema:"check the result with the workspace's language server before it merges: report, or block (refuse a result that adds errors)"`
	Artifacts    []string          `json:"artifacts,omitempty" jsonschema:"paths or globs under the workspace (out/app, logs/*.txt) returned by CID when the task ends instead of merged; read them with artifact_read or artifact_get"`
	RetryOnDrain bool              `json:"retry_on_drain,omitempty" jsonschema:"run_task only: if the executing peer is drained and hands the task back, place it again on another peer (up to 3 times)"`
}

// RunOutput is run_task's result.
type RunOutput struct {
	TaskID            string           `json:"task_id"`
	Executor          string           `json:"executor,omitempty" jsonschema:"peer id the task ran on"`
	ExitCode          int32            `json:"exit_code"`
	Signal            string           `json:"signal,omitempty"`
	OOMKilled         bool             `json:"oom_killed,omitempty"`
	DiskLimitExceeded bool             `json:"disk_limit_exceeded,omitempty" jsonschema:"the task wrote past its disk limit: killed, nothing merged"`
	TimedOut          bool             `json:"timed_out,omitempty"`
	Cancelled         bool             `json:"cancelled,omitempty"`
	CPUSeconds        float64          `json:"cpu_seconds"`
	PeakMemoryBytes   uint64           `json:"peak_memory_bytes"`
	DurationSeconds   float64          `json:"duration_seconds"`
	BaseRoot          string           `json:"base_root,omitempty" jsonschema:"workspace root CID as the task started"`
	ResultRoot        string           `json:"result_root,omitempty" jsonschema:"workspace root CID as the task left it"`
	Merge             *MergeReport     `json:"merge,omitempty" jsonschema:"how the task's changes merged back into the workspace directory"`
	Verify            *LSPVerifyReport `json:"verify,omitempty" jsonschema:"with verify: the diagnostics the result adds and fixes, checked before the merge"`
	Artifacts         []TaskArtifact   `json:"artifacts,omitempty" jsonschema:"what the artifacts matched, each by CID on the peer that ran the task"`
	LogDroppedBytes   uint64           `json:"log_dropped_bytes,omitempty" jsonschema:"output that could not be kept in the peer's task log (a full or failing disk)"`
	Error             string           `json:"error,omitempty" jsonschema:"why the task could not run or its workspace could not come back"`
	// OutputMissingBytes is never expected: output is flow-controlled and
	// kept, so it says something broke (an executor died with it).
	OutputMissingBytes uint64       `json:"output_missing_bytes,omitempty" jsonschema:"bytes of output the task wrote that never arrived here (0 when all did)"`
	Stdout             StreamOutput `json:"stdout"`
	Stderr             StreamOutput `json:"stderr"`
}

// TaskArtifact is a file or directory a task returned by CID.
type TaskArtifact struct {
	Path  string `json:"path"`
	CID   string `json:"cid"`
	Bytes uint64 `json:"bytes"`
}

// MergeReport says what a merge did.
type MergeReport struct {
	Applied   []string   `json:"applied,omitempty" jsonschema:"paths taken from theirs"`
	Merged    []string   `json:"merged,omitempty" jsonschema:"text files changed on both sides, merged line-wise"`
	Conflicts []Conflict `json:"conflicts,omitempty" jsonschema:"paths left untouched: both sides changed them, a link of theirs points out of the directory (escaping-link), or the path's parent is a link (through-link)"`
	Unchanged uint64     `json:"unchanged"`
}

// Conflict is one path a merge left alone.
type Conflict struct {
	Path       string `json:"path"`
	Reason     string `json:"reason"`
	TheirsPath string `json:"theirs_path,omitempty"`
	LinkTarget string `json:"link_target,omitempty" jsonschema:"target of theirs's symlink, not created because it points out of the directory"`
}

func (s *Server) request(ctx context.Context, in TaskInput, n *notifier, keep bool) (req *apiv1.RunRequest, cleanup func(), wsPath string, err error) {
	cleanup = func() {}
	if len(in.Command) == 0 || in.Command[0] == "" {
		return nil, cleanup, "", invalid("command is required, e.g. [\"sh\", \"-c\", \"echo hi\"]")
	}
	spec := &apiv1.TaskSpec{
		Image: in.Image, Command: in.Command, Env: in.Env, Workdir: in.Workdir, Uid: in.UID,
		Network: in.Network, Isolation: in.Isolation,
		Limits:    &apiv1.TaskLimits{MemoryBytes: in.MemoryMiB << 20, Cpus: in.CPUs, Pids: in.Pids, DiskBytes: in.DiskMiB << 20},
		Artifacts: in.Artifacts,
	}
	for _, e := range in.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return nil, cleanup, "", invalid("env %q: want K=V", e)
		}
	}
	if in.Timeout != "" {
		d, err := time.ParseDuration(in.Timeout)
		if err != nil || d <= 0 {
			return nil, cleanup, "", invalid("timeout %q: want a duration like 30s or 10m", in.Timeout)
		}
		spec.TimeoutMs = d.Milliseconds()
	}
	req = &apiv1.RunRequest{Spec: spec, Peer: in.Peer, Labels: in.Labels, Require: in.Require, Verify: in.Verify, RetryOnDrain: in.RetryOnDrain}
	if in.Workspace == "" {
		return req, cleanup, "", nil
	}
	if root, err := cid.Decode(in.Workspace); err == nil && !strings.ContainsRune(in.Workspace, filepath.Separator) {
		dir, err := os.MkdirTemp(s.opts.TempDir, "cortex-mcp-ws-")
		if err != nil {
			return nil, cleanup, "", toolError(fmt.Errorf("temporary directory for workspace %s: %w", root, err))
		}
		rm := func() { _ = os.RemoveAll(dir) }
		dest := filepath.Join(dir, "workspace")
		n.status(ctx, "fetching workspace "+root.String())
		// The copy exists only to be the task's workspace: links out of
		// the tree are made as they are, for the task to resolve in its
		// container, as a task given the CID itself would see them. The
		// peer imports them as links and never follows one.
		if _, err := s.api.WorkspaceGet(ctx, root.String(), dest, 0, true, nil); err != nil {
			rm()
			return nil, cleanup, "", toolError(err)
		}
		req.Workspace = dest
		if keep {
			return req, cleanup, dest, nil
		}
		return req, rm, dest, nil
	}
	if req.Workspace, err = s.absPath("workspace", in.Workspace); err != nil {
		return nil, cleanup, "", err
	}
	return req, cleanup, req.Workspace, nil
}

func (s *Server) runTask(ctx context.Context, creq *mcp.CallToolRequest, in TaskInput) (*mcp.CallToolResult, RunOutput, error) {
	n := newNotifier(creq, s.log)
	req, cleanup, _, err := s.request(ctx, in, n, false)
	if err != nil {
		return nil, RunOutput{}, err
	}
	defer cleanup()
	var (
		taskID, executor string
		caps             = map[string]*capture{"stdout": newCapture(s.opts.InlineBytes), "stderr": newCapture(s.opts.InlineBytes)}
		lines            = map[string]*lineSplitter{"stdout": {}, "stderr": {}}
		lastChunk        = map[string]*apiv1.OutputChunk{}
	)
	res, err := s.api.Run(ctx, req, func(ev *apiv1.RunEvent) {
		switch e := ev.GetEvent().(type) {
		case *apiv1.RunEvent_Started:
			taskID, executor = e.Started.GetTaskId(), e.Started.GetPeerId()
			n.status(ctx, fmt.Sprintf("task %s started on %s", taskID, executor))
		case *apiv1.RunEvent_Progress:
			p := e.Progress
			n.status(ctx, fmt.Sprintf("%s %d/%d", p.GetPhase(), p.GetDone(), p.GetTotal()))
		case *apiv1.RunEvent_Output:
			ch := e.Output
			st := ch.GetStream()
			c, ok := caps[st]
			if !ok {
				return
			}
			c.add(ch.GetSeq(), ch.GetData())
			lastChunk[st] = ch
			lines[st].push(ch.GetData(), func(line []byte) { n.line(ctx, taskID, st, ch, line) })
		}
	})
	for st, l := range lines {
		if ch := lastChunk[st]; ch != nil {
			l.flush(func(line []byte) { n.line(ctx, taskID, st, ch, line) })
		}
	}
	if err != nil {
		if ctx.Err() != nil && taskID != "" {
			// The client cancelled: the API kills a task whose Run call
			// ends; cancel explicitly too, in case the call ended first.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelGrace)
			if cerr := s.api.CancelTask(cctx, taskID); cerr != nil {
				s.log.Debug("cancel after the call was cancelled", "task", taskID, "err", cerr)
			}
			cancel()
		}
		return nil, RunOutput{}, toolError(err)
	}
	if res == nil {
		return nil, RunOutput{}, toolError(errNoTask)
	}
	if taskID == "" {
		taskID = res.GetTaskId()
	}
	out := runOutput(res)
	out.TaskID, out.Executor = taskID, executor
	out.Stdout = caps["stdout"].result(taskID, "stdout")
	out.Stderr = caps["stderr"].result(taskID, "stderr")
	out.OutputMissingBytes = apiclient.OutputMissing(res, out.Stdout.Bytes, out.Stderr.Bytes)
	return nil, out, nil
}

func runOutput(res *apiv1.TaskResult) RunOutput {
	var arts []TaskArtifact
	for _, a := range res.GetArtifacts() {
		arts = append(arts, TaskArtifact{Path: a.GetPath(), CID: a.GetCid(), Bytes: a.GetBytes()})
	}
	return RunOutput{
		Artifacts: arts,
		TaskID:    res.GetTaskId(), ExitCode: res.GetExitCode(), Signal: res.GetSignal(),
		OOMKilled: res.GetOomKilled(), TimedOut: res.GetTimedOut(), Cancelled: res.GetCancelled(),
		DiskLimitExceeded: res.GetDiskLimitExceeded(),
		CPUSeconds:        res.GetCpuSeconds(), PeakMemoryBytes: res.GetPeakMemoryBytes(), DurationSeconds: res.GetDurationSeconds(),
		BaseRoot: res.GetBaseRoot(), ResultRoot: res.GetResultRoot(), Merge: mergeReport(res.GetMerge()), Verify: verifyReport(res.GetVerify()),
		LogDroppedBytes: res.GetLogDroppedBytes(), Error: res.GetError(),
	}
}

func mergeReport(r *apiv1.MergeReport) *MergeReport {
	if r == nil {
		return nil
	}
	out := &MergeReport{Applied: r.GetApplied(), Merged: r.GetMerged(), Unchanged: r.GetUnchanged()}
	for _, c := range r.GetConflicts() {
		out.Conflicts = append(out.Conflicts, Conflict{Path: c.GetPath(), Reason: c.GetReason(), TheirsPath: c.GetTheirsPath(), LinkTarget: c.GetLinkTarget()})
	}
	return out
}

// StartOutput is start_task's result.
type StartOutput struct {
	TaskID        string `json:"task_id"`
	Executor      string `json:"executor,omitempty" jsonschema:"peer id the task was placed on"`
	WorkspacePath string `json:"workspace_path,omitempty" jsonschema:"directory the task's changes merge back into"`
}

func (s *Server) startTask(ctx context.Context, creq *mcp.CallToolRequest, in TaskInput) (*mcp.CallToolResult, StartOutput, error) {
	n := newNotifier(creq, s.log)
	req, cleanup, ws, err := s.request(ctx, in, n, true)
	if err != nil {
		return nil, StartOutput{}, err
	}
	defer cleanup()
	req.Detach = true
	var out StartOutput
	_, err = s.api.Run(ctx, req, func(ev *apiv1.RunEvent) {
		if st, ok := ev.GetEvent().(*apiv1.RunEvent_Started); ok {
			out.TaskID, out.Executor = st.Started.GetTaskId(), st.Started.GetPeerId()
		}
	})
	if err != nil {
		return nil, StartOutput{}, toolError(err)
	}
	if out.TaskID == "" {
		return nil, StartOutput{}, toolError(errNoTask)
	}
	out.WorkspacePath = ws
	return nil, out, nil
}

// TaskIDInput names a task.
type TaskIDInput struct {
	TaskID string `json:"task_id" jsonschema:"the task id returned by run_task, start_task or list_tasks"`
}

// TaskInfo is a task as get_task and list_tasks show it.
type TaskInfo struct {
	TaskID    string     `json:"task_id"`
	State     string     `json:"state" jsonschema:"submitted, fetching, running, exited, delivered, cancelled, lost or failed"`
	Executor  string     `json:"executor,omitempty"`
	Command   []string   `json:"command,omitempty"`
	Image     string     `json:"image,omitempty"`
	Workspace string     `json:"workspace,omitempty"`
	Submitted string     `json:"submitted,omitempty"`
	Updated   string     `json:"updated,omitempty"`
	Error     string     `json:"error,omitempty"`
	Result    *RunResult `json:"result,omitempty" jsonschema:"set once the task has ended"`
}

// RunResult is an ended task's result without its output; StdoutBytes and
// StderrBytes say how much task_logs can page through.
type RunResult struct {
	RunOutput
	Stdout      *StreamOutput `json:"stdout,omitempty"`
	Stderr      *StreamOutput `json:"stderr,omitempty"`
	StdoutBytes uint64        `json:"stdout_bytes"`
	StderrBytes uint64        `json:"stderr_bytes"`
}

func taskInfo(t *apiv1.TaskInfo) TaskInfo {
	out := TaskInfo{
		TaskID: t.GetTaskId(), State: t.GetState(), Executor: t.GetExecutor(), Command: t.GetCommand(),
		Image: t.GetImage(), Workspace: t.GetWorkspace(), Error: t.GetError(),
	}
	if ts := t.GetSubmitted(); ts != nil {
		out.Submitted = ts.AsTime().Format(time.RFC3339Nano)
	}
	if ts := t.GetUpdated(); ts != nil {
		out.Updated = ts.AsTime().Format(time.RFC3339Nano)
	}
	if r := t.GetResult(); r != nil {
		out.Result = &RunResult{RunOutput: runOutput(r), StdoutBytes: r.GetStdoutBytes(), StderrBytes: r.GetStderrBytes()}
		out.Result.Executor = t.GetExecutor()
	}
	return out
}

func (s *Server) getTask(ctx context.Context, _ *mcp.CallToolRequest, in TaskIDInput) (*mcp.CallToolResult, TaskInfo, error) {
	if in.TaskID == "" {
		return nil, TaskInfo{}, invalid("task_id is required")
	}
	t, err := s.api.GetTask(ctx, in.TaskID)
	if err != nil {
		return nil, TaskInfo{}, toolError(err)
	}
	return nil, taskInfo(t), nil
}

// CancelOutput is cancel_task's result.
type CancelOutput struct {
	TaskID    string `json:"task_id"`
	Cancelled bool   `json:"cancelled"`
	Queued    bool   `json:"queued,omitempty" jsonschema:"the task is lost (its executor out of reach): the cancel is delivered when the executor is back"`
}

func (s *Server) cancelTask(ctx context.Context, _ *mcp.CallToolRequest, in TaskIDInput) (*mcp.CallToolResult, CancelOutput, error) {
	if in.TaskID == "" {
		return nil, CancelOutput{}, invalid("task_id is required")
	}
	resp, err := s.api.Cancel(ctx, in.TaskID)
	if err != nil {
		return nil, CancelOutput{}, toolError(err)
	}
	return nil, CancelOutput{TaskID: in.TaskID, Cancelled: !resp.GetQueued(), Queued: resp.GetQueued()}, nil
}

// ListTasksInput filters list_tasks.
type ListTasksInput struct {
	State string `json:"state,omitempty" jsonschema:"only tasks in this state"`
	Limit int    `json:"limit,omitempty" jsonschema:"most tasks to return (default 50)"`
}

// ListTasksOutput is list_tasks's result.
type ListTasksOutput struct {
	Tasks []TaskInfo `json:"tasks"`
	Total int        `json:"total" jsonschema:"tasks matching before the limit"`
}

const defaultListLimit = 50

func (s *Server) listTasks(ctx context.Context, _ *mcp.CallToolRequest, in ListTasksInput) (*mcp.CallToolResult, ListTasksOutput, error) {
	ts, err := s.api.ListTasks(ctx)
	if err != nil {
		return nil, ListTasksOutput{}, toolError(err)
	}
	limit := in.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	out := ListTasksOutput{Tasks: []TaskInfo{}}
	for _, t := range ts {
		if in.State != "" && t.GetState() != in.State {
			continue
		}
		out.Total++
		if len(out.Tasks) < limit {
			out.Tasks = append(out.Tasks, taskInfo(t))
		}
	}
	return nil, out, nil
}

// PeerInfo is a peer as list_peers shows it.
type PeerInfo struct {
	ID           string            `json:"id"`
	Labels       map[string]string `json:"labels,omitempty"`
	Version      string            `json:"version,omitempty"`
	Capabilities []string          `json:"capabilities,omitempty" jsonschema:"containerd, gvisor, chromium, gopls"`
	CPUs         uint32            `json:"cpus"`
	MemoryTotal  uint64            `json:"memory_total_bytes"`
	MemoryFree   uint64            `json:"memory_available_bytes"`
	RunningTasks uint32            `json:"running_tasks"`
	Connected    bool              `json:"connected"`
	LastSeen     string            `json:"last_seen,omitempty"`
	Images       []string          `json:"images,omitempty" jsonschema:"container images the peer holds (placement prefers a peer that has the task's image)"`
	Draining     bool              `json:"draining,omitempty" jsonschema:"the peer takes no new tasks"`
}

// ListPeersOutput is list_peers's result.
type ListPeersOutput struct {
	Peers []PeerInfo `json:"peers"`
}

func (s *Server) listPeers(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, ListPeersOutput, error) {
	ps, err := s.api.Peers(ctx, false)
	if err != nil {
		return nil, ListPeersOutput{}, toolError(err)
	}
	out := ListPeersOutput{Peers: []PeerInfo{}}
	for _, p := range ps {
		pi := PeerInfo{ID: p.GetId(), Labels: p.GetLabels(), Version: p.GetVersion(), Connected: p.GetConnected(), Images: p.GetImages(), Draining: p.GetDraining()}
		c := p.GetCapabilities()
		for name, ok := range map[string]bool{"containerd": c.GetContainerd(), "gvisor": c.GetGvisor(), "chromium": c.GetChromium(), "gopls": c.GetGopls()} {
			if ok {
				pi.Capabilities = append(pi.Capabilities, name)
			}
		}
		slices.Sort(pi.Capabilities)
		cp := p.GetCapacity()
		pi.CPUs, pi.MemoryTotal, pi.MemoryFree, pi.RunningTasks = cp.GetCpus(), cp.GetMemoryTotalBytes(), cp.GetMemoryAvailableBytes(), cp.GetRunningTasks()
		if ts := p.GetLastSeen(); ts != nil {
			pi.LastSeen = ts.AsTime().Format(time.RFC3339Nano)
		}
		out.Peers = append(out.Peers, pi)
	}
	return nil, out, nil
}

// LogsInput is task_logs's arguments.
type LogsInput struct {
	TaskID     string `json:"task_id" jsonschema:"the task"`
	Stream     string `json:"stream,omitempty" jsonschema:"stdout (default) or stderr"`
	FromSeq    uint64 `json:"from_seq,omitempty" jsonschema:"first chunk to return (default 1); continue with next_seq"`
	FromOffset int    `json:"from_offset,omitempty" jsonschema:"byte offset into the first chunk; continue with next_offset"`
	Tail       int    `json:"tail,omitempty" jsonschema:"return the last this many chunks instead (within max_bytes)"`
	Limit      int    `json:"limit,omitempty" jsonschema:"most chunks in this page (default 200)"`
	MaxBytes   int    `json:"max_bytes,omitempty" jsonschema:"most bytes of data in this page (default 16384, at most 262144)"`
}

// LogChunk is one chunk of output, or the part of it that fit in the page.
type LogChunk struct {
	Seq    uint64 `json:"seq"`
	Offset int    `json:"offset,omitempty" jsonschema:"where data starts in the chunk, when the chunk did not fit whole"`
	Time   string `json:"time,omitempty"`
	Data   string `json:"data"`
}

// LogsOutput is a page of a task's output.
type LogsOutput struct {
	TaskID     string     `json:"task_id"`
	Stream     string     `json:"stream"`
	Chunks     []LogChunk `json:"chunks"`
	Bytes      int        `json:"bytes" jsonschema:"bytes of data in this page"`
	NextSeq    uint64     `json:"next_seq,omitempty" jsonschema:"from_seq of the next page, when has_more"`
	NextOffset int        `json:"next_offset,omitempty" jsonschema:"from_offset of the next page, when has_more"`
	HasMore    bool       `json:"has_more"`
}

const (
	defaultLogsLimit    = 200
	defaultLogsMaxBytes = 16 << 10
	maxLogsMaxBytes     = 256 << 10
)

// errPageFull stops reading the log stream once a page is full.
var errPageFull = errors.New("page full")

// pagePart is the part of a chunk a page returns.
type pagePart struct {
	ch   *apiv1.OutputChunk
	off  int
	data []byte
}

// runeCut moves a cut at i in b back to a rune boundary (so no page splits
// a UTF-8 sequence), unless that would leave nothing.
func runeCut(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	for j := i; j > 0 && j > i-utf8.UTFMax; j-- {
		if utf8.RuneStart(b[j]) {
			return j
		}
	}
	return i
}

func (s *Server) taskLogs(ctx context.Context, _ *mcp.CallToolRequest, in LogsInput) (*mcp.CallToolResult, LogsOutput, error) {
	if in.TaskID == "" {
		return nil, LogsOutput{}, invalid("task_id is required")
	}
	stream := in.Stream
	if stream == "" {
		stream = "stdout"
	}
	if stream != "stdout" && stream != "stderr" {
		return nil, LogsOutput{}, invalid("stream %q: want stdout or stderr", in.Stream)
	}
	if in.Tail < 0 || in.Limit < 0 || in.MaxBytes < 0 || in.FromOffset < 0 {
		return nil, LogsOutput{}, invalid("tail, limit, max_bytes and from_offset must not be negative")
	}
	limit, budget := in.Limit, in.MaxBytes
	if limit == 0 {
		limit = defaultLogsLimit
	}
	if budget == 0 {
		budget = defaultLogsMaxBytes
	}
	budget = min(budget, maxLogsMaxBytes)
	from := max(in.FromSeq, 1)
	out := LogsOutput{TaskID: in.TaskID, Stream: stream, Chunks: []LogChunk{}}

	// A page reads the stream from its first chunk and stops once full. A
	// tail keeps a ring of the last chunks, reading from near the end when
	// the task has ended and its chunk count is known.
	start := from
	if in.Tail > 0 {
		start = 1
		if t, err := s.api.GetTask(ctx, in.TaskID); err == nil && t.GetResult() != nil {
			count := t.GetResult().GetStdoutChunks()
			if stream == "stderr" {
				count = t.GetResult().GetStderrChunks()
			}
			if count > uint64(in.Tail) {
				start = count - uint64(in.Tail) + 1
			}
		}
	}
	lctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var ring []*apiv1.OutputChunk
	var page []pagePart
	size := 0
	err := s.api.LogsFrom(lctx, in.TaskID, stream, start, false, func(ch *apiv1.OutputChunk) {
		if ch.GetStream() != stream || lctx.Err() != nil {
			return
		}
		if in.Tail > 0 {
			ring = append(ring, ch)
			if len(ring) > 2*in.Tail {
				ring = append(ring[:0], ring[len(ring)-in.Tail:]...)
			}
			return
		}
		if ch.GetSeq() < from {
			return
		}
		off := 0
		if ch.GetSeq() == from {
			off = min(in.FromOffset, len(ch.GetData()))
		}
		data := ch.GetData()[off:]
		if len(page) >= limit || (len(page) > 0 && size+len(data) > budget) {
			out.HasMore, out.NextSeq, out.NextOffset = true, ch.GetSeq(), off
			stop(errPageFull)
			return
		}
		if len(data) > budget { // one chunk bigger than a page: its first part
			cut := runeCut(data, budget)
			page = append(page, pagePart{ch, off, data[:cut]})
			size += cut
			out.HasMore, out.NextSeq, out.NextOffset = true, ch.GetSeq(), off+cut
			stop(errPageFull)
			return
		}
		page = append(page, pagePart{ch, off, data})
		size += len(data)
	})
	if err != nil && !errors.Is(context.Cause(lctx), errPageFull) {
		return nil, LogsOutput{}, toolError(err)
	}
	if in.Tail > 0 {
		if len(ring) > in.Tail {
			ring = ring[len(ring)-in.Tail:]
		}
		// The newest chunks within the budget; of a last chunk bigger than
		// the budget, its end.
		for i := len(ring) - 1; i >= 0; i-- {
			data := ring[i].GetData()
			if len(page) > 0 && size+len(data) > budget {
				break
			}
			off := 0
			if len(data) > budget {
				off = len(data) - budget
				for off < len(data) && !utf8.RuneStart(data[off]) {
					off++
				}
			}
			page = append(page, pagePart{ring[i], off, data[off:]})
			size += len(data) - off
		}
		slices.Reverse(page)
	}
	for _, p := range page {
		lc := LogChunk{Seq: p.ch.GetSeq(), Offset: p.off, Data: text(p.data)}
		if p.ch.GetTime() != nil {
			lc.Time = p.ch.GetTime().AsTime().Format(time.RFC3339Nano)
		}
		out.Chunks = append(out.Chunks, lc)
	}
	out.Bytes = size
	return nil, out, nil
}

// PathInput names a directory.
type PathInput struct {
	Path    string `json:"path" jsonschema:"absolute directory path on the peer's machine"`
	NoIndex bool   `json:"no_index,omitempty" jsonschema:"read every file again, ignoring the incremental index"`
}

// AddOutput is workspace_add's result.
type AddOutput struct {
	CID       string  `json:"cid" jsonschema:"the workspace's root CID"`
	Files     uint64  `json:"files"`
	Dirs      uint64  `json:"dirs"`
	Bytes     uint64  `json:"bytes"`
	FilesRead uint64  `json:"files_read" jsonschema:"files read because they changed since the last import"`
	NewBlocks uint64  `json:"new_blocks"`
	Ignored   uint64  `json:"ignored" jsonschema:"paths excluded by .cortexignore"`
	Seconds   float64 `json:"seconds"`
	Unchanged bool    `json:"unchanged" jsonschema:"the tree is watched and nothing in it changed since the last import: nothing was scanned"`
}

func (s *Server) workspaceAdd(ctx context.Context, creq *mcp.CallToolRequest, in PathInput) (*mcp.CallToolResult, AddOutput, error) {
	dir, err := s.absPath("path", in.Path)
	if err != nil {
		return nil, AddOutput{}, err
	}
	n := newNotifier(creq, s.log)
	r, err := s.api.WorkspaceAdd(ctx, dir, in.NoIndex, func(p *apiv1.Progress) {
		n.status(ctx, fmt.Sprintf("%s %d files, %d bytes", p.GetPhase(), p.GetDone(), p.GetBytes()))
	})
	if err != nil {
		return nil, AddOutput{}, toolError(err)
	}
	return nil, AddOutput{
		CID: r.GetCid(), Files: r.GetFiles(), Dirs: r.GetDirs(), Bytes: r.GetBytes(), FilesRead: r.GetFilesRead(),
		NewBlocks: r.GetNewBlocks(), Ignored: r.GetIgnored(), Seconds: r.GetSeconds(), Unchanged: r.GetUnchanged(),
	}, nil
}

// GetInput is workspace_get's arguments.
type GetInput struct {
	CID  string `json:"cid" jsonschema:"the workspace root CID"`
	Path string `json:"path" jsonschema:"absolute path of a directory to create on the peer's machine; must not exist"`
	// AllowEscapingLinks creates symlinks that point out of the tree.
	AllowEscapingLinks bool `json:"allow_escaping_links,omitempty" jsonschema:"create symlinks that point out of the tree (absolute, or above path) as they are; by default they are skipped and listed in skipped_links"`
}

// SkippedLink is a symlink workspace_get did not create.
type SkippedLink struct {
	Path   string `json:"path"`
	Target string `json:"target"`
}

// GetOutput is workspace_get's result.
type GetOutput struct {
	CID           string  `json:"cid"`
	Path          string  `json:"path"`
	Files         uint64  `json:"files"`
	Bytes         uint64  `json:"bytes"`
	FetchedBlocks uint64  `json:"fetched_blocks" jsonschema:"blocks that came over the mesh"`
	FetchedBytes  uint64  `json:"fetched_bytes"`
	Seconds       float64 `json:"seconds"`
	// SkippedLinks are the symlinks pointing out of the tree that were not
	// created.
	SkippedLinks []SkippedLink `json:"skipped_links,omitempty" jsonschema:"symlinks pointing out of the tree that were not created (see allow_escaping_links)"`
}

func (s *Server) workspaceGet(ctx context.Context, creq *mcp.CallToolRequest, in GetInput) (*mcp.CallToolResult, GetOutput, error) {
	if in.CID == "" {
		return nil, GetOutput{}, invalid("cid is required")
	}
	dir, err := s.absPath("path", in.Path)
	if err != nil {
		return nil, GetOutput{}, err
	}
	n := newNotifier(creq, s.log)
	r, err := s.api.WorkspaceGet(ctx, in.CID, dir, 0, in.AllowEscapingLinks, func(p *apiv1.Progress) {
		n.status(ctx, fmt.Sprintf("%s %d/%d blocks", p.GetPhase(), p.GetDone(), p.GetTotal()))
	})
	if err != nil {
		return nil, GetOutput{}, toolError(err)
	}
	out := GetOutput{
		CID: r.GetCid(), Path: r.GetPath(), Files: r.GetFiles(), Bytes: r.GetBytes(),
		FetchedBlocks: r.GetFetchedBlocks(), FetchedBytes: r.GetFetchedBytes(), Seconds: r.GetSeconds(),
	}
	for _, l := range r.GetSkippedLinks() {
		out.SkippedLinks = append(out.SkippedLinks, SkippedLink{Path: l.GetPath(), Target: l.GetTarget()})
	}
	return nil, out, nil
}

// DiffInput is workspace_diff's arguments.
type DiffInput struct {
	From  string `json:"from" jsonschema:"the older root CID"`
	To    string `json:"to" jsonschema:"the newer root CID"`
	Limit int    `json:"limit,omitempty" jsonschema:"most changes to return (default 500)"`
}

// Change is one path that differs.
type Change struct {
	Path  string `json:"path"`
	Kind  string `json:"kind" jsonschema:"added, removed, modified or mode-changed"`
	IsDir bool   `json:"is_dir,omitempty"`
}

// DiffOutput is workspace_diff's result.
type DiffOutput struct {
	Changes   []Change `json:"changes"`
	Total     int      `json:"total"`
	Truncated bool     `json:"truncated" jsonschema:"true when there are more changes than limit"`
}

const defaultDiffLimit = 500

func (s *Server) workspaceDiff(ctx context.Context, _ *mcp.CallToolRequest, in DiffInput) (*mcp.CallToolResult, DiffOutput, error) {
	if in.From == "" || in.To == "" {
		return nil, DiffOutput{}, invalid("from and to are required")
	}
	cs, err := s.api.WorkspaceDiff(ctx, in.From, in.To, 0)
	if err != nil {
		return nil, DiffOutput{}, toolError(err)
	}
	limit := in.Limit
	if limit <= 0 {
		limit = defaultDiffLimit
	}
	out := DiffOutput{Changes: []Change{}, Total: len(cs), Truncated: len(cs) > limit}
	for _, c := range cs[:min(len(cs), limit)] {
		out.Changes = append(out.Changes, Change{Path: c.GetPath(), Kind: c.GetKind(), IsDir: c.GetIsDir()})
	}
	return nil, out, nil
}

// MergeInput is workspace_merge's arguments.
type MergeInput struct {
	Base   string `json:"base" jsonschema:"root CID the change starts from"`
	Theirs string `json:"theirs" jsonschema:"root CID the change ends at"`
	Path   string `json:"path" jsonschema:"absolute path of the directory to merge into"`
}

// MergeOutput is workspace_merge's result.
type MergeOutput struct {
	Report        MergeReport `json:"report"`
	FetchedBlocks uint64      `json:"fetched_blocks"`
	FetchedBytes  uint64      `json:"fetched_bytes"`
}

func (s *Server) workspaceMerge(ctx context.Context, _ *mcp.CallToolRequest, in MergeInput) (*mcp.CallToolResult, MergeOutput, error) {
	if in.Base == "" || in.Theirs == "" {
		return nil, MergeOutput{}, invalid("base and theirs are required")
	}
	dir, err := s.absPath("path", in.Path)
	if err != nil {
		return nil, MergeOutput{}, err
	}
	r, err := s.api.WorkspaceMerge(ctx, in.Base, in.Theirs, dir)
	if err != nil {
		return nil, MergeOutput{}, toolError(err)
	}
	out := MergeOutput{FetchedBlocks: r.GetFetchedBlocks(), FetchedBytes: r.GetFetchedBytes()}
	if rep := mergeReport(r.GetReport()); rep != nil {
		out.Report = *rep
	}
	return nil, out, nil
}
