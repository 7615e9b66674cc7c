package node

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/ipfs/go-cid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// taskService implements the TaskService of the local API.
type taskService struct {
	n *Node
}

var _ apiv1connect.TaskServiceHandler = (*taskService)(nil)

// maxSpecTimeout keeps a millisecond count from overflowing a Duration.
const maxSpecTimeout = int64(100 * 365 * 24 * time.Hour / time.Millisecond)

// specFromAPI turns the wire spec into a runtime spec. Limits and defaults
// are checked by the executor's policy; this only refuses what cannot be
// represented.
func specFromAPI(s *apiv1.TaskSpec) (runtime.Spec, error) {
	if s == nil {
		return runtime.Spec{}, fmt.Errorf("spec: missing: %w", errdefs.ErrInvalid)
	}
	if s.GetTimeoutMs() < 0 || s.GetTimeoutMs() > maxSpecTimeout {
		return runtime.Spec{}, fmt.Errorf("spec: timeout_ms %d out of range: %w", s.GetTimeoutMs(), errdefs.ErrInvalid)
	}
	out := runtime.Spec{
		Image:     s.GetImage(),
		Command:   s.GetCommand(),
		Env:       s.GetEnv(),
		Workdir:   s.GetWorkdir(),
		Timeout:   time.Duration(s.GetTimeoutMs()) * time.Millisecond,
		Network:   runtime.Network(s.GetNetwork()),
		Isolation: runtime.Isolation(s.GetIsolation()),
	}
	if s.Uid != nil {
		uid := s.GetUid()
		out.UID = &uid
	}
	if l := s.GetLimits(); l != nil {
		out.Limits = runtime.Limits{MemoryBytes: l.GetMemoryBytes(), CPUs: l.GetCpus(), Pids: l.GetPids(), TmpBytes: l.GetTmpBytes()}
	}
	return out, nil
}

// apiRunEvents sends a task's events on the Run stream.
type apiRunEvents struct {
	n      *Node
	stream *connect.ServerStream[apiv1.RunEvent]
}

func (a *apiRunEvents) started(id string, base cid.Cid) error {
	ev := &apiv1.TaskStarted{TaskId: id, PeerId: a.n.ID().String()}
	if base.Defined() {
		ev.BaseRoot = base.String()
	}
	return a.stream.Send(&apiv1.RunEvent{Event: &apiv1.RunEvent_Started{Started: ev}})
}

func (a *apiRunEvents) output(c runtime.Chunk) error {
	return a.stream.Send(&apiv1.RunEvent{Event: &apiv1.RunEvent_Output{Output: &apiv1.OutputChunk{
		Stream: c.Stream.String(), Seq: c.Seq, Time: timestamppb.New(c.Time), Data: c.Data,
	}}})
}

func (a *apiRunEvents) progress(phase string, done, total uint64) error {
	return a.stream.Send(&apiv1.RunEvent{Event: &apiv1.RunEvent_Progress{Progress: &apiv1.Progress{Phase: phase, Done: done, Total: total}}})
}

func (t *taskService) Run(ctx context.Context, req *connect.Request[apiv1.RunRequest], stream *connect.ServerStream[apiv1.RunEvent]) error {
	spec, err := specFromAPI(req.Msg.GetSpec())
	if err != nil {
		return err
	}
	var dir string
	if req.Msg.GetWorkspace() != "" {
		if dir, err = absPath("workspace", req.Msg.GetWorkspace()); err != nil {
			return err
		}
	}
	out, err := t.n.tasks.run(ctx, spec, dir, &apiRunEvents{n: t.n, stream: stream})
	if out.Result.StartedAt.IsZero() && err != nil {
		return err // the task never ran: a plain error says why
	}
	res := resultToAPI(out)
	if err != nil {
		res.Error = err.Error()
	}
	return stream.Send(&apiv1.RunEvent{Event: &apiv1.RunEvent_Result{Result: res}})
}

func resultToAPI(o taskOutcome) *apiv1.TaskResult {
	r := o.Result
	out := &apiv1.TaskResult{
		TaskId:          o.ID,
		ExitCode:        int32(r.ExitCode),
		Signal:          r.Signal,
		OomKilled:       r.OOMKilled,
		TimedOut:        r.TimedOut,
		Cancelled:       r.Cancelled,
		CpuSeconds:      r.CPUSeconds,
		PeakMemoryBytes: r.PeakMemoryBytes,
		DurationSeconds: r.Duration.Seconds(),
		StdoutBytes:     uint64(o.Stdout),
		StderrBytes:     uint64(o.Stderr),
		LogDroppedBytes: uint64(o.Log.DroppedBytes),
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
	return out
}
