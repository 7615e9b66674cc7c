package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// What a task does. Its output is deterministic, so that the soak knows
// every byte it must see: the workspace's seed.txt, then taskTicks batches
// of taskBatch lines a pause apart (about 25 s in all), then an END line.
// It then writes out/MARKER.txt and rewrites state.txt, which must merge
// back into the caller's directory.
const (
	taskTicks     = 30
	taskBatch     = 40
	taskPause     = "0.7"
	taskPad       = "the-quick-brown-fox-jumps-over-the-lazy-dog"
	taskFileLines = 300
	// taskTimeout bounds a task far above its 25 s, so that only a
	// stall of the mesh, never a slow machine, can reach it.
	taskTimeout = 5 * time.Minute
)

// taskScript runs as `sh -c taskScript MARKER`: $0 is the marker.
var taskScript = strings.Join([]string{
	`m=$0; cat seed.txt; i=1`,
	`while [ $i -le ` + strconv.Itoa(taskTicks) + ` ]; do j=1`,
	`  while [ $j -le ` + strconv.Itoa(taskBatch) + ` ]; do printf '%s %04d %02d %s\n' "$m" $i $j ` + taskPad + `; j=$((j+1)); done`,
	`  sleep ` + taskPause + `; i=$((i+1))`,
	`done`,
	`mkdir -p out; k=1`,
	`while [ $k -le ` + strconv.Itoa(taskFileLines) + ` ]; do echo "$m file line $k"; k=$((k+1)); done > out/$m.txt`,
	`echo "$m" > state.txt`,
	`echo "END $m"`,
}, "\n")

func seedContent(dir string) []byte {
	var b bytes.Buffer
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&b, "seed of %s, line %d\n", filepath.Base(dir), i)
	}
	return b.Bytes()
}

// expectedOutput is every byte the task marker prints in dir.
func expectedOutput(dir, marker string) []byte {
	var b bytes.Buffer
	b.Write(seedContent(dir))
	for i := 1; i <= taskTicks; i++ {
		for j := 1; j <= taskBatch; j++ {
			fmt.Fprintf(&b, "%s %04d %02d %s\n", marker, i, j, taskPad)
		}
	}
	fmt.Fprintf(&b, "END %s\n", marker)
	return b.Bytes()
}

func expectedFile(marker string) []byte {
	var b bytes.Buffer
	for k := 1; k <= taskFileLines; k++ {
		fmt.Fprintf(&b, "%s file line %d\n", marker, k)
	}
	return b.Bytes()
}

// Outcomes of a task, as the table counts them.
const (
	outDelivered    = "delivered to its run"
	outDeliveredCut = "run cut by a kill or freeze, result delivered after"
	outEndedByKill  = "ended by a kill, its true result delivered after restart"
	outNotSubmitted = "refused before submission (run said so)"
	outUnresolved   = "NO RESULT"
)

// taskRun is one task the soak submitted and what it saw of it.
type taskRun struct {
	n                    int
	marker, dir          string
	coord, exec, watcher *peer
	id                   string
	start, end           time.Time

	runCode    int
	runErr     string // the run's error when it printed no result
	runGot     int    // bytes of the task's output run printed
	runMissing uint64 // what run said never arrived

	states    map[string]bool // every state the coordinator reported
	final     taskInfo
	logBytes  int // the coordinator's kept log, read after the end
	outcome   string
	watch     string // how the logs -f watcher did
	watchGot  int
	mergedOK  bool
	logShort  bool // the kept log was short when the task ended
	logLate   bool // and complete at the end of the soak
	problems  []string
	expectLen int
}

func (t *taskRun) fail(format string, args ...any) {
	t.problems = append(t.problems, fmt.Sprintf(format, args...))
}

// taskWorker runs tasks one after the other in its own workspace until
// load ends. One worker's tasks never overlap, so that each merge's base
// is the directory the previous merge left; a task left without a result
// moves the worker to a fresh directory, so that its late merge cannot
// meet the next task's.
func (s *soak) taskWorker(load context.Context, w int) {
	gen := 1
	dir, err := s.newWorkspace(w, gen)
	if err != nil {
		s.finding("worker %d: %v", w, err)
		return
	}
	for load.Err() == nil && s.ctx.Err() == nil {
		t := s.runTask(dir)
		if t.outcome == outUnresolved {
			gen++
			if dir, err = s.newWorkspace(w, gen); err != nil {
				s.finding("worker %d: %v", w, err)
				return
			}
		}
	}
}

func (s *soak) newWorkspace(w, gen int) (string, error) {
	dir := filepath.Join(s.work, fmt.Sprintf("ws%d-%d", w, gen))
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o755); err != nil {
		return "", fmt.Errorf("workspace: %w", err)
	}
	files := map[string][]byte{
		"seed.txt":  seedContent(dir),
		"state.txt": []byte("init\n"),
		"data.bin":  randomBytes(256<<10, int64(w*1000+gen)),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return "", fmt.Errorf("workspace: %w", err)
		}
	}
	// The task runs as nobody and writes into its copy of the workspace,
	// not into this directory: the coordinator (root) merges it back.
	return dir, nil
}

type runEnd struct {
	r   result
	err error
}

// runTask runs one task from a random coordinator on another random peer,
// with a logs -f watcher on a third, and checks what came back.
func (s *soak) runTask(dir string) *taskRun {
	coord := s.pick()
	exec := s.pick(coord)
	t := &taskRun{dir: dir, coord: coord, exec: exec, start: time.Now(), states: map[string]bool{}}
	s.addTask(t)
	t.marker = fmt.Sprintf("soak-%04d", t.n)
	t.expectLen = len(expectedOutput(dir, t.marker))
	defer func() {
		t.end = time.Now()
		s.log.Info("task", "task", t.marker, "id", t.id, "coord", coord.name, "exec", exec.name, "outcome", t.outcome,
			"watcher", t.watch, "took", t.end.Sub(t.start).Round(time.Second), "problems", len(t.problems))
		for _, p := range t.problems {
			s.log.Warn("task problem", "task", t.marker, "id", t.id, "problem", p)
		}
	}()

	var wg sync.WaitGroup
	defer wg.Wait()
	runDone := make(chan runEnd, 1)
	wg.Go(func() {
		r, err := s.cli(s.ctx, runTimeout, "run", "--json", "--data", coord.dir, "--peer", exec.id, "--workspace", dir,
			"--timeout", taskTimeout.String(), "--", "sh", "-c", taskScript, t.marker)
		runDone <- runEnd{r, err}
	})
	// An edit of the caller's directory while the task runs: the merge
	// must keep it.
	local := filepath.Join(dir, "local-"+t.marker+".txt")
	if err := os.WriteFile(local, []byte("edited here while "+t.marker+" ran\n"), 0o644); err != nil {
		t.fail("local edit: %v", err)
	}

	// The watcher needs the task's id before run says it: the
	// coordinator's list has it as soon as the task is submitted.
	var end *runEnd
	for t.id == "" && end == nil {
		select {
		case e := <-runDone:
			end = &e
		case <-time.After(findPoll):
			if list, err := s.tasksOf(s.ctx, coord); err == nil {
				for _, ti := range list {
					if ti.marker() == t.marker {
						t.id = ti.TaskID
					}
				}
			}
		case <-s.ctx.Done():
			t.outcome = outUnresolved
			t.fail("soak cancelled")
			return t
		}
	}
	watchCtx, stopWatch := context.WithCancel(s.ctx)
	defer stopWatch()
	watchDone := make(chan runEnd, 1)
	if t.id != "" {
		t.watcher = s.pick(coord)
		wg.Go(func() {
			r, err := s.cli(watchCtx, runTimeout, "logs", "-f", "--data", t.watcher.dir, t.id)
			watchDone <- runEnd{r, err}
		})
	} else {
		close(watchDone)
	}
	if end == nil {
		e := <-runDone
		end = &e
	}
	s.judgeRun(t, *end)
	s.resolve(t)
	s.judgeOutput(t)
	if t.watcher != nil {
		s.judgeWatcher(t, watchDone, stopWatch)
	}
	if t.final.Result != nil {
		s.judgeMerge(t, local)
	}
	return t
}

// judgeRun reads what run printed: its JSON summary on stdout, the task's
// output on stderr (run --json sends it there), then run's own notes.
func (s *soak) judgeRun(t *taskRun, e runEnd) {
	t.runCode = e.r.code
	var res taskResult
	if e.err != nil || json.Unmarshal(e.r.stdout, &res) != nil || res.TaskID == "" {
		t.runErr = clip(strings.TrimSpace(string(e.r.stderr)), 200)
		if e.err != nil {
			t.runErr = e.err.Error()
		}
		if i := strings.LastIndex(t.runErr, "\n"); i >= 0 {
			t.runErr = t.runErr[i+1:]
		}
		return
	}
	if t.id == "" {
		t.id = res.TaskID
	}
	want := expectedOutput(t.dir, t.marker)
	got := e.r.stderr
	t.runGot = len(got)
	if clean(&res) && !bytes.HasPrefix(got, want) {
		t.fail("run printed %d bytes of output that are not the task's %d (first difference at byte %d)", len(got), len(want), firstDiff(got, want))
	}
	if clean(&res) {
		t.runGot = len(want)
	}
	t.runMissing = res.OutputMissing
	if res.OutputMissing > 0 {
		t.fail("run says %d bytes of output never arrived", res.OutputMissing)
	}
}

// resolve waits until the coordinator has the task's result: at once for
// a run that ended with it, after restarts for one a kill or a freeze cut.
func (s *soak) resolve(t *taskRun) {
	deadline := time.Now().Add(resolveWithin)
	for {
		if t.id == "" {
			// run failed before it said the id: the coordinator's list
			// knows whether the task was submitted at all.
			if list, err := s.tasksOf(s.ctx, t.coord); err == nil {
				for _, ti := range list {
					if ti.marker() == t.marker {
						t.id = ti.TaskID
					}
				}
				if t.id == "" && t.runErr != "" {
					t.outcome = outNotSubmitted
					return
				}
			}
		}
		if t.id != "" {
			if ti, err := s.taskOn(s.ctx, t.coord, t.id); err == nil {
				t.states[ti.State] = true
				t.final = ti
				if ti.Result != nil && ti.State != "running" && ti.State != "lost" {
					break
				}
			}
		}
		if time.Now().After(deadline) || s.ctx.Err() != nil {
			t.outcome = outUnresolved
			t.fail("no result on the coordinator %s within %s of the run's end (last state %q, %s)", t.coord.name, resolveWithin, t.final.State, t.final.Error)
			return
		}
		time.Sleep(resolvePoll)
	}
	r := t.final.Result
	switch {
	case clean(r) && t.runErr == "" && t.runCode == 0:
		t.outcome = outDelivered
	case clean(r):
		t.outcome = outDeliveredCut
	case s.chaos.killed(t.exec, t.start, time.Now()):
		// The executor's process died under the task: the result its
		// restart reports (killed, exited meanwhile, never started) is
		// the truth, and all a caller can ask for.
		t.outcome = outEndedByKill
	default:
		t.outcome = fmt.Sprintf("exit %d: %s", r.ExitCode, clip(r.Error, 120))
		t.fail("ended with exit %d (state %s) with no kill of its executor: %s", r.ExitCode, t.final.State, r.Error)
	}
}

// clean says whether a task ended by itself, with exit 0.
func clean(r *taskResult) bool { return r.ExitCode == 0 && r.Error == "" && r.Signal == "" }

// judgeOutput reads the coordinator's kept log of the task: all of the
// expected output for a task that ended by itself, a prefix of it for one
// a kill ended, and as long as the executor counted. A log still short is
// read again for mergeWithin, and once more at the end of the soak
// (recheckLog), before it counts as a hole.
func (s *soak) judgeOutput(t *taskRun) {
	if t.id == "" || t.final.Result == nil {
		return
	}
	want := expectedOutput(t.dir, t.marker)
	r := t.final.Result
	var out []byte
	var err error
	for deadline := time.Now().Add(mergeWithin); ; time.Sleep(resolvePoll) {
		out, err = s.ok(s.ctx, cliTimeout, "logs", "--data", t.coord.dir, t.id)
		if err == nil && r.StdoutBytes == uint64(len(out)) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.fail("logs on the coordinator: %v", err)
		return
	}
	t.logBytes = len(out)
	switch {
	case clean(r) && len(out) < len(want) && bytes.HasPrefix(want, out):
		t.logShort = true // judged by recheckLog at the end
	case clean(r) && !bytes.Equal(out, want):
		t.fail("the coordinator's log holds %d bytes that are not the task's %d (first difference at byte %d)", len(out), len(want), firstDiff(out, want))
	case !bytes.HasPrefix(want, out):
		t.fail("the coordinator's log of a task cut short is no prefix of its output (%d bytes, first difference at byte %d)", len(out), firstDiff(out, want))
	case r.StdoutBytes != uint64(len(out)):
		t.fail("the result counts %d stdout bytes, the coordinator's log holds %d", r.StdoutBytes, len(out))
	}
}

// recheckLog reads again, at the end of the soak, a kept log that was
// short when its task ended.
func (s *soak) recheckLog(ctx context.Context, t *taskRun) {
	out, err := s.ok(ctx, cliTimeout, "logs", "--data", t.coord.dir, t.id)
	want := expectedOutput(t.dir, t.marker)
	if err == nil && bytes.Equal(out, want) {
		t.logBytes = len(out)
		t.logLate = true
		return
	}
	t.fail("the coordinator's kept log holds %d of the task's %d bytes (the result counts %d), still at the end of the soak (%v); "+
		"logs from another peer, which asks the executor, had them all: %s", len(out), len(want), t.final.Result.StdoutBytes, err, t.watch)
}

// judgeWatcher compares what logs -f on another peer printed with the
// coordinator's log. A watcher cut by a kill or a freeze must have printed
// a prefix, and a plain logs on its peer afterwards must print the rest.
func (s *soak) judgeWatcher(t *taskRun, done <-chan runEnd, stop context.CancelFunc) {
	var e runEnd
	select {
	case e = <-done:
	case <-time.After(watchGrace):
		stop()
		e = <-done
		e.err = fmt.Errorf("still following %s after the task ended", watchGrace)
	}
	want := expectedOutput(t.dir, t.marker)
	if t.final.Result == nil || !clean(t.final.Result) {
		want = want[:min(t.logBytes, len(want))]
	}
	got := e.r.stdout
	t.watchGot = len(got)
	if len(want) == 0 && len(got) == 0 {
		// A task its executor lost before it printed anything: no peer
		// may know it any more, and there is nothing to follow.
		t.watch = "complete"
		return
	}
	if e.err == nil && e.r.code == 0 {
		if bytes.Equal(got, want) {
			t.watch = "complete"
			return
		}
		t.watch = "WRONG"
		t.fail("logs -f on %s ended by itself with %d bytes, want %d (first difference at byte %d)", t.watcher.name, len(got), len(want), firstDiff(got, want))
		return
	}
	cause := fmt.Sprint(e.err)
	if e.err == nil {
		cause = e.r.String()
	}
	if !bytes.HasPrefix(want, got) {
		t.watch = "WRONG"
		t.fail("logs -f on %s was cut (%s) after %d bytes that are no prefix of the output", t.watcher.name, cause, len(got))
		return
	}
	// The watcher's peer may be the one that was killed: the catch-up
	// waits for it like any client would.
	var out []byte
	var err error
	for deadline := time.Now().Add(resolveWithin); ; time.Sleep(resolvePoll) {
		if out, err = s.ok(s.ctx, cliTimeout, "logs", "--data", t.watcher.dir, t.id); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err == nil && bytes.Equal(out, want) {
		t.watch = "cut, caught up"
		s.log.Info("watcher cut", "task", t.marker, "peer", t.watcher.name, "after", len(got), "cause", clip(cause, 200))
		return
	}
	t.watch = "WRONG"
	t.fail("logs -f on %s was cut (%s) after %d bytes; logs there afterwards: %d bytes, want %d (%v)", t.watcher.name, cause, len(got), len(out), len(want), err)
}

// judgeMerge checks the caller's directory after the result merged: the
// task's file and state, the local edit kept, no conflict.
func (s *soak) judgeMerge(t *taskRun, local string) {
	r := t.final.Result
	before := len(t.problems) // the merge's own problems decide mergedOK
	if r.Merge != nil && len(r.Merge.Conflicts) > 0 {
		t.fail("the merge reported %d conflicts: %+v", len(r.Merge.Conflicts), r.Merge.Conflicts)
	}
	if b, err := os.ReadFile(local); err != nil || !bytes.HasPrefix(b, []byte("edited here while")) {
		t.fail("the local edit %s did not survive the merge (%v)", filepath.Base(local), err)
	}
	if theirs := theirsFiles(t.dir); len(theirs) > 0 {
		t.fail("conflict copies in the workspace: %v", theirs)
	}
	if !clean(r) {
		t.mergedOK = len(t.problems) == before
		return
	}
	// The coordinator merges before it records the result delivered; a
	// merge it makes on its own after a restart may trail the record.
	var check error
	for deadline := time.Now().Add(mergeWithin); ; time.Sleep(resolvePoll) {
		check = checkMerged(t.dir, t.marker)
		if check == nil || time.Now().After(deadline) {
			break
		}
	}
	if check != nil {
		t.fail("merge: %v", check)
		return
	}
	t.mergedOK = len(t.problems) == before
}

func checkMerged(dir, marker string) error {
	b, err := os.ReadFile(filepath.Join(dir, "out", marker+".txt"))
	if err != nil {
		return fmt.Errorf("out/%s.txt not merged back: %w", marker, err)
	}
	if !bytes.Equal(b, expectedFile(marker)) {
		return fmt.Errorf("out/%s.txt merged back with %d bytes, want %d", marker, len(b), len(expectedFile(marker)))
	}
	st, err := os.ReadFile(filepath.Join(dir, "state.txt"))
	if err != nil || string(st) != marker+"\n" {
		return fmt.Errorf("state.txt is %q after the merge, want %q (%v)", st, marker+"\n", err)
	}
	return nil
}

func theirsFiles(dir string) []string {
	var found []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".theirs") {
			found = append(found, strings.TrimPrefix(path, dir+"/"))
		}
		return nil
	})
	return found
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
