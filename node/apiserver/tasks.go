package apiserver

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cortex-peer/cortex-peer/node/delegation"
	"github.com/cortex-peer/cortex-peer/node/tasks"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// Tasks is the delegation capability (delegation.Delegation): tasks run
// anywhere in the mesh, coordinated by this peer.
type Tasks interface {
	Submit(ctx context.Context, req delegation.RunRequest, ev tasks.Events) (tasks.Outcome, error)
	Tasks() ([]*delegation.TaskRecord, error)
	Task(ctx context.Context, id string) (*delegation.TaskRecord, error)
	Cancel(ctx context.Context, id string) (queued bool, err error)
	Logs(ctx context.Context, id string, follow bool, rng delegation.LogRange, send func(runtime.Chunk) error) error
}

// taskService implements the TaskService of the local API.
type taskService struct {
	t     Tasks
	roots Roots
}

var _ apiv1connect.TaskServiceHandler = (*taskService)(nil)

// specFromAPI turns the API's spec into a runtime spec, as the task wire
// does. Limits and defaults are checked by the executor's policy; this only
// refuses what cannot be represented.
func specFromAPI(s *apiv1.TaskSpec) (runtime.Spec, error) {
	if s == nil {
		return runtime.Spec{}, fmt.Errorf("spec: missing: %w", errdefs.ErrInvalid)
	}
	if s.GetTimeoutMs() < 0 || s.GetTimeoutMs() > protocol.MaxTaskTimeoutMs {
		return runtime.Spec{}, fmt.Errorf("spec: timeout_ms %d out of range: %w", s.GetTimeoutMs(), errdefs.ErrInvalid)
	}
	l := s.GetLimits()
	spec := runtime.Spec{
		Image: s.GetImage(), Command: s.GetCommand(), Env: s.GetEnv(), Workdir: s.GetWorkdir(),
		Limits: runtime.Limits{MemoryBytes: l.GetMemoryBytes(), CPUs: l.GetCpus(), Pids: l.GetPids(), TmpBytes: l.GetTmpBytes(),
			DiskBytes: l.GetDiskBytes()},
		Timeout: time.Duration(s.GetTimeoutMs()) * time.Millisecond,
		Network: runtime.Network(s.GetNetwork()), Isolation: runtime.Isolation(s.GetIsolation()),
		Artifacts: s.GetArtifacts(),
	}
	if s.Uid != nil {
		uid := s.GetUid()
		spec.UID = &uid
	}
	return spec, nil
}

// apiRunEvents sends a task's events on the Run stream.
type apiRunEvents struct {
	stream *connect.ServerStream[apiv1.RunEvent]
}

func (a *apiRunEvents) Started(id string, executor peer.ID, base cid.Cid) error {
	ev := &apiv1.TaskStarted{TaskId: id, PeerId: executor.String()}
	if base.Defined() {
		ev.BaseRoot = base.String()
	}
	return a.stream.Send(&apiv1.RunEvent{Event: &apiv1.RunEvent_Started{Started: ev}})
}

func (a *apiRunEvents) Output(c runtime.Chunk) error {
	return a.stream.Send(&apiv1.RunEvent{Event: &apiv1.RunEvent_Output{Output: chunkToAPI(c)}})
}

func chunkToAPI(c runtime.Chunk) *apiv1.OutputChunk {
	return &apiv1.OutputChunk{Stream: c.Stream.String(), Seq: c.Seq, Time: timestamppb.New(c.Time), Data: c.Data}
}

func (a *apiRunEvents) Progress(phase string, done, total uint64) error {
	return a.stream.Send(&apiv1.RunEvent{Event: &apiv1.RunEvent_Progress{Progress: &apiv1.Progress{Phase: phase, Done: done, Total: total}}})
}

func (t *taskService) Run(ctx context.Context, req *connect.Request[apiv1.RunRequest], stream *connect.ServerStream[apiv1.RunEvent]) error {
	spec, err := specFromAPI(req.Msg.GetSpec())
	if err != nil {
		return err
	}
	rr := delegation.RunRequest{Spec: spec, Detach: req.Msg.GetDetach(), Verify: req.Msg.GetVerify(), RetryOnDrain: req.Msg.GetRetryOnDrain(), Placement: delegation.Placement{
		Labels: req.Msg.GetLabels(), Require: req.Msg.GetRequire(),
	}}
	if p := req.Msg.GetPeer(); p != "" {
		if rr.Placement.Peer, err = peer.Decode(p); err != nil {
			return fmt.Errorf("peer %q: not a peer id: %w", p, errdefs.ErrInvalid)
		}
	}
	if req.Msg.GetWorkspace() != "" {
		if rr.Workspace, err = t.roots.Resolve("workspace", req.Msg.GetWorkspace()); err != nil {
			return err
		}
	}
	out, err := t.t.Submit(ctx, rr, &apiRunEvents{stream: stream})
	if rr.Detach && err == nil {
		return nil // the started event said which task
	}
	if out.Result.StartedAt.IsZero() && err != nil {
		return err // the task never ran: a plain error says why
	}
	res := resultToAPI(out)
	if err != nil {
		res.Error = protocol.ErrorText(err)
	}
	return stream.Send(&apiv1.RunEvent{Event: &apiv1.RunEvent_Result{Result: res}})
}

func (t *taskService) ListTasks(ctx context.Context, _ *connect.Request[apiv1.ListTasksRequest]) (*connect.Response[apiv1.ListTasksResponse], error) {
	recs, err := t.t.Tasks()
	if err != nil {
		return nil, err
	}
	out := &apiv1.ListTasksResponse{}
	for _, r := range recs {
		out.Tasks = append(out.Tasks, taskInfoToAPI(r))
	}
	return connect.NewResponse(out), nil
}

func (t *taskService) GetTask(ctx context.Context, req *connect.Request[apiv1.GetTaskRequest]) (*connect.Response[apiv1.GetTaskResponse], error) {
	rec, err := t.t.Task(ctx, req.Msg.GetTaskId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&apiv1.GetTaskResponse{Task: taskInfoToAPI(rec)}), nil
}

func (t *taskService) Cancel(ctx context.Context, req *connect.Request[apiv1.CancelTaskRequest]) (*connect.Response[apiv1.CancelTaskResponse], error) {
	queued, err := t.t.Cancel(ctx, req.Msg.GetTaskId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&apiv1.CancelTaskResponse{Queued: queued}), nil
}

func (t *taskService) Logs(ctx context.Context, req *connect.Request[apiv1.LogsRequest], stream *connect.ServerStream[apiv1.OutputChunk]) error {
	var rng delegation.LogRange
	switch req.Msg.GetStream() {
	case "":
		if req.Msg.GetFromSeq() > 1 {
			return fmt.Errorf("from_seq needs a stream (stdout or stderr): %w", errdefs.ErrInvalid)
		}
	case "stdout":
		rng = delegation.LogRange{Stream: runtime.Stdout, From: req.Msg.GetFromSeq()}
	case "stderr":
		rng = delegation.LogRange{Stream: runtime.Stderr, From: req.Msg.GetFromSeq()}
	default:
		return fmt.Errorf("stream %q: want stdout or stderr: %w", req.Msg.GetStream(), errdefs.ErrInvalid)
	}
	return t.t.Logs(ctx, req.Msg.GetTaskId(), req.Msg.GetFollow(), rng, func(c runtime.Chunk) error {
		return stream.Send(chunkToAPI(c))
	})
}

func taskInfoToAPI(r *delegation.TaskRecord) *apiv1.TaskInfo {
	info := &apiv1.TaskInfo{
		TaskId: r.ID, State: string(r.State), Executor: r.Executor, Command: r.Command, Image: r.Image,
		Workspace: r.Workspace, Submitted: timestamppb.New(r.Submitted), Updated: timestamppb.New(r.Updated), Error: r.Error,
	}
	if r.Result != nil {
		info.Result = resultToAPI(r.Outcome())
		info.Result.Error = r.Error
		if r.MergeErr != "" {
			info.Result.Error = r.MergeErr
		}
	}
	return info
}

func resultToAPI(o tasks.Outcome) *apiv1.TaskResult {
	r := o.Result
	out := &apiv1.TaskResult{
		TaskId:            o.ID,
		ExitCode:          int32(r.ExitCode),
		Signal:            r.Signal,
		OomKilled:         r.OOMKilled,
		DiskLimitExceeded: r.DiskLimitExceeded,
		TimedOut:          r.TimedOut,
		Cancelled:         r.Cancelled,
		CpuSeconds:        r.CPUSeconds,
		PeakMemoryBytes:   r.PeakMemoryBytes,
		DurationSeconds:   r.Duration.Seconds(),
		StdoutBytes:       uint64(o.Stdout),
		StderrBytes:       uint64(o.Stderr),
		LogDroppedBytes:   uint64(o.Log.DroppedBytes),
		StdoutChunks:      o.StdoutChunks,
		StderrChunks:      o.StderrChunks,
	}
	if o.Base.Defined() {
		out.BaseRoot = o.Base.String()
	}
	if o.ResultCID.Defined() {
		out.ResultRoot = o.ResultCID.String()
	}
	if o.Merge != nil {
		out.Merge = mergeReportToAPI(*o.Merge)
	}
	for _, a := range o.Artifacts {
		out.Artifacts = append(out.Artifacts, &apiv1.TaskArtifact{Path: a.Path, Cid: a.Root.String(), Bytes: uint64(max(a.Bytes, 0))})
	}
	if v := o.Verify; v != nil {
		out.Verify = &apiv1.LSPVerifyReport{Base: out.BaseRoot, Result: out.ResultRoot, Added: diagnosticsToAPI(v.Added), Fixed: diagnosticsToAPI(v.Fixed), AddedErrors: uint32(max(v.AddedErrors, 0))}
	}
	return out
}

func diagnosticsToAPI(ds []tasks.Diagnostic) []*apiv1.LSPDiagnostic {
	out := make([]*apiv1.LSPDiagnostic, 0, len(ds))
	for _, d := range ds {
		out = append(out, &apiv1.LSPDiagnostic{File: d.File, Line: uint32(max(d.Line, 0)), Column: uint32(max(d.Column, 0)), Severity: d.Severity, Message: d.Message, Source: d.Source})
	}
	return out
}
