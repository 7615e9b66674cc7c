package delegation

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/cortex-peer/cortex-peer/node/tasks"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// This file converts between the task wire (meshv1) and delegation's own
// types, and holds the client side of the task and logs protocols.

func specToWire(s runtime.Spec) *meshv1.TaskSpec {
	w := &meshv1.TaskSpec{
		Image: s.Image, Command: s.Command, Env: s.Env, Workdir: s.Workdir, Uid: s.UID,
		MemoryBytes: s.Limits.MemoryBytes, Cpus: s.Limits.CPUs, Pids: s.Limits.Pids, TmpBytes: s.Limits.TmpBytes,
		DiskBytes: s.Limits.DiskBytes, TimeoutMs: s.Timeout.Milliseconds(), Network: string(s.Network), Isolation: string(s.Isolation),
		Artifacts: s.Artifacts,
	}
	return w
}

// specFromWire refuses what cannot be represented; the executor's policy
// checks the rest.
func specFromWire(w *meshv1.TaskSpec) (runtime.Spec, error) {
	if w == nil {
		return runtime.Spec{}, fmt.Errorf("spec: missing: %w", errdefs.ErrInvalid)
	}
	if w.GetTimeoutMs() < 0 || w.GetTimeoutMs() > protocol.MaxTaskTimeoutMs {
		return runtime.Spec{}, fmt.Errorf("spec: timeout_ms %d out of range: %w", w.GetTimeoutMs(), errdefs.ErrInvalid)
	}
	s := runtime.Spec{
		Image: w.GetImage(), Command: w.GetCommand(), Env: w.GetEnv(), Workdir: w.GetWorkdir(),
		Limits: runtime.Limits{MemoryBytes: w.GetMemoryBytes(), CPUs: w.GetCpus(), Pids: w.GetPids(), TmpBytes: w.GetTmpBytes(),
			DiskBytes: w.GetDiskBytes()},
		Timeout: time.Duration(w.GetTimeoutMs()) * time.Millisecond,
		Network: runtime.Network(w.GetNetwork()), Isolation: runtime.Isolation(w.GetIsolation()),
		Artifacts: w.GetArtifacts(),
	}
	if err := tasks.CheckArtifacts(s.Artifacts); err != nil {
		return runtime.Spec{}, fmt.Errorf("spec: %w", err)
	}
	if w.Uid != nil {
		uid := w.GetUid()
		s.UID = &uid
	}
	return s, nil
}

var stateWire = map[taskState]meshv1.TaskState{
	stateSubmitted: meshv1.TaskState_TASK_STATE_SUBMITTED,
	stateFetching:  meshv1.TaskState_TASK_STATE_FETCHING,
	stateRunning:   meshv1.TaskState_TASK_STATE_RUNNING,
	stateExited:    meshv1.TaskState_TASK_STATE_EXITED,
	stateDelivered: meshv1.TaskState_TASK_STATE_DELIVERED,
	stateLost:      meshv1.TaskState_TASK_STATE_LOST,
	stateFailed:    meshv1.TaskState_TASK_STATE_FAILED,
}

// stateToWire is the wire's name of s. The wire has no cancelled state: a
// coordinator that holds a cancelled task's result says delivered (the
// result says cancelled), and stateWire keeps one state per wire value.
func stateToWire(s taskState) meshv1.TaskState {
	if s == stateCancelled || s == stateReturned {
		return meshv1.TaskState_TASK_STATE_DELIVERED
	}
	return stateWire[s]
}

func stateFromWire(w meshv1.TaskState) taskState {
	for s, v := range stateWire {
		if v == w {
			return s
		}
	}
	return ""
}

// outcomeRecord is how a task run here ended, as records keep it.
func outcomeRecord(o tasks.Outcome) *taskResultRecord {
	r := o.Result
	rec := &taskResultRecord{
		ExitCode: r.ExitCode, Signal: r.Signal, OOMKilled: r.OOMKilled, TimedOut: r.TimedOut, Cancelled: r.Cancelled,
		CPUSeconds: r.CPUSeconds, PeakMemoryBytes: r.PeakMemoryBytes, Duration: r.Duration.Seconds(), StartedAt: r.StartedAt,
		StdoutChunks: o.StdoutChunks, StderrChunks: o.StderrChunks,
		StdoutBytes: uint64(o.Stdout), StderrBytes: uint64(o.Stderr), LogDropped: uint64(o.Log.DroppedBytes),
		DiskLimitExceeded: r.DiskLimitExceeded,
	}
	if o.ResultCID.Defined() {
		rec.ResultRoot = o.ResultCID.String()
	}
	if len(o.Artifacts) > 0 {
		rec.Artifacts = artifactRecords(o.Artifacts)
	}
	return rec
}

func resultToWire(id string, st taskState, r *taskResultRecord) *meshv1.TaskResult {
	w := &meshv1.TaskResult{
		TaskId: id, State: stateToWire(st), ExitCode: int32(r.ExitCode), Signal: r.Signal,
		OomKilled: r.OOMKilled, TimedOut: r.TimedOut, Cancelled: r.Cancelled,
		CpuSeconds: r.CPUSeconds, PeakMemoryBytes: r.PeakMemoryBytes, DurationMs: int64(r.Duration * 1000),
		Error: r.Error, StdoutChunks: r.StdoutChunks, StderrChunks: r.StderrChunks,
		StdoutBytes: r.StdoutBytes, StderrBytes: r.StderrBytes, LogDroppedBytes: r.LogDropped,
		DiskLimitExceeded: r.DiskLimitExceeded, Returned: r.Returned,
	}
	if !r.StartedAt.IsZero() {
		w.StartedAtUnixMs = r.StartedAt.UnixMilli()
	}
	if c, err := cid.Decode(r.ResultRoot); err == nil {
		w.ResultRoot = c.Bytes()
	}
	for _, a := range artifactsOf(r.Artifacts) {
		w.Artifacts = append(w.Artifacts, &meshv1.TaskArtifact{Path: a.Path, Root: a.Root.Bytes(), Bytes: uint64(max(a.Bytes, 0))})
	}
	return w
}

// resultFromWire reads a result from the wire; the result root travels as
// the text of its CID and is checked as one.
func resultFromWire(w *meshv1.TaskResult) (*taskResultRecord, error) {
	if w == nil {
		return nil, fmt.Errorf("result: missing: %w", errdefs.ErrInvalid)
	}
	r := &taskResultRecord{
		ExitCode: int(w.GetExitCode()), Signal: w.GetSignal(), OOMKilled: w.GetOomKilled(), TimedOut: w.GetTimedOut(),
		Cancelled: w.GetCancelled(), CPUSeconds: w.GetCpuSeconds(), PeakMemoryBytes: w.GetPeakMemoryBytes(),
		Duration: float64(w.GetDurationMs()) / 1000, Error: w.GetError(),
		StdoutChunks: w.GetStdoutChunks(), StderrChunks: w.GetStderrChunks(),
		StdoutBytes: w.GetStdoutBytes(), StderrBytes: w.GetStderrBytes(), LogDropped: w.GetLogDroppedBytes(),
		DiskLimitExceeded: w.GetDiskLimitExceeded(), Returned: w.GetReturned(),
	}
	if ms := w.GetStartedAtUnixMs(); ms != 0 {
		r.StartedAt = time.UnixMilli(ms)
	}
	if b := w.GetResultRoot(); len(b) > 0 {
		c, err := cid.Cast(b)
		if err != nil {
			return nil, fmt.Errorf("result root: %v: %w", err, errdefs.ErrInvalid)
		}
		r.ResultRoot = c.String()
	}
	if len(w.GetArtifacts()) > 1024 {
		return nil, fmt.Errorf("result: %d artifacts: %w", len(w.GetArtifacts()), errdefs.ErrInvalid)
	}
	for _, a := range w.GetArtifacts() {
		c, err := cid.Cast(a.GetRoot())
		if err != nil || !filepath.IsLocal(filepath.FromSlash(a.GetPath())) || a.GetBytes() > 1<<62 {
			return nil, fmt.Errorf("result: artifact %q: %w", a.GetPath(), errdefs.ErrInvalid)
		}
		r.Artifacts = append(r.Artifacts, artifactRecord{Path: a.GetPath(), Root: c.String(), Bytes: int64(a.GetBytes())})
	}
	return r, nil
}

func chunkToWire(id string, c runtime.Chunk) *meshv1.LogChunk {
	return &meshv1.LogChunk{TaskId: id, Stream: uint32(c.Stream), Seq: c.Seq, TimeUnixNs: c.Time.UnixNano(), Data: c.Data}
}

func chunkFromWire(w *meshv1.LogChunk) runtime.Chunk {
	return runtime.Chunk{Stream: runtime.Stream(w.GetStream()), Seq: w.GetSeq(), Time: time.Unix(0, w.GetTimeUnixNs()), Data: w.GetData()}
}

// taskRequest sends one request on the task protocol and reads the reply.
func (d *Delegation) taskRequest(ctx context.Context, to peer.ID, req *meshv1.TaskRequest) (*meshv1.TaskReply, error) {
	ctx, cancel := context.WithTimeout(ctx, taskStreamTimeout)
	defer cancel()
	s, err := d.host.Libp2p().NewStream(ctx, to, libp2pproto.ID(protocol.TaskProtocol))
	if err != nil {
		return nil, fmt.Errorf("reach peer %s: %w: %w", to, err, errdefs.ErrUnavailable)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := protocol.WriteDelimited(s, req, protocol.MaxTaskMessage); err != nil {
		s.Reset()
		return nil, fmt.Errorf("send to peer %s: %w: %w", to, err, errdefs.ErrUnavailable)
	}
	_ = s.CloseWrite()
	var reply meshv1.TaskReply
	if err := protocol.ReadDelimited(bufio.NewReader(s), &reply, protocol.MaxTaskMessage); err != nil {
		s.Reset()
		return nil, fmt.Errorf("reply from peer %s: %w: %w", to, err, errdefs.ErrUnavailable)
	}
	return &reply, nil
}

// replyError turns a refusal into an error of the matching kind.
func replyError(from peer.ID, r *meshv1.TaskReply) error {
	kind := errdefs.ErrUnavailable
	switch r.GetCode() {
	case meshv1.ReplyCode_REPLY_CODE_OK:
		return nil
	case meshv1.ReplyCode_REPLY_CODE_INVALID:
		kind = errdefs.ErrInvalid
	case meshv1.ReplyCode_REPLY_CODE_REFUSED, meshv1.ReplyCode_REPLY_CODE_NOT_YOURS:
		kind = errdefs.ErrPermissionDenied
	case meshv1.ReplyCode_REPLY_CODE_UNKNOWN_TASK:
		kind = errdefs.ErrNotFound
	}
	return fmt.Errorf("peer %s refused (%s): %s: %w", shortID(from), r.GetCode(), r.GetReason(), kind)
}

// fetchLogRange reads stored chunks from..to (to 0: to the end) of one
// stream of a task from its executor, calling fn for each in order.
func (d *Delegation) fetchLogRange(ctx context.Context, executor peer.ID, id string, stream runtime.Stream, from, to uint64, fn func(runtime.Chunk)) error {
	ctx, cancel := context.WithTimeout(ctx, logRangeTimeout)
	defer cancel()
	s, err := d.host.Libp2p().NewStream(ctx, executor, libp2pproto.ID(protocol.LogsProtocol))
	if err != nil {
		return fmt.Errorf("reach executor %s for logs: %w: %w", executor, err, errdefs.ErrUnavailable)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	req := &meshv1.LogRangeRequest{TaskId: id, Stream: uint32(stream), FromSeq: from, ToSeq: to}
	if err := protocol.WriteDelimited(s, req, protocol.MaxLogRangeRequest); err != nil {
		s.Reset()
		return fmt.Errorf("ask for logs: %w: %w", err, errdefs.ErrUnavailable)
	}
	_ = s.CloseWrite()
	br := bufio.NewReader(s)
	next := from
	for {
		var c meshv1.LogChunk
		err := protocol.ReadDelimited(br, &c, protocol.MaxLogChunkMessage)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			s.Reset()
			return fmt.Errorf("logs of task %s: %w", id, err)
		}
		if c.GetTaskId() != id || c.GetStream() != uint32(stream) || c.GetSeq() != next || (to != 0 && c.GetSeq() > to) {
			s.Reset()
			return fmt.Errorf("logs of task %s: chunk %s/%d out of the range asked for: %w", id, c.GetTaskId(), c.GetSeq(), errdefs.ErrInvalid)
		}
		next++
		fn(chunkFromWire(&c))
	}
}
