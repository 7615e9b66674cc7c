package delegation_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	meshv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/mesh/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// mesh3 starts three peers whose tasks run in the test namespace, waits
// until they see each other, and returns a client of each.
func mesh3(t *testing.T, opts ...testnet.Option) (*testnet.Net, []*apiclient.Client) {
	t.Helper()
	tn := testnet.New(t, 3, opts...)
	if err := tn.WaitMesh(testnet.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	return tn, tn.Clients(t)
}

// A task submitted on peer 1 for peer 2 runs there: its output arrives at
// peer 1's caller live and complete, its workspace comes back merged
// without touching an edit made meanwhile, and peer 1 keeps its record and
// log.
func TestDelegatedRunWithWorkspace(t *testing.T) {
	tn, cs := mesh3(t)
	ctx := testnet.Context(t, 2*time.Minute)
	ws := t.TempDir()
	for name, body := range map[string]string{"in.txt": "hello\n", "mine.txt": "one\ntwo\nthree\n", "empty": ""} {
		if err := os.WriteFile(filepath.Join(ws, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const lines = 100000
	script := fmt.Sprintf(`tr a-z A-Z < in.txt > out.txt; sed -i 's/three/THREE/' mine.txt; `+
		`i=1; while [ $i -le %d ]; do echo "line $i"; i=$((i+1)); done; echo done >&2; touch edited-marker; sleep 1`, lines)
	exec := tn.Peers[1].Node.ID().String()
	var got testnet.RunEvents
	got.StartedCh = make(chan struct{})
	go func() {
		// The user edits line 1 of mine.txt while the task runs.
		<-got.StartedCh
		_ = os.WriteFile(filepath.Join(ws, "mine.txt"), []byte("ONE\ntwo\nthree\n"), 0o644)
	}()
	res, err := cs[0].Run(ctx, &apiv1.RunRequest{
		Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", script}}, Workspace: ws, Peer: exec,
	}, got.Event)
	if err != nil {
		t.Fatal(err)
	}
	if got.Started.GetPeerId() != exec {
		t.Fatalf("ran on %s, want %s", got.Started.GetPeerId(), exec)
	}
	if res.GetExitCode() != 0 || res.GetError() != "" {
		t.Fatalf("result %+v", res)
	}
	sc := bufio.NewScanner(strings.NewReader(got.Stdout.String()))
	n := 0
	for sc.Scan() {
		n++
		if want := fmt.Sprintf("line %d", n); sc.Text() != want {
			t.Fatalf("stdout line %d is %q, want %q", n, sc.Text(), want)
		}
	}
	if n != lines || got.Stderr.String() != "done\n" {
		t.Fatalf("%d lines (want %d), stderr %q", n, lines, got.Stderr.String())
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "out.txt")); string(b) != "HELLO\n" {
		t.Fatalf("out.txt %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "mine.txt")); string(b) != "ONE\ntwo\nTHREE\n" {
		t.Fatalf("mine.txt %q: want both edits merged", b)
	}
	if res.GetMerge() == nil || len(res.GetMerge().GetConflicts()) != 0 {
		t.Fatalf("merge report %+v", res.GetMerge())
	}

	// The coordinator remembers it, and its log, across a restart.
	if err := tn.Peers[0].Restart(); err != nil {
		t.Fatal(err)
	}
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := c.GetTask(ctx, res.GetTaskId())
	if err != nil || info.GetState() != "delivered" || info.GetExecutor() != exec || info.GetResult().GetResultRoot() != res.GetResultRoot() {
		t.Fatalf("task after restart: %+v, %v", info, err)
	}
	var logged strings.Builder
	if err := c.Logs(ctx, res.GetTaskId(), false, func(ch *apiv1.OutputChunk) {
		if ch.GetStream() == "stdout" {
			logged.WriteString(string(ch.GetData()))
		}
	}); err != nil {
		t.Fatal(err)
	}
	if logged.String() != got.Stdout.String() {
		t.Fatalf("logs: %d bytes, live: %d bytes", logged.Len(), got.Stdout.Len())
	}
	list, err := c.ListTasks(ctx)
	if err != nil || len(list) != 1 || list[0].GetTaskId() != res.GetTaskId() {
		t.Fatalf("tasks: %v, %v", list, err)
	}
}

// Placement: labels and capabilities pick the peer, and a request no peer
// can meet says what each lacked.
func TestPlacement(t *testing.T) {
	_, cs := mesh3(t)
	ctx := testnet.Context(t, time.Minute)
	var got testnet.RunEvents
	res, err := cs[0].Run(ctx, &apiv1.RunRequest{
		Spec:   &apiv1.TaskSpec{Command: []string{"echo", "hi"}},
		Labels: map[string]string{"testnet": "peer3"},
	}, got.Event)
	if err != nil || res.GetExitCode() != 0 || got.Stdout.String() != "hi\n" {
		t.Fatalf("label run: %+v, %v, %q", res, err, got.Stdout.String())
	}
	peers, err := cs[2].Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Started.GetPeerId() != peers.GetId() {
		t.Fatalf("label testnet=peer3 ran on %s, want %s", got.Started.GetPeerId(), peers.GetId())
	}
	_, err = cs[0].Run(ctx, &apiv1.RunRequest{
		Spec:   &apiv1.TaskSpec{Command: []string{"true"}},
		Labels: map[string]string{"gpu": "true"},
	}, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "gpu") {
		t.Fatalf("impossible placement: %v", err)
	}
	_, err = cs[0].Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"true"}}, Require: []string{"quantum"}}, nil)
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("unknown capability: %v", err)
	}
}

// startDetached submits `echo up; sleep 600` through c to the peer exec,
// detached, and returns its id once logs -f has shown its first line: the
// task runs (one cancelled while its process starts ends failed, not
// cancelled).
func startDetached(ctx context.Context, t *testing.T, c *apiclient.Client, exec string) string {
	t.Helper()
	var got testnet.RunEvents
	res, err := c.Run(ctx, &apiv1.RunRequest{
		Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", "echo up; sleep 600"}}, Peer: exec, Detach: true,
	}, got.Event)
	if err != nil || res != nil || got.Started == nil {
		t.Fatalf("detached run: %+v, %v, started %v", res, err, got.Started)
	}
	id := got.Started.GetTaskId()
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	seen := make(chan string, 1)
	go func() {
		_ = c.Logs(lctx, id, true, func(ch *apiv1.OutputChunk) {
			select {
			case seen <- string(ch.GetData()):
			default:
			}
		})
	}()
	select {
	case line := <-seen:
		if line != "up\n" {
			t.Fatalf("first logged output %q", line)
		}
	case <-ctx.Done():
		t.Fatal("no output from logs -f")
	}
	return id
}

// Detached runs go on without the caller; cancel reaches the executor and
// kills the container.
func TestDetachAndCancel(t *testing.T) {
	tn, cs := mesh3(t)
	ctx := testnet.Context(t, 2*time.Minute)
	id := startDetached(ctx, t, cs[0], tn.Peers[2].Node.ID().String())
	if err := cs[0].CancelTask(ctx, id); err != nil {
		t.Fatal(err)
	}
	// One state and one exit code for a cancelled task, everywhere: the
	// record says cancelled (not delivered) and the result 130, as run's
	// own exit status does.
	testnet.Eventually(t, "cancelled task to be delivered", time.Minute, func() bool {
		info, err := cs[0].GetTask(ctx, id)
		return err == nil && info.GetResult().GetCancelled()
	})
	if info, err := cs[0].GetTask(ctx, id); err != nil || info.GetState() != "cancelled" || info.GetResult().GetExitCode() != 130 {
		t.Fatalf("cancelled task: state %q, exit %d (%v); want cancelled, 130", info.GetState(), info.GetResult().GetExitCode(), err)
	}
	if n := tn.Peers[2].Node.RunningTasks(); n != 0 {
		t.Fatalf("%d tasks still running on the executor", n)
	}
}

// Hostile input on the task protocol gets a clear refusal and changes
// nothing: garbage, an oversized message, a result for an unknown task, a
// result for a task from a peer that is not its executor.
func TestTaskProtocolRefusesBadInput(t *testing.T) {
	tn, _ := mesh3(t)
	ctx := testnet.Context(t, time.Minute)
	victim := tn.Peers[0].Node
	attacker := tn.Peers[1].Node.Host().Libp2p()
	send := func(raw []byte) *meshv1.TaskReply {
		t.Helper()
		s, err := attacker.NewStream(ctx, victim.ID(), libp2pproto.ID(protocol.TaskProtocol))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Write(raw); err != nil {
			t.Fatal(err)
		}
		_ = s.CloseWrite()
		var reply meshv1.TaskReply
		if err := protocol.ReadDelimited(bufio.NewReader(s), &reply, protocol.MaxTaskMessage); err != nil {
			return nil
		}
		return &reply
	}
	if r := send([]byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff}); r == nil || r.GetCode() != meshv1.ReplyCode_REPLY_CODE_INVALID {
		t.Errorf("garbage: %v", r)
	}
	if r := send([]byte{0xff, 0xff, 0xff, 0x7f}); r == nil || r.GetCode() != meshv1.ReplyCode_REPLY_CODE_INVALID {
		t.Errorf("oversized: %v", r)
	}
	deliver := func(id string) *meshv1.TaskReply {
		var b strings.Builder
		req := &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Deliver{Deliver: &meshv1.DeliverResult{Result: &meshv1.TaskResult{TaskId: id}}}}
		if err := protocol.WriteDelimited(&b, req, protocol.MaxTaskMessage); err != nil {
			t.Fatal(err)
		}
		return send([]byte(b.String()))
	}
	if r := deliver("tnosuchtask"); r == nil || r.GetCode() != meshv1.ReplyCode_REPLY_CODE_UNKNOWN_TASK {
		t.Errorf("unknown task: %v", r)
	}
	if r := deliver("../../etc"); r == nil || r.GetCode() != meshv1.ReplyCode_REPLY_CODE_INVALID {
		t.Errorf("bad id: %v", r)
	}
	probe := func(cids [][]byte) *meshv1.TaskReply {
		var b strings.Builder
		req := &meshv1.TaskRequest{Request: &meshv1.TaskRequest_Probe{Probe: &meshv1.ProbeBlocks{Cids: cids}}}
		if err := protocol.WriteDelimited(&b, req, protocol.MaxTaskMessage); err != nil {
			t.Fatal(err)
		}
		return send([]byte(b.String()))
	}
	if r := probe([][]byte{[]byte("not a cid")}); r == nil || r.GetCode() != meshv1.ReplyCode_REPLY_CODE_INVALID {
		t.Errorf("probe of a bad cid: %v", r)
	}
	if r := probe(make([][]byte, 300)); r == nil || r.GetCode() != meshv1.ReplyCode_REPLY_CODE_INVALID {
		t.Errorf("probe of 300 blocks: %v", r)
	}
	// A task of peer 1 that runs on peer 3: peer 2 cannot deliver its result.
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got testnet.RunEvents
	if _, err := c.Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"sleep", "30"}}, Peer: tn.Peers[2].Node.ID().String(), Detach: true}, got.Event); err != nil {
		t.Fatal(err)
	}
	id := got.Started.GetTaskId()
	if r := deliver(id); r == nil || r.GetCode() != meshv1.ReplyCode_REPLY_CODE_NOT_YOURS {
		t.Errorf("forged result: %v", r)
	}
	if info, err := c.GetTask(ctx, id); err != nil || info.GetResult() != nil {
		t.Errorf("forged result was taken: %+v, %v", info, err)
	}
	_ = c.CancelTask(ctx, id)
}

// An executor that goes away mid-task leaves the task lost on its
// coordinator after lost_after, never "running"; when it comes back, it
// delivers what it knows (the task was cut short) and nothing runs on.
func TestExecutorGoneMarksTaskLost(t *testing.T) {
	tn, cs := mesh3(t, testnet.WithConfig(func(i int, cfg *node.Config) {
		cfg.Delegation.LostAfter = 2 * time.Second
	}))
	ctx := testnet.Context(t, 2*time.Minute)
	exec := tn.Peers[2]
	var got testnet.RunEvents
	if _, err := cs[0].Run(ctx, &apiv1.RunRequest{
		Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", "echo up; sleep 600"}}, Peer: exec.Node.ID().String(), Detach: true,
	}, got.Event); err != nil {
		t.Fatal(err)
	}
	id := got.Started.GetTaskId()
	testnet.Eventually(t, "the task to run", 30*time.Second, func() bool { return exec.Node.RunningTasks() == 1 })
	if err := exec.Node.Close(); err != nil {
		t.Fatal(err)
	}
	var info *apiv1.TaskInfo
	testnet.Eventually(t, "the task to be marked lost", 30*time.Second, func() bool {
		var err error
		info, err = cs[0].GetTask(ctx, id)
		return err == nil && info.GetState() == "lost"
	})
	if !strings.Contains(info.GetError(), "could not be reached") {
		t.Fatalf("lost task error %q", info.GetError())
	}
	// The executor comes back and delivers: the task was cut short.
	if err := exec.Restart(); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, "the returning executor's word on the task", 30*time.Second, func() bool {
		info, err := cs[0].GetTask(ctx, id)
		return err == nil && info.GetResult() != nil
	})
	if n := exec.Node.RunningTasks(); n != 0 {
		t.Fatalf("%d tasks running on the restarted executor", n)
	}
}

// BenchmarkDelegation measures a task submitted on peer 1 that runs on
// peer 2 of a 3-peer loopback testnet, through peer 1's local API:
//
//	first-output: Run called to the first output line of `echo hi` (no
//	  workspace; the image is on the executor). ns/op is that latency.
//	log-latency: a task writes 1,000 lines at about 1,000 lines/s; each
//	  line's latency is its arrival at the API client minus the time the
//	  executor read it from the task. Reports p50-ms and p99-ms.
//	throughput: 256 MiB of dd output through gossip, the relay and the
//	  API, counted; MB/s.
func BenchmarkDelegation(b *testing.B) {
	tn := testnet.New(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := tn.WaitMesh(ctx); err != nil {
		b.Fatal(err)
	}
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	executor := tn.Peers[1].Node.ID().String()
	run := func(spec *apiv1.TaskSpec, fn func(*apiv1.RunEvent)) *apiv1.TaskResult {
		res, err := c.Run(ctx, &apiv1.RunRequest{Spec: spec, Peer: executor}, fn)
		if err != nil || res.GetExitCode() != 0 {
			b.Fatalf("%+v %v", res, err)
		}
		return res
	}
	b.Run("ctr-run", benchCtrFirstOutput)
	b.Run("first-output", func(b *testing.B) {
		var firsts []time.Duration
		for b.Loop() {
			start := time.Now()
			var first time.Duration
			run(&apiv1.TaskSpec{Command: []string{"echo", "hi"}}, func(ev *apiv1.RunEvent) {
				if _, ok := ev.GetEvent().(*apiv1.RunEvent_Output); ok && first == 0 {
					first = time.Since(start)
				}
			})
			if first == 0 {
				b.Fatal("no output")
			}
			firsts = append(firsts, first)
		}
		reportMedian(b, firsts, "first-ms")
	})
	b.Run("log-latency", func(b *testing.B) {
		var lat []time.Duration
		for b.Loop() {
			run(&apiv1.TaskSpec{Command: []string{"sh", "-c", `i=1; while [ $i -le 1000 ]; do echo "line $i"; i=$((i+1)); usleep 1000; done`}},
				func(ev *apiv1.RunEvent) {
					if o, ok := ev.GetEvent().(*apiv1.RunEvent_Output); ok {
						lat = append(lat, time.Since(o.Output.GetTime().AsTime()))
					}
				})
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	})
	b.Run("throughput", func(b *testing.B) {
		const size = 256 << 20
		b.SetBytes(size)
		for b.Loop() {
			var n int64
			run(&apiv1.TaskSpec{Command: []string{"dd", "if=/dev/zero", "bs=1048576", "count=256"}}, func(ev *apiv1.RunEvent) {
				if o, ok := ev.GetEvent().(*apiv1.RunEvent_Output); ok && o.Output.GetStream() == "stdout" {
					n += int64(len(o.Output.GetData()))
				}
			})
			if n != size {
				b.Fatalf("got %d bytes, want %d", n, size)
			}
		}
	})
}

// benchCtrFirstOutput is the baseline of first-output: containerd's own
// CLI running `echo hi` in the same image, to its first output byte.
func benchCtrFirstOutput(b *testing.B) {
	var firsts []time.Duration
	defer func() { reportMedian(b, firsts, "first-ms") }()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		cmd := exec.Command("ctr", "-n", testnet.TestNamespace, "run", "--rm", "cortex/busybox:test",
			fmt.Sprintf("bench-ctr-%d-%d", os.Getpid(), i), "echo", "hi")
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatalf("ctr (make deps installs it): %v", err)
		}
		buf := make([]byte, 16)
		if n, err := out.Read(buf); err != nil || string(buf[:n]) != "hi\n" {
			b.Fatalf("ctr first read %q, %v", buf[:n], err)
		}
		firsts = append(firsts, time.Since(start))
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
	}
}

// reportMedian reports the median of ds in milliseconds as unit.
func reportMedian(b *testing.B, ds []time.Duration, unit string) {
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	b.ReportMetric(float64(s[len(s)/2].Microseconds())/1000, unit)
}

// A peer that is not the executor cannot inject output into a task's log:
// its chunks are refused by the coordinator's topic validator.
func TestForgedLogChunksRefused(t *testing.T) {
	tn, cs := mesh3(t)
	ctx := testnet.Context(t, time.Minute)
	var got testnet.RunEvents
	got.StartedCh = make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := cs[0].Run(ctx, &apiv1.RunRequest{
			Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", "echo real; sleep 2; echo end"}}, Peer: tn.Peers[2].Node.ID().String(),
		}, got.Event)
		done <- err
	}()
	<-got.StartedCh
	id := got.Started.GetTaskId()
	forger := tn.Peers[1].Node.Host()
	topic, err := forger.Join(protocol.LogTopicPrefix+id, protocol.MaxLogChunkMessage, func(peer.ID, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer topic.Close()
	for seq := uint64(1); seq <= 5; seq++ {
		b, _ := proto.Marshal(&meshv1.LogChunk{TaskId: id, Stream: 1, Seq: seq, TimeUnixNs: time.Now().UnixNano(), Data: []byte("forged\n")})
		_ = topic.Publish(ctx, b)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := got.Stdout.String(); s != "real\nend\n" {
		t.Fatalf("stdout %q: forged chunks got through", s)
	}
}

// The coordinator restarts while its task runs elsewhere: the record
// survives, the executor delivers the result when it can, and `result`
// answers.
func TestCoordinatorRestartKeepsTask(t *testing.T) {
	tn, cs := mesh3(t)
	ctx := testnet.Context(t, 2*time.Minute)
	ws := t.TempDir()
	if err := os.WriteFile(filepath.Join(ws, "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var got testnet.RunEvents
	if _, err := cs[0].Run(ctx, &apiv1.RunRequest{
		Spec:      &apiv1.TaskSpec{Command: []string{"sh", "-c", "sleep 2; echo b > b.txt; echo finished"}},
		Workspace: ws, Peer: tn.Peers[1].Node.ID().String(), Detach: true,
	}, got.Event); err != nil {
		t.Fatal(err)
	}
	id := got.Started.GetTaskId()
	if err := tn.Peers[0].Restart(); err != nil {
		t.Fatal(err)
	}
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var info *apiv1.TaskInfo
	testnet.Eventually(t, "the result after the coordinator's restart", time.Minute, func() bool {
		info, err = c.GetTask(ctx, id)
		return err == nil && info.GetState() == "delivered"
	})
	if info.GetResult().GetExitCode() != 0 {
		t.Fatalf("result %+v", info.GetResult())
	}
	testnet.Eventually(t, "the result merged into the workspace", 30*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(ws, "b.txt"))
		return err == nil && string(b) == "b\n"
	})
}

// An executor that lacks the task's image tries to pull it; when that
// fails, the task fails with an error naming the image and the peer.
func TestDelegatedMissingImage(t *testing.T) {
	tn, cs := mesh3(t)
	ctx := testnet.Context(t, time.Minute)
	exec := tn.Peers[1].Node.ID().String()
	const img = "127.0.0.1:1/cortex/no-such-image:1"
	_, err := cs[0].Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Image: img, Command: []string{"true"}}, Peer: exec}, nil)
	if err == nil || !strings.Contains(err.Error(), img) || !strings.Contains(err.Error(), exec) {
		t.Fatalf("missing image: %v", err)
	}
	list, err := cs[0].ListTasks(ctx)
	if err != nil || len(list) != 1 || list[0].GetState() != "failed" {
		t.Fatalf("tasks: %v, %v", list, err)
	}
}

// A partition between coordinator and executor while the task runs: the
// task ends on the executor, which cannot deliver; when the link heals the
// result arrives exactly once and is merged, and the output is whole.
func TestPartitionDuringTask(t *testing.T) {
	tn, cs := mesh3(t)
	ctx := testnet.Context(t, 2*time.Minute)
	coord, exec := tn.Peers[0], tn.Peers[1]
	ws := t.TempDir()
	if err := os.WriteFile(filepath.Join(ws, "in.txt"), []byte("before\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The task waits for the partition (a file the test cannot write into
	// the sandbox, so it just sleeps), then writes while cut off.
	script := `echo start; sleep 2; for i in $(seq 1 500); do echo "late $i"; done; echo after > in.txt; echo end`
	var mu sync.Mutex
	var stdout strings.Builder
	started := make(chan struct{})
	var once sync.Once
	type outcome struct {
		res *apiv1.TaskResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := cs[0].Run(ctx, &apiv1.RunRequest{
			Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", script}}, Workspace: ws, Peer: exec.Node.ID().String(),
		}, func(ev *apiv1.RunEvent) {
			if o := ev.GetOutput(); o != nil && o.GetStream() == "stdout" {
				mu.Lock()
				stdout.Write(o.GetData())
				mu.Unlock()
				once.Do(func() { close(started) })
			}
		})
		done <- outcome{res, err}
	}()
	select {
	case <-started:
	case out := <-done:
		t.Fatalf("run ended before its first line: %+v %v", out.res, out.err)
	case <-ctx.Done():
		t.Fatal("no output")
	}
	tn.Partition(coord, exec)
	if coord.Node.Host().IsConnected(exec.Node.ID()) {
		t.Fatal("still connected after the partition")
	}
	// The task ends on the executor while the link is down; give the
	// executor time to try delivering and fail.
	testnet.Eventually(t, "the task to end on the executor", 30*time.Second, func() bool { return exec.Node.RunningTasks() == 0 })
	time.Sleep(time.Second)
	select {
	case out := <-done:
		t.Fatalf("run ended during the partition: %+v %v", out.res, out.err)
	default:
	}
	if err := tn.Heal(ctx, coord, exec); err != nil {
		t.Fatal(err)
	}
	out := <-done
	if out.err != nil || out.res.GetExitCode() != 0 {
		t.Fatalf("after heal: %+v %v", out.res, out.err)
	}
	want := "start\n"
	for i := 1; i <= 500; i++ {
		want += fmt.Sprintf("late %d\n", i)
	}
	want += "end\n"
	mu.Lock()
	got := stdout.String()
	mu.Unlock()
	if got != want {
		t.Fatalf("stdout after the partition: %d bytes, want %d:\n%s", len(got), len(want), got)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "in.txt")); string(b) != "after\n" {
		t.Fatalf("in.txt %q: the result was not merged", b)
	}
	// Exactly once: the user edits the merged file; a second delivery or
	// merge would leave a conflict copy beside it or change it.
	if err := os.WriteFile(filepath.Join(ws, "in.txt"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	entries, _ := os.ReadDir(ws)
	if b, _ := os.ReadFile(filepath.Join(ws, "in.txt")); string(b) != "mine\n" || len(entries) != 1 {
		t.Fatalf("in.txt %q, %d entries: the result was applied twice", b, len(entries))
	}
	info, err := cs[0].GetTask(ctx, out.res.GetTaskId())
	if err != nil || info.GetState() != "delivered" {
		t.Fatalf("task %+v %v", info, err)
	}
}

// Placement prefers the peer that already holds the workspace's blocks,
// and heartbeats tell which images each peer holds.
func TestPlacementPrefersWorkspaceHolder(t *testing.T) {
	// Peers 2 and 3 are the pool; peer 1 only coordinates.
	tn, cs := mesh3(t, testnet.WithConfig(func(i int, cfg *node.Config) {
		if i > 0 {
			cfg.Labels["pool"] = "workers"
		}
	}))
	ctx := testnet.Context(t, 2*time.Minute)
	ws := t.TempDir()
	for i := range 50 {
		if err := os.WriteFile(filepath.Join(ws, fmt.Sprintf("f%02d.txt", i)), []byte(strings.Repeat(fmt.Sprintf("file %d\n", i), 500)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	third := tn.Peers[2].Node.ID().String()
	// A first task puts the workspace on peer 3.
	if _, err := cs[0].Run(ctx, &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: []string{"true"}}, Workspace: ws, Peer: third}, nil); err != nil {
		t.Fatal(err)
	}
	// Peer 2 is as idle as peer 3, but lacks the blocks; peer 3 is chosen,
	// again and again.
	idle := func() bool {
		peers, err := cs[0].Peers(ctx, false)
		if err != nil {
			return false
		}
		for _, p := range peers {
			if p.GetCapacity().GetRunningTasks() != 0 {
				return false
			}
		}
		return true
	}
	for range 3 {
		// As idle as each other, in the heartbeats too.
		testnet.Eventually(t, "the heartbeats to show the workers idle", 10*time.Second, idle)
		var got testnet.RunEvents
		if _, err := cs[0].Run(ctx, &apiv1.RunRequest{
			Spec: &apiv1.TaskSpec{Command: []string{"true"}}, Workspace: ws, Labels: map[string]string{"pool": "workers"},
		}, got.Event); err != nil {
			t.Fatal(err)
		}
		if got.Started.GetPeerId() != third {
			t.Fatalf("ran on %s, want %s (it holds the workspace)", got.Started.GetPeerId(), third)
		}
	}
	peers, err := cs[0].Peers(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if !slices.ContainsFunc(p.GetImages(), func(s string) bool { return strings.HasSuffix(s, "cortex/busybox:test") }) {
			t.Fatalf("peer %s lists images %v, want the test image", p.GetId(), p.GetImages())
		}
	}
}

// A late watcher on any peer of the mesh (here the third peer, which
// neither coordinates nor runs the task, and the executor itself) gets the
// history first, then live output, with no duplicate and no hole, and the
// watch ends with the task.
func TestLateWatcherFollowsFromAnyPeer(t *testing.T) {
	tn, cs := mesh3(t)
	ctx := testnet.Context(t, 2*time.Minute)
	const lines = 400
	var got testnet.RunEvents
	got.StartedCh = make(chan struct{})
	if _, err := cs[0].Run(ctx, &apiv1.RunRequest{
		Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", fmt.Sprintf(`i=1; while [ $i -le %d ]; do echo "line $i"; echo "err $i" >&2; i=$((i+1)); usleep 5000; done`, lines)}},
		Peer: tn.Peers[1].Node.ID().String(), Detach: true,
	}, got.Event); err != nil {
		t.Fatal(err)
	}
	id := got.Started.GetTaskId()
	want := func(prefix string, n int) string {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, "%s %d\n", prefix, i)
		}
		return b.String()
	}
	follow := func(c *apiclient.Client) (stdout, stderr string) {
		t.Helper()
		var o, e strings.Builder
		if err := c.Logs(ctx, id, true, func(ch *apiv1.OutputChunk) {
			if ch.GetStream() == "stderr" {
				e.Write(ch.GetData())
			} else {
				o.Write(ch.GetData())
			}
		}); err != nil {
			t.Fatalf("logs -f: %v", err)
		}
		return o.String(), e.String()
	}
	// Late: the task has written some of its output already.
	testnet.Eventually(t, "some output on the coordinator", 30*time.Second, func() bool {
		var n int
		_ = cs[0].Logs(ctx, id, false, func(*apiv1.OutputChunk) { n++ })
		return n > 0
	})
	type watched struct{ stdout, stderr string }
	results := make(chan watched, 2)
	for _, c := range []*apiclient.Client{cs[2], cs[1]} {
		go func() {
			o, e := follow(c)
			results <- watched{o, e}
		}()
	}
	for range 2 {
		w := <-results
		if w.stdout != want("line", lines) || w.stderr != want("err", lines) {
			t.Fatalf("late watcher: stdout %d bytes, stderr %d bytes; want %d and %d, whole and in order",
				len(w.stdout), len(w.stderr), len(want("line", lines)), len(want("err", lines)))
		}
	}
	// After the end, history alone.
	o, e := follow(cs[2])
	if o != want("line", lines) || e != want("err", lines) {
		t.Fatalf("logs after the end: %d/%d bytes", len(o), len(e))
	}
	if err := cs[2].Logs(ctx, "tnosuchtask", false, func(*apiv1.OutputChunk) {}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("logs of an unknown task: %v", err)
	}
}

// Logs of one stream from a sequence number on, on the coordinator and on
// a watcher elsewhere; a bad range is refused.
func TestLogsRange(t *testing.T) {
	tn, cs := mesh3(t)
	ctx := testnet.Context(t, time.Minute)
	res, err := cs[0].Run(ctx, &apiv1.RunRequest{
		Spec: &apiv1.TaskSpec{Command: []string{"sh", "-c", `for i in 1 2 3 4 5; do echo "out $i"; echo "err $i" >&2; usleep 20000; done`}},
		Peer: tn.Peers[1].Node.ID().String(),
	}, nil)
	if err != nil || res.GetStdoutChunks() == 0 {
		t.Fatalf("%+v %v", res, err)
	}
	for _, c := range []*apiclient.Client{cs[0], cs[2]} {
		var seqs []uint64
		var data strings.Builder
		if err := c.LogsFrom(ctx, res.GetTaskId(), "stderr", 3, false, func(ch *apiv1.OutputChunk) {
			if ch.GetStream() != "stderr" {
				t.Errorf("chunk of %s", ch.GetStream())
			}
			seqs = append(seqs, ch.GetSeq())
			data.Write(ch.GetData())
		}); err != nil {
			t.Fatal(err)
		}
		if len(seqs) == 0 || seqs[0] != 3 || seqs[len(seqs)-1] != res.GetStderrChunks() || !strings.HasSuffix(data.String(), "err 5\n") {
			t.Fatalf("stderr from 3: seqs %v, %q", seqs, data.String())
		}
	}
	if err := cs[0].LogsFrom(ctx, res.GetTaskId(), "", 3, false, func(*apiv1.OutputChunk) {}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("from without a stream: %v", err)
	}
	if err := cs[0].LogsFrom(ctx, res.GetTaskId(), "stdin", 0, false, func(*apiv1.OutputChunk) {}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("unknown stream: %v", err)
	}
}

// result and cancel on a peer that did not submit the task: result asks
// the mesh, as logs does, and shows the task as its executor reports it;
// cancel says only the submitting peer may (it used to say "not found").
func TestTaskFromAnotherPeer(t *testing.T) {
	tn, cs := mesh3(t)
	ctx := testnet.Context(t, 2*time.Minute)
	exec := tn.Peers[1].Node.ID().String()
	id := startDetached(ctx, t, cs[0], exec)
	for i, c := range []*apiclient.Client{cs[2], cs[1]} { // a bystander, then the executor itself
		info, err := c.GetTask(ctx, id)
		if err != nil || info.GetExecutor() != exec || info.GetState() != "running" {
			t.Fatalf("result from peer %d: %+v, %v; want running on %s", []int{3, 2}[i], info, err, exec)
		}
		if err := c.CancelTask(ctx, id); !errors.Is(err, errdefs.ErrPermissionDenied) {
			t.Fatalf("cancel from peer %d: %v, want permission denied", []int{3, 2}[i], err)
		}
	}
	if err := cs[0].CancelTask(ctx, id); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, "the cancelled result, seen from a bystander", time.Minute, func() bool {
		info, err := cs[2].GetTask(ctx, id)
		return err == nil && info.GetResult().GetCancelled() && info.GetResult().GetExitCode() == 130
	})
}

// A task lost behind a partition may still run on its executor: cancel
// records it (queued), and once the link heals the cancel is delivered,
// the task killed, and its record says cancelled, not lost. It used to
// refuse with "has ended (lost)" and leave the task running.
func TestCancelOfLostTaskDeliveredWhenExecutorIsBack(t *testing.T) {
	tn, cs := mesh3(t, testnet.WithConfig(func(_ int, cfg *node.Config) { cfg.Delegation.LostAfter = 2 * time.Second }))
	ctx := testnet.Context(t, 2*time.Minute)
	coord, exec := tn.Peers[0], tn.Peers[1]
	id := startDetached(ctx, t, cs[0], exec.Node.ID().String())
	tn.Partition(coord, exec)
	testnet.Eventually(t, "the task to be marked lost", time.Minute, func() bool {
		info, err := cs[0].GetTask(ctx, id)
		return err == nil && info.GetState() == "lost"
	})
	if exec.Node.RunningTasks() != 1 {
		t.Fatal("the task stopped on its executor during the partition")
	}
	resp, err := cs[0].Cancel(ctx, id)
	if err != nil || !resp.GetQueued() {
		t.Fatalf("cancel of a lost task: %+v %v; want it queued", resp, err)
	}
	if err := tn.Heal(ctx, coord, exec); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, "the cancel to reach the executor", time.Minute, func() bool { return exec.Node.RunningTasks() == 0 })
	testnet.Eventually(t, "the record to say cancelled", time.Minute, func() bool {
		info, err := cs[0].GetTask(ctx, id)
		return err == nil && info.GetState() == "cancelled" && info.GetResult().GetExitCode() == 130
	})
}
