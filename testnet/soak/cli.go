package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// result is what one invocation of the client binary did.
type result struct {
	stdout, stderr []byte
	code           int // -1 when it did not exit by itself (killed, timed out)
}

func (r result) String() string {
	return fmt.Sprintf("exit %d: %s", r.code, clip(strings.TrimSpace(string(r.stderr)), 300))
}

// cli runs the client binary with args, bounded by within, and returns what
// it printed. err is set only when it could not start or did not exit by
// itself; a non-zero exit is in result.code, for the caller to judge.
func (s *soak) cli(ctx context.Context, within time.Duration, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.cfg.bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// A soak killed midway takes its clients with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	r := result{stdout: out.Bytes(), stderr: errOut.Bytes(), code: -1}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return r, nil
	case ctx.Err() != nil:
		return r, fmt.Errorf("%s %s: no end within %s: %w", filepath.Base(s.cfg.bin), args[0], within, ctx.Err())
	case errors.As(err, &ee) && r.code >= 0:
		return r, nil
	default:
		return r, fmt.Errorf("%s %s: %w", filepath.Base(s.cfg.bin), args[0], err)
	}
}

// ok runs the client and wants exit 0.
func (s *soak) ok(ctx context.Context, within time.Duration, args ...string) ([]byte, error) {
	r, err := s.cli(ctx, within, args...)
	if err != nil {
		return nil, err
	}
	if r.code != 0 {
		return r.stdout, fmt.Errorf("%s: %s", strings.Join(args[:min(len(args), 2)], " "), r)
	}
	return r.stdout, nil
}

// taskInfo is `cortex-peer result --json` and an entry of `tasks --json`.
type taskInfo struct {
	TaskID   string      `json:"task_id"`
	State    string      `json:"state"`
	Executor string      `json:"executor"`
	Command  []string    `json:"command"`
	Error    string      `json:"error"`
	Result   *taskResult `json:"result"`
}

// taskResult is a task's result as the CLI prints it (run --json too).
type taskResult struct {
	TaskID        string       `json:"task_id"`
	ExitCode      int          `json:"exit_code"`
	Signal        string       `json:"signal"`
	TimedOut      bool         `json:"timed_out"`
	Cancelled     bool         `json:"cancelled"`
	StdoutBytes   uint64       `json:"stdout_bytes"`
	StderrBytes   uint64       `json:"stderr_bytes"`
	Error         string       `json:"error"`
	BaseRoot      string       `json:"base_root"`
	ResultRoot    string       `json:"result_root"`
	Merge         *mergeReport `json:"merge"`
	OutputMissing uint64       `json:"output_missing_bytes"`
}

type mergeReport struct {
	Applied   []string `json:"applied"`
	Merged    []string `json:"merged"`
	Conflicts []struct {
		Path   string `json:"path"`
		Reason string `json:"reason"`
	} `json:"conflicts"`
}

// marker is the last word of a task's command: the soak's name for it,
// which finds its record on the coordinator before run has said its id.
func (t taskInfo) marker() string {
	if len(t.Command) == 0 {
		return ""
	}
	return t.Command[len(t.Command)-1]
}

func (s *soak) tasksOf(ctx context.Context, p *peer) ([]taskInfo, error) {
	out, err := s.ok(ctx, cliTimeout, "tasks", "--json", "--data", p.dir)
	if err != nil {
		return nil, err
	}
	var list []taskInfo
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("tasks --json of %s: %w", p.name, err)
	}
	return list, nil
}

// taskOn is the coordinator's record of task id; result exits 1 while the
// task has no result, so only its JSON counts.
func (s *soak) taskOn(ctx context.Context, p *peer, id string) (taskInfo, error) {
	r, err := s.cli(ctx, cliTimeout, "result", "--json", "--data", p.dir, id)
	if err != nil {
		return taskInfo{}, err
	}
	var t taskInfo
	if err := json.Unmarshal(r.stdout, &t); err != nil {
		return taskInfo{}, fmt.Errorf("result %s on %s: %s", id, p.name, r)
	}
	return t, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
