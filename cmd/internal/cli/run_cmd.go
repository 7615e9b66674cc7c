package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// exitStatus makes the process exit with a task's exit code, silently.
type exitStatus struct{ code int }

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Exit codes of run when the task did not end by itself, as timeout(1) and
// shells report them.
const (
	ExitTimedOut  = 124
	ExitCancelled = 130
)

type runFlags struct {
	image     string
	workspace string
	workdir   string
	env       []string
	memory    string
	disk      string
	tmp       string
	cpus      float64
	pids      int64
	timeout   time.Duration
	network   string
	isolation string
	user      string
	peer      string
	labels    []string
	require   []string
	detach    bool
	verify    string
	retry     bool
	artifacts []string
}

func newRunCmd(g *Globals) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] -- COMMAND [ARG...]",
		Short: "Run a command in a sandbox on the best peer of the mesh and stream its output",
		Long: `run runs COMMAND in a container on a peer of the mesh: the one --peer names,
else the least loaded peer that has every --label and --require (this peer on
a tie). The sandbox is hardened by default: no
capabilities, no new privileges, seccomp, read-only root, a private /tmp, its
own network namespace with only loopback, a non-root user, and memory, CPU and
pids limits (defaults and caps are in the [tasks] section of the config).

Output streams live: the task's stdout to stdout, its stderr to stderr. With
--workspace DIR, DIR is imported, a copy is mounted at /workspace, and what the
task changed there is merged back into DIR three-way, never overwriting an
edit made in DIR meanwhile (conflicts are written beside as PATH.theirs).
The merge report goes to stderr. --artifact PATTERN (a path or glob under
the workspace) takes what matches out of the result when the task ends: each
match is stored as a DAG on the peer that ran the task and printed with its
CID (fetch it with get), and is not merged into DIR.

run exits with the task's exit code: 124 when it timed out, 130 when it was
cancelled (Ctrl-C kills it), 128+N when signal N killed it (137 on OOM).
With --json the task's stdout goes to stderr too, and stdout carries one
JSON summary. With --detach, run prints the task id and returns; the task goes
on (cortex-peer tasks, logs -f, result, cancel).`,
		Example: `  cortex-peer run -- echo hello
  cortex-peer run --workspace ./proj -- sh -c 'ls; echo hi > out.txt'
  cortex-peer run --isolation gvisor --memory 256M --timeout 1m -- sh -c 'uname -a'
  cortex-peer run --label gpu=false --workspace ./proj -- sh -c 'make test'
  cortex-peer run --detach --peer 12D3KooW... -- ./build.sh
  cortex-peer run --workspace ./proj --artifact out/app --artifact 'logs/*.txt' -- make build`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return UsageError{errors.New("run needs a command after --, e.g. cortex-peer run -- echo hi")}
			}
			req, err := f.request(args)
			if err != nil {
				return UsageError{err}
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				return runTask(ctx, cmd, g, c, req)
			})
		},
	}
	fl := cmd.Flags()
	fl.SetInterspersed(false) // flags after the command belong to the command
	fl.StringVar(&f.image, "image", "", "image to run in (default: the peer's tasks.default_image)")
	fl.StringVar(&f.workspace, "workspace", "", "directory mounted at /workspace; the task's changes merge back into it")
	fl.StringVar(&f.workdir, "workdir", "", "working directory inside the task (default /workspace with a workspace, else /)")
	fl.StringArrayVar(&f.env, "env", nil, "environment variable K=V (repeatable)")
	fl.StringVar(&f.memory, "memory", "", "memory limit, e.g. 512M or 2G (no swap)")
	fl.StringVar(&f.tmp, "tmp", "", "size of the tmpfs at /tmp, e.g. 64M")
	fl.StringVar(&f.disk, "disk", "", "bound on what the task writes to /workspace, e.g. 1G (over it: killed, nothing merged)")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU limit in cores, e.g. 1.5")
	fl.Int64Var(&f.pids, "pids", 0, "most processes and threads at once")
	fl.DurationVar(&f.timeout, "timeout", 0, "kill the task after this long, e.g. 10m")
	fl.StringVar(&f.network, "network", "", "none (only loopback; default) or host (if the peer's policy allows)")
	fl.StringVar(&f.isolation, "isolation", "", "runc (default) or gvisor")
	fl.StringVar(&f.user, "user", "", "numeric uid to run as (default 65534)")
	fl.StringVar(&f.peer, "peer", "", "run on this peer (a peer id from cortex-peer peers)")
	fl.StringArrayVar(&f.labels, "label", nil, "run on a peer with this label k=v (repeatable)")
	fl.StringArrayVar(&f.require, "require", nil, "run on a peer with this capability: containerd, gvisor, chromium or gopls (repeatable)")
	fl.BoolVar(&f.detach, "detach", false, "print the task id once the task is submitted and return; see tasks, logs, result")
	fl.StringVar(&f.verify, "verify", "", "check the result with the workspace's language server before it merges: report, or block (refuse a result that adds errors)")
	fl.Lookup("verify").NoOptDefVal = "report"
	fl.BoolVar(&f.retry, "retry-on-drain", false, "place the task again (up to 3 times) if its executor is drained and hands it back")
	fl.StringArrayVar(&f.artifacts, "artifact", nil, "a path or glob under the workspace (out/app, 'logs/*.txt') returned by CID when the task ends, not merged (repeatable)")
	return cmd
}

func (f *runFlags) request(args []string) (*apiv1.RunRequest, error) {
	spec := &apiv1.TaskSpec{
		Image: f.image, Command: args, Env: f.env, Workdir: f.workdir,
		Network: f.network, Isolation: f.isolation, TimeoutMs: f.timeout.Milliseconds(),
		Limits: &apiv1.TaskLimits{Cpus: f.cpus, Pids: f.pids}, Artifacts: f.artifacts,
	}
	for _, e := range f.env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return nil, fmt.Errorf("--env %q: want K=V", e)
		}
	}
	var err error
	if spec.Limits.MemoryBytes, err = parseSize("--memory", f.memory); err != nil {
		return nil, err
	}
	if spec.Limits.DiskBytes, err = parseSize("--disk", f.disk); err != nil {
		return nil, err
	}
	if spec.Limits.TmpBytes, err = parseSize("--tmp", f.tmp); err != nil {
		return nil, err
	}
	if f.user != "" {
		uid, err := strconv.ParseUint(f.user, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--user %q: want a numeric uid", f.user)
		}
		u := uint32(uid)
		spec.Uid = &u
	}
	req := &apiv1.RunRequest{Spec: spec, Peer: f.peer, Require: f.require, Detach: f.detach, Verify: f.verify, RetryOnDrain: f.retry}
	for _, l := range f.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want k=v", l)
		}
		if req.Labels == nil {
			req.Labels = map[string]string{}
		}
		req.Labels[k] = v
	}
	if f.workspace != "" {
		if req.Workspace, err = filepath.Abs(f.workspace); err != nil {
			return nil, err
		}
	}
	return req, nil
}

// parseSize reads 512M, 2G, 100K or a byte count; empty is 0 (the default).
func parseSize(flag, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	num := strings.TrimSuffix(strings.ToUpper(s), "B")
	num = strings.TrimSuffix(num, "I")
	if n := len(num); n > 0 {
		switch num[n-1] {
		case 'K':
			mult, num = 1<<10, num[:n-1]
		case 'M':
			mult, num = 1<<20, num[:n-1]
		case 'G':
			mult, num = 1<<30, num[:n-1]
		case 'T':
			mult, num = 1<<40, num[:n-1]
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || v*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("%s %q: want a positive size like 512M or 2G", flag, s)
	}
	return int64(v * float64(mult)), nil
}

func runTask(ctx context.Context, cmd *cobra.Command, g *Globals, c *apiclient.Client, req *apiv1.RunRequest) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	if g.JSON {
		stdout = stderr
	}
	p := newProgress(g, stderr)
	var startedID, startedPeer string
	var received [2]uint64 // stdout, stderr bytes: checked against the result's counts
	res, err := c.Run(ctx, req, func(ev *apiv1.RunEvent) {
		switch e := ev.GetEvent().(type) {
		case *apiv1.RunEvent_Output:
			p.done()
			var w io.Writer = stdout
			n := &received[0]
			if e.Output.GetStream() == "stderr" {
				w, n = stderr, &received[1]
			}
			_, _ = w.Write(e.Output.GetData())
			*n += uint64(len(e.Output.GetData()))
		case *apiv1.RunEvent_Progress:
			p.update(e.Progress)
		case *apiv1.RunEvent_Started:
			p.done()
			startedID, startedPeer = e.Started.GetTaskId(), e.Started.GetPeerId()
		}
	})
	p.done()
	if err == nil && res == nil { // detached
		if g.JSON {
			return PrintJSON(cmd.OutOrStdout(), map[string]any{"task_id": startedID, "executor": startedPeer})
		}
		fmt.Fprintln(cmd.OutOrStdout(), startedID)
		return nil
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "cortex-peer: cancelled; the task was killed")
			return exitStatus{ExitCancelled}
		}
		if errors.Is(err, errdefs.ErrInvalid) {
			return Usage(err) // a spec the peer refused: the task never ran
		}
		return err
	}
	missing := apiclient.OutputMissing(res, received[0], received[1])
	if g.JSON {
		out := taskResultJSON(res)
		out["output_missing_bytes"] = missing
		if err := PrintJSON(cmd.OutOrStdout(), out); err != nil {
			return err
		}
	} else {
		printTaskEnd(stderr, res)
	}
	if missing > 0 {
		fmt.Fprintf(stderr, "cortex-peer: %s of the task's output never arrived here (got %s of %s); `cortex-peer logs %s` reads what its peers kept\n",
			formatBytes(missing), formatBytes(received[0]+received[1]), formatBytes(res.GetStdoutBytes()+res.GetStderrBytes()), res.GetTaskId())
	}
	if e := res.GetError(); e != "" && !g.JSON {
		// The task ran; what failed after it (the merge of its result, say)
		// must not hide how it ended.
		fmt.Fprintf(stderr, "cortex-peer: %s (the task exited with %d)\n", e, res.GetExitCode())
		return exitStatus{taskExitCode(res)}
	}
	if code := taskExitCode(res); code != 0 {
		return exitStatus{code}
	}
	if missing > 0 {
		return exitStatus{ExitError} // never 0 on output with holes: a script would take it whole
	}
	return nil
}

func taskExitCode(res *apiv1.TaskResult) int {
	switch {
	case res.GetTimedOut():
		return ExitTimedOut
	case res.GetCancelled():
		return ExitCancelled
	case res.GetError() != "" && res.GetExitCode() == 0:
		return ExitError
	}
	return int(res.GetExitCode())
}

// printTaskEnd tells on stderr how the task ended, when it is worth telling,
// and the merge report.
func printTaskEnd(w io.Writer, res *apiv1.TaskResult) {
	switch {
	case res.GetOomKilled() && res.GetSignal() == "":
		// The kernel killed a process of the task for memory, but not the
		// task's own: it went on and exited by itself.
		fmt.Fprintf(w, "cortex-peer: a process of task %s was killed: out of memory (peak %s); the task itself exited %d\n",
			res.GetTaskId(), formatBytes(res.GetPeakMemoryBytes()), res.GetExitCode())
	case res.GetOomKilled():
		fmt.Fprintf(w, "cortex-peer: task %s was killed: out of memory (peak %s)\n", res.GetTaskId(), formatBytes(res.GetPeakMemoryBytes()))
	case res.GetDiskLimitExceeded():
		fmt.Fprintf(w, "cortex-peer: task %s failed: disk limit exceeded (it wrote more to /workspace than --disk allows); nothing was merged\n", res.GetTaskId())
	case res.GetTimedOut():
		fmt.Fprintf(w, "cortex-peer: task %s timed out after %.1fs and was killed\n", res.GetTaskId(), res.GetDurationSeconds())
	case res.GetCancelled():
		fmt.Fprintf(w, "cortex-peer: task %s was cancelled\n", res.GetTaskId())
	case res.GetSignal() != "":
		fmt.Fprintf(w, "cortex-peer: task %s was killed by %s\n", res.GetTaskId(), res.GetSignal())
	}
	if d := res.GetLogDroppedBytes(); d > 0 {
		fmt.Fprintf(w, "cortex-peer: %s of output could not be kept in the peer's task log (disk full?): `logs` will not return it\n", formatBytes(d))
	}
	if v := res.GetVerify(); v != nil {
		fmt.Fprintf(w, "cortex-peer: verify: the result adds %d diagnostics (%d errors) and fixes %d\n", len(v.GetAdded()), v.GetAddedErrors(), len(v.GetFixed()))
		printDiagnostics(w, v.GetAdded())
	}
	for _, a := range res.GetArtifacts() {
		fmt.Fprintf(w, "cortex-peer: artifact %s: %s (%s; cortex-peer get %s -o %s)\n", a.GetPath(), a.GetCid(), formatBytes(a.GetBytes()), a.GetCid(), path.Base(a.GetPath()))
	}
	if rep := res.GetMerge(); rep != nil {
		printMergeReport(w, rep)
	}
}

func taskResultJSON(res *apiv1.TaskResult) map[string]any {
	out := map[string]any{
		"task_id": res.GetTaskId(), "exit_code": res.GetExitCode(), "signal": res.GetSignal(),
		"oom_killed": res.GetOomKilled(), "timed_out": res.GetTimedOut(), "cancelled": res.GetCancelled(),
		"disk_limit_exceeded": res.GetDiskLimitExceeded(),
		"cpu_seconds":         res.GetCpuSeconds(), "peak_memory_bytes": res.GetPeakMemoryBytes(),
		"duration_seconds": res.GetDurationSeconds(), "stdout_bytes": res.GetStdoutBytes(),
		"stderr_bytes": res.GetStderrBytes(), "log_dropped_bytes": res.GetLogDroppedBytes(),
		"base_root": res.GetBaseRoot(), "result_root": res.GetResultRoot(), "error": res.GetError(),
	}
	if rep := res.GetMerge(); rep != nil {
		out["merge"] = mergeReportJSON(rep)
	}
	arts := make([]map[string]any, 0, len(res.GetArtifacts()))
	for _, a := range res.GetArtifacts() {
		arts = append(arts, map[string]any{"path": a.GetPath(), "cid": a.GetCid(), "bytes": a.GetBytes()})
	}
	out["artifacts"] = arts
	if v := res.GetVerify(); v != nil {
		diags := func(ds []*apiv1.LSPDiagnostic) []map[string]any {
			list := make([]map[string]any, 0, len(ds))
			for _, d := range ds {
				list = append(list, map[string]any{"file": d.GetFile(), "line": d.GetLine(), "column": d.GetColumn(), "severity": d.GetSeverity(), "message": d.GetMessage()})
			}
			return list
		}
		out["verify"] = map[string]any{"added": diags(v.GetAdded()), "fixed": diags(v.GetFixed()), "added_errors": v.GetAddedErrors()}
	}
	return out
}

// ExitStatus makes the process exit with code, silently.
func ExitStatus(code int) error { return exitStatus{code} }
