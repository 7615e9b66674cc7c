// Package delegation owns both sides of delegated tasks on this peer. As
// coordinator it places a task (placement.go), submits it over
// /cortex/task, relays its output in order from the task's log topic
// (relay.go), waits for the result and merges the workspace back
// (coordinator.go); as executor it runs what coordinators submit and
// delivers the result until acknowledged (executor.go). Records of both
// sides survive restarts (records.go) and are forgotten by age and count
// (retention.go); `logs` works on any peer (watch.go). The task and logs
// wire is converted in one place (wire.go).
//
// It reaches the rest of the peer only through the small interfaces below;
// it must not import node.
package delegation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pproto "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/node/store"
	"github.com/cortex-peer/cortex-peer/node/tasklog"
	"github.com/cortex-peer/cortex-peer/node/tasks"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// Config configures delegation on this peer.
type Config struct {
	// AcceptRemote lets other peers delegate tasks here; AcceptFrom, when
	// not empty, limits that to the peers it names.
	AcceptRemote bool
	AcceptFrom   []peer.ID
	// LostAfter is how long an unreachable executor's task stays running
	// on its coordinator before it is marked lost.
	LostAfter time.Duration
	// KeepTasks and KeepFor bound the ended tasks remembered (0: no bound).
	KeepTasks int
	KeepFor   time.Duration
	// LogStoreCapBytes bounds the output kept per task in the store.
	LogStoreCapBytes int64
	// Policy checks and completes the specs submitted here.
	Policy runtime.Policy
	// MaxTasksPerPeer bounds the tasks one other peer may have running here
	// at once (0: no bound): a member that submits as fast as it can fills
	// its own share, not the peer.
	MaxTasksPerPeer int
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.LostAfter <= 0 || c.KeepTasks < 0 || c.KeepFor < 0 || c.MaxTasksPerPeer < 0 {
		return fmt.Errorf("delegation config: lost_after must be positive, keep_tasks, keep_for and max_tasks_per_peer not negative: %w", errdefs.ErrInvalid)
	}
	return nil
}

// Host is what delegation uses of the peer's libp2p host.
type Host interface {
	ID() peer.ID
	Libp2p() host.Host
	Join(topic string, maxSize int, validate p2p.Validator) (*p2p.Topic, error)
	Connected() []peer.ID
	IsConnected(p peer.ID) bool
}

// Mesh is what placement sees: this peer's own announcement and the live
// peers of the mesh.
type Mesh interface {
	Announcement() p2p.Announcement
	Peers() []p2p.PeerEntry
}

// Blocks is what delegation uses of the block exchange: fetching the
// roots a task needs, and the block probes of placement.
type Blocks interface {
	FetchAll(ctx context.Context, stall time.Duration, roots ...cid.Cid) (dag.FetchProgress, error)
	FetchAgainst(ctx context.Context, base, root cid.Cid, stall time.Duration, progress func(dag.FetchProgress)) (dag.FetchProgress, error)
	Sample(ctx context.Context, root cid.Cid, n int) ([]cid.Cid, error)
	CountHeld(ctx context.Context, raw [][]byte) (int, error)
}

// DAGs is what delegation uses of the local DAG store.
type DAGs interface {
	Pin(name string, root cid.Cid) error
	Unpin(name string) error
	Pins() (map[string]cid.Cid, error)
	Merge(ctx context.Context, base, theirs cid.Cid, dir string) (dag.MergeReport, error)
}

// Runner runs tasks on this peer (tasks.Runner).
type Runner interface {
	Ready(ctx context.Context) error
	Run(ctx context.Context, spec runtime.Spec, workspace string, ev tasks.Events) (tasks.Outcome, error)
	ImportWorkspace(ctx context.Context, id, dir string) (cid.Cid, error)
	Prepare(ctx context.Context, spec *runtime.Spec, root cid.Cid) error
	Execute(ctx context.Context, spec runtime.Spec, base cid.Cid, ev tasks.Events) (tasks.Outcome, error)
	ImportResult(ctx context.Context, id, copyDir string, artifacts []string) (cid.Cid, []tasks.Artifact, error)
	Release(id string)
	// Leftover says how a task an earlier run of this peer left in the
	// runtime was found (and removed) when it connected.
	Leftover(ctx context.Context, id string) (runtime.Leftover, bool, error)
}

// Images pulls a task's image when this peer lacks it.
type Images interface {
	Ensure(ctx context.Context, task, image string) error
}

// Locker is the read side of the lock that keeps GC away while blocks no
// pin reaches yet are added.
type Locker interface {
	RLock()
	RUnlock()
}

// Deps are what delegation is built on.
type Deps struct {
	Host   Host
	Mesh   Mesh
	Blocks Blocks
	DAGs   DAGs
	Runner Runner
	Images Images
	Logs   *tasklog.Store // task output, both sides
	Store  *store.Store   // task records, both sides
	GC     Locker
	// Verifier checks a result with the workspace's language server
	// before it merges (run --verify); nil: no verification here.
	Verifier Verifier
}

// Verifier says what a result root adds to the diagnostics of its base in
// a workspace, and what it fixes (lsp.Service.Verify).
type Verifier interface {
	Verify(ctx context.Context, workspace string, base, result cid.Cid) (*tasks.VerifyReport, error)
}

// Delegation owns both sides of delegated tasks on this peer.
type Delegation struct {
	cfg    Config
	self   peer.ID
	host   Host
	mesh   Mesh
	blocks Blocks
	dags   DAGs
	runner Runner
	images Images
	logs   *tasklog.Store
	// verifier checks results before they merge; nil: none.
	verifier Verifier
	gc       Locker
	rec      records
	log      *slog.Logger
	rates    *p2p.PeerRates // of the requests each peer makes here

	ctx    context.Context // ends at close: every goroutine here watches it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// recMu serialises changes to coordinator records, which the result
	// delivery, the waiting run and the merge all make.
	recMu sync.Mutex
	// mergeMu makes merges of results into callers' directories one at a
	// time, so that each result is merged once (see mergeBack).
	mergeMu sync.Mutex

	mu     sync.Mutex
	closed bool
	// draining: no new tasks here (Drain); returning holds the tasks the
	// drain killed at its deadline, reported as returned.
	draining  atomic.Bool
	returning map[string]bool
	// delivering counts the results of tasks run here still being
	// delivered to their coordinators.
	delivering atomic.Int64
	running    map[string]context.CancelFunc // tasks running here: for others, and local ones
	runningFor map[peer.ID]int               // how many of them each other peer submitted
	busy       *p2p.OnceLogger               // peers refused for running their share
	notYours   *p2p.OnceLogger               // peers that claimed to run others' tasks
	windows    map[string]*outputWindow      // output flow of tasks running here for others
	cancels    map[string]bool               // lost tasks whose cancel waits for their executor (see cancelLoop)
	waiters    map[string]chan struct{}      // coordinator: tasks whose result someone awaits
}

// New builds delegation and registers its stream handlers, so a peer that
// sees this one's heartbeat can submit at once. Serve takes up what an
// earlier run left unfinished.
func New(cfg Config, deps Deps, log *slog.Logger) (*Delegation, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Delegation{
		cfg: cfg, self: deps.Host.ID(), host: deps.Host, mesh: deps.Mesh, blocks: deps.Blocks, dags: deps.DAGs,
		runner: deps.Runner, images: deps.Images, logs: deps.Logs, gc: deps.GC, verifier: deps.Verifier,
		rec: records{st: deps.Store}, log: log,
		ctx: ctx, cancel: cancel,
		running:    map[string]context.CancelFunc{},
		runningFor: map[peer.ID]int{},
		returning:  map[string]bool{},
		rates:      p2p.NewPeerRates(taskRequestsPerSecond, taskRequestsBurst, rateIdle),
		busy:       p2p.NewOnceLogger(log),
		notYours:   p2p.NewOnceLogger(log),
		windows:    map[string]*outputWindow{},
		cancels:    map[string]bool{},
		waiters:    map[string]chan struct{}{},
	}
	h := d.host.Libp2p()
	h.SetStreamHandler(libp2pproto.ID(protocol.TaskProtocol), d.serveTask)
	h.SetStreamHandler(libp2pproto.ID(protocol.LogsProtocol), d.serveLogs)
	return d, nil
}

// Serve takes up what an earlier run of this peer left unfinished (results
// not yet delivered, tasks that were running when it stopped, coordinator
// records still waiting), then forgets old tasks now and then until ctx
// ends.
func (d *Delegation) Serve(ctx context.Context) error {
	d.resume()
	d.goFunc(d.cancelLoop)
	d.pruneLoop(ctx)
	return nil
}

func (d *Delegation) resume() {
	execs, err := d.rec.execs()
	if err != nil {
		d.log.Warn("read executor records", "err", err)
	}
	var interrupted []*execRecord
	for _, e := range execs {
		switch e.State {
		case stateSubmitted, stateFetching, stateRunning:
			interrupted = append(interrupted, e)
		case stateExited, stateFailed:
			if e.Result != nil {
				d.rememberCoordinator(e)
				d.goDeliver(e.ID)
			}
		}
	}
	if len(interrupted) > 0 {
		// Connecting to containerd removes the containers a crashed run
		// left, and says how each task was found: the records then tell
		// the truth about them.
		d.goFunc(func(ctx context.Context) { d.settleInterrupted(ctx, interrupted) })
	}
	recs, err := d.rec.tasks()
	if err != nil {
		d.log.Warn("read task records", "err", err)
	}
	for _, t := range recs {
		if t.CancelPending {
			d.queueCancel(t.ID, true)
		}
		if unmerged(t) {
			// Its result came, and this peer stopped before the merge
			// was done: fetch, complete the output and merge now.
			d.log.Info("merging the result of a task this peer stopped before merging", "task", t.ID)
			d.goFunc(func(ctx context.Context) { d.settleEnded(ctx, t, true) })
			continue
		}
		if !t.State.final() && t.Executor != d.self.String() {
			d.goAwait(t, nil)
		} else if !t.State.final() {
			// A task of our own that was running when this peer stopped.
			d.failTask(t, errors.New("this peer stopped while the task ran"))
		}
	}
}

// Close stops every goroutine of delegation and waits for them. Tasks
// running here for others are killed; their records say so when this peer
// next starts. Safe to call twice.
func (d *Delegation) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	h := d.host.Libp2p()
	h.RemoveStreamHandler(libp2pproto.ID(protocol.TaskProtocol))
	h.RemoveStreamHandler(libp2pproto.ID(protocol.LogsProtocol))
	d.cancel()
	d.wg.Wait()
	return nil
}

// goFunc runs fn on a goroutine owned by d, unless d is closing.
func (d *Delegation) goFunc(fn func(ctx context.Context)) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		fn(d.ctx)
	}()
	return true
}
