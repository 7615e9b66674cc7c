package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/dag/fswatch"
	"github.com/cortex-peer/cortex-peer/node/apiserver"
	"github.com/cortex-peer/cortex-peer/node/artifacts"
	"github.com/cortex-peer/cortex-peer/node/browser"
	"github.com/cortex-peer/cortex-peer/node/capabilities"
	"github.com/cortex-peer/cortex-peer/node/datadir"
	"github.com/cortex-peer/cortex-peer/node/delegation"
	"github.com/cortex-peer/cortex-peer/node/exchange"
	"github.com/cortex-peer/cortex-peer/node/lsp"
	"github.com/cortex-peer/cortex-peer/node/store"
	"github.com/cortex-peer/cortex-peer/node/tasklog"
	"github.com/cortex-peer/cortex-peer/node/tasks"
	"github.com/cortex-peer/cortex-peer/node/update"
	"github.com/cortex-peer/cortex-peer/node/workspace"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/runtime"
	"github.com/cortex-peer/cortex-peer/runtime/images"
)

// Node is one running peer: the capabilities New built, in the order it
// built them, which Close undoes in reverse.
type Node struct {
	cfg     Config
	log     *slog.Logger
	started time.Time

	lock       *datadir.Lock
	store      *store.Store
	dags       *dag.Store
	watch      *fswatch.Watcher // of imported workspaces; nil without inotify
	host       *p2p.Host
	exchange   *exchange.Exchange
	taskLogs   *tasklog.Store
	images     *tasks.Images
	runner     *tasks.Runner
	book       *p2p.Book
	prober     *capabilities.Prober
	delegation *delegation.Delegation
	browser    *browser.Service
	lsp        *lsp.Service
	hb         *p2p.Heartbeater
	api        *apiserver.Server
	mcp        *mcpHTTP // nil unless configured
	updates    *update.Service
	sup        *supervisor

	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
	// stop is closed when a drain that does not stay has finished: the
	// process that runs the peer stops it (StopRequested).
	stop     chan struct{}
	stopOnce sync.Once
	// restart is set when the stop is a restart into another version.
	restart atomic.Bool
	// selfTested is set once the self-test task has passed.
	selfTested atomic.Bool
	// knewPeers: the peer had mesh peers to return to when it started, so
	// a new version is healthy only once it reaches one.
	knewPeers bool
}

// New builds every capability of the peer, in order, each from what it
// uses, and starts the long-lived ones under the supervisor. On any failure
// what was built is closed again.
func New(cfg Config, log *slog.Logger) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, started: time.Now(), prober: capabilities.NewProber(), done: make(chan struct{}), stop: make(chan struct{})}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	logger := func(component string) *slog.Logger { return log.With("component", component) }

	// One peer per data dir.
	if n.lock, err = cfg.Dir.Lock(); err != nil {
		return nil, err
	}
	if n.store, err = store.Open(cfg.Store, logger("store")); err != nil {
		return nil, err
	}
	n.dags = dag.NewStore(n.store.DB(), dag.WithLogger(logger("dag")))
	n.dags.Blocks().SetRoomCheck(n.store.Room)
	// Workspaces the user imports are watched, so that importing one again
	// with nothing changed costs no stat (see dag.ImportOptions.Watch). A
	// peer without inotify scans every time.
	if n.watch, err = dag.NewWatcher(); err != nil {
		log.Info("workspaces are not watched; every import scans its tree", "err", err)
		n.watch, err = nil, nil
	}
	// gc keeps GC (which takes it for writing) away from imports, fetches,
	// merges and tasks, which add blocks that no pin reaches yet.
	gc := new(sync.RWMutex)
	known := loadKnownPeers(n.store, log)
	n.knewPeers = len(known) > 0 || len(cfg.P2P.Bootstrap) > 0
	if n.host, err = p2p.New(cfg.P2P, logger("p2p")); err != nil {
		return nil, err
	}
	if n.exchange, err = exchange.New(cfg.Exchange, n.host, n.dags, logger("exchange")); err != nil {
		return nil, err
	}
	n.taskLogs = tasklog.New(n.store.DB(), filepath.Join(cfg.Store.Dir, "tasklogs"), tasklog.NewDAGArchive(n.dags, gc), n.store.Room)
	n.images = tasks.NewImages(cfg.Tasks.ContainerdSocket, cfg.Tasks.Namespace, logger("images"))
	if n.runner, err = tasks.New(cfg.Tasks, n.host.ID(), n.dags, n.watch, n.taskLogs, gc, logger("tasks")); err != nil {
		return nil, err
	}
	n.book = p2p.NewBook(cfg.P2P.Heartbeat.Expiry, n.host.IsConnected)
	workspaces := workspace.New(n.dags, n.watch, n.exchange, gc)
	if n.lsp, err = lsp.New(cfg.LSP, lsp.Deps{
		Host: n.host, Mesh: meshView{n}, DAGs: n.dags, Blocks: n.exchange, Importer: importer{workspaces}, GC: gc,
	}, logger("lsp")); err != nil {
		return nil, err
	}
	if n.delegation, err = delegation.New(cfg.Delegation, delegation.Deps{
		Host: n.host, Mesh: meshView{n}, Blocks: n.exchange, DAGs: n.dags, Runner: n.runner,
		Images: n.images, Logs: n.taskLogs, Store: n.store, GC: gc, Verifier: verifier{n.lsp},
	}, logger("delegation")); err != nil {
		return nil, err
	}
	if n.browser, err = browser.New(cfg.Browser, browser.Deps{
		Host: n.host, Blocks: n.exchange, DAGs: n.dags, GC: gc, Mesh: meshView{n},
	}, logger("browser")); err != nil {
		return nil, err
	}
	arts, err := artifacts.New(cfg.Artifacts, n.dags, n.exchange, trees{workspaces, n.dags}, n.host, gc, logger("artifacts"))
	if err != nil {
		return nil, err
	}
	if n.hb, err = p2p.NewHeartbeater(n.host, n.book, n.announcement, logger("heartbeat")); err != nil {
		return nil, err
	}
	if n.updates, err = update.New(cfg.Update, update.Deps{
		Host: n.host, Binaries: releaseBinaries{arts, n.dags}, Restarter: restarter{n},
	}, logger("update")); err != nil {
		return nil, err
	}
	if n.api, err = apiserver.New(cfg.API, apiserver.Services{
		Peer:       peerView{n},
		Workspaces: workspaces,
		Tasks:      n.delegation,
		Images:     n.images,
		Browser:    n.browser,
		LSP:        n.lsp,
		Artifacts:  artifactsAPI{arts},
		Updates:    n.updates,
	}); err != nil {
		return nil, err
	}
	if cfg.MCPListen != "" {
		if n.mcp, err = newMCPHTTP(cfg, logger("mcp")); err != nil {
			return nil, err
		}
	}

	n.sup = newSupervisor(logger("supervisor"))
	n.sup.Go("delegation", n.delegation.Serve)
	n.sup.Go("browser", n.browser.Serve)
	n.sup.Go("lsp", n.lsp.Serve)
	n.sup.Go("heartbeat", n.hb.Serve)
	n.sup.Go("update", n.updates.Serve)
	n.sup.Go("api", n.api.Serve)
	if n.mcp != nil {
		n.sup.Go("mcp", n.mcp.Serve)
		log.Info("MCP endpoint listening", "url", n.mcp.URL())
	}
	n.sup.Go("known-peers", func(ctx context.Context) error {
		return saveKnownPeersLoop(ctx, n.host, n.book, n.store, known, cfg.KnownPeersInterval, log)
	})
	log.Info("peer started", "id", n.host.ID(), "addrs", n.host.FullAddrs(), "api", cfg.API.Socket, "version", cfg.Version)
	return n, nil
}

// ID is the peer's id.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Addrs are the full multiaddrs other peers can bootstrap from.
func (n *Node) Addrs() []string { return n.host.FullAddrs() }

// Peers lists the live peers of the mesh as the peer book sees them.
func (n *Node) Peers() []p2p.PeerEntry { return n.book.List(time.Now(), false) }

// Logger is the peer's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// Done is closed when the node has been closed.
func (n *Node) Done() <-chan struct{} { return n.done }

// Host is the peer's libp2p host, for tests that speak the wire directly.
func (n *Node) Host() *p2p.Host { return n.host }

// Pins lists the store's pins by name: the roots GC keeps.
func (n *Node) Pins() (map[string]cid.Cid, error) { return n.dags.Pins() }

// RunningTasks is the number of tasks running on this peer.
func (n *Node) RunningTasks() int {
	if n.runner == nil {
		return 0
	}
	return n.runner.Running()
}

// BrowserProcesses are the pids of this peer's Chromium, for tests that
// check none outlives the peer.
func (n *Node) BrowserProcesses() []int {
	if n.browser == nil {
		return nil
	}
	return n.browser.Processes()
}

// LSPProcesses are the pids of this peer's language servers, for tests
// that check none outlives the peer.
func (n *Node) LSPProcesses() []int {
	if n.lsp == nil {
		return nil
	}
	return n.lsp.Processes()
}

// MCPURL is the URL of the peer's MCP HTTP endpoint, or "" when it serves none.
func (n *Node) MCPURL() string {
	if n.mcp == nil {
		return ""
	}
	return n.mcp.URL()
}

// announcement is what the heartbeat tells the mesh about this peer.
func (n *Node) announcement() p2p.Announcement {
	a := p2p.Announcement{
		Version:      n.cfg.Version,
		Labels:       maps.Clone(n.cfg.Labels),
		Capabilities: n.prober.Capabilities(),
		Capacity:     capabilities.Capacity(n.RunningTasks()),
		Draining:     n.delegation.Draining(),
	}
	if a.Capabilities.Containerd { // without it, asking would only wait
		a.Images = n.images.HeldNames(context.Background())
	}
	return a
}

// restarter is the node as the updater restarts it (update.Restarter).
type restarter struct{ n *Node }

func (r restarter) Restart(ctx context.Context) { r.n.Restart(ctx) }

// releaseBinaries fetches, reads and pins release binaries
// (update.Binaries).
type releaseBinaries struct {
	arts *artifacts.Service
	dags *dag.Store
}

// releaseStall is how long a release fetch waits without progress.
const releaseStall = time.Minute

func (b releaseBinaries) Fetch(ctx context.Context, root cid.Cid, dest string) error {
	_, err := b.arts.Get(ctx, root, dest, true, releaseStall, func(artifacts.Progress) {})
	return err
}

func (b releaseBinaries) Read(ctx context.Context, root cid.Cid, length int64, w io.Writer) error {
	_, err := b.arts.Read(ctx, root, 0, length, releaseStall, w)
	return err
}

func (b releaseBinaries) Keep(name string, root cid.Cid) error { return b.dags.Pin(name, root) }

// importer imports a workspace for the language servers (lsp.Importer).
type importer struct{ ws *workspace.Service }

func (i importer) Import(ctx context.Context, dir string) (cid.Cid, error) {
	res, err := i.ws.Add(ctx, dir, false, nil)
	return res.Root, err
}

// trees fetches a root into a path for the artifacts (artifacts.Trees).
// Unlike a workspace's get, an artifact's keeps no pin: its copy is the
// file written, and GC may take the blocks (Kubo's get pins nothing
// either); what this peer put stays pinned as artifact:CID.
type trees struct {
	ws   *workspace.Service
	dags *dag.Store
}

func (t trees) Get(ctx context.Context, root cid.Cid, dest string, stall time.Duration, progress func(phase string, done, bytes uint64)) (int64, int64, error) {
	res, err := t.ws.Get(ctx, root, dest, stall, false, progress)
	if err == nil {
		_ = t.dags.Unpin(workspace.GetPin(dest))
	}
	return res.Fetch.FetchedBytes, res.Export.Bytes, err
}

// artifactsAPI is the artifacts capability as the API sees it.
type artifactsAPI struct{ *artifacts.Service }

func (a artifactsAPI) Put(ctx context.Context, path string, progress func(files, bytes uint64)) (apiserver.PutResult, error) {
	res, err := a.Service.Put(ctx, path, progress)
	return apiserver.PutResult{Root: res.Root, Bytes: res.Bytes, Dir: res.Dir}, err
}

func (a artifactsAPI) Get(ctx context.Context, root cid.Cid, dest string, force bool, stall time.Duration, progress func(*apiv1.Progress)) (apiserver.ArtifactGot, error) {
	res, err := a.Service.Get(ctx, root, dest, force, stall, func(p artifacts.Progress) {
		progress(&apiv1.Progress{Phase: p.Phase, Done: p.Done, Bytes: p.Bytes, TotalBytes: p.TotalBytes})
	})
	return apiserver.ArtifactGot{Path: res.Path, Bytes: res.Bytes, FetchedBytes: res.FetchedBytes, Providers: res.Providers}, err
}

// verifier checks a task's result with the workspace's language server
// before it merges (delegation.Verifier).
type verifier struct{ l *lsp.Service }

func (v verifier) Verify(ctx context.Context, workspace string, base, result cid.Cid) (*tasks.VerifyReport, error) {
	rep, err := v.l.Verify(ctx, &apiv1.LSPVerifyRequest{Workspace: workspace, Base: base.String(), Result: result.String()})
	if err != nil {
		return nil, err
	}
	conv := func(ds []*apiv1.LSPDiagnostic) []tasks.Diagnostic {
		out := make([]tasks.Diagnostic, 0, len(ds))
		for _, d := range ds {
			out = append(out, tasks.Diagnostic{File: d.GetFile(), Line: int(d.GetLine()), Column: int(d.GetColumn()),
				Severity: d.GetSeverity(), Message: d.GetMessage(), Source: d.GetSource()})
		}
		return out
	}
	return &tasks.VerifyReport{Added: conv(rep.GetAdded()), Fixed: conv(rep.GetFixed()), AddedErrors: int(rep.GetAddedErrors())}, nil
}

// meshView is what placement sees of the mesh (delegation.Mesh).
type meshView struct{ n *Node }

func (m meshView) Announcement() p2p.Announcement { return m.n.announcement() }
func (m meshView) Peers() []p2p.PeerEntry         { return m.n.Peers() }

// peerView is this peer as the API's PeerService reports it
// (apiserver.Peer).
type peerView struct{ n *Node }

func (v peerView) ID() peer.ID                        { return v.n.host.ID() }
func (v peerView) FullAddrs() []string                { return v.n.host.FullAddrs() }
func (v peerView) IsConnected(p peer.ID) bool         { return v.n.host.IsConnected(p) }
func (v peerView) Peers(expired bool) []p2p.PeerEntry { return v.n.book.List(time.Now(), expired) }

func (v peerView) Drain(ctx context.Context, deadline time.Duration, stay bool, progress func(apiserver.DrainStatus)) (apiserver.DrainStatus, error) {
	return v.n.Drain(ctx, deadline, stay, progress)
}
func (v peerView) Eligible() bool { return v.n.Eligible() }

func (v peerView) Status() apiserver.Status {
	n := v.n
	listen := make([]string, 0)
	for _, a := range n.host.ListenAddrs() {
		listen = append(listen, a.String())
	}
	in, out := n.host.TrafficTotals()
	return apiserver.Status{
		Version:           n.cfg.Version,
		StartedAt:         n.started,
		DataDir:           n.cfg.Dir.Root,
		ListenAddrs:       listen,
		ConnectedPeers:    len(n.host.Connected()),
		KnownPeers:        len(n.book.List(time.Now(), false)),
		Labels:            n.cfg.Labels,
		Capabilities:      n.prober.Capabilities(),
		Capacity:          capabilities.Capacity(n.RunningTasks()),
		StoreBytes:        n.store.Size() + store.DiskUsage(n.dags.PackDir()),
		PrivateNetwork:    n.host.PrivateNetwork(),
		AllowlistSize:     n.host.AllowlistSize(),
		MeshBytesReceived: uint64(in), MeshBytesSent: uint64(out),
		Draining: n.delegation.Draining(),
	}
}

// Close stops the peer: the supervised services first, then every
// capability in the reverse order of New, then the host, the store and the
// lock. Safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.sup != nil {
			n.sup.Stop()
		}
		if n.mcp != nil {
			errs = append(errs, n.mcp.Close())
		}
		if n.api != nil {
			errs = append(errs, n.api.Close())
		}
		if n.updates != nil {
			errs = append(errs, n.updates.Close())
		}
		if n.hb != nil {
			errs = append(errs, n.hb.Close())
		}
		if n.lsp != nil {
			errs = append(errs, n.lsp.Close())
		}
		if n.browser != nil {
			errs = append(errs, n.browser.Close()) // it stores artifacts: before the store
		}
		if n.delegation != nil {
			errs = append(errs, n.delegation.Close())
		}
		if n.runner != nil {
			errs = append(errs, n.runner.Close())
		}
		if n.taskLogs != nil {
			errs = append(errs, n.taskLogs.Close()) // its archiving writes blocks: before the store
		}
		if n.images != nil {
			errs = append(errs, n.images.Close())
		}
		if n.exchange != nil {
			errs = append(errs, n.exchange.Close())
		}
		if n.host != nil {
			errs = append(errs, n.host.Close())
		}
		if n.watch != nil {
			errs = append(errs, n.watch.Close())
		}
		if n.store != nil {
			errs = append(errs, n.store.Close())
		}
		if n.lock != nil {
			errs = append(errs, n.lock.Unlock())
		}
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("close peer: %w", err)
		}
		close(n.done)
		if n.host != nil {
			n.log.Info("peer stopped", "id", n.host.ID())
		}
	})
	return n.closeErr
}

// healthKey is a key the health check reads; it is never written.
var healthKey = []byte("health/never-written")

// Healthy reports whether the peer works: its store reads and its API
// socket accepts a connection. systemd's watchdog is fed while it passes.
func (n *Node) Healthy(ctx context.Context) error {
	select {
	case <-n.done:
		return fmt.Errorf("peer stopped: %w", errdefs.ErrUnavailable)
	default:
	}
	if _, err := n.store.Get(healthKey); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("store: %w", err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", n.cfg.API.Socket)
	if err != nil {
		return fmt.Errorf("API socket: %w: %w", err, errdefs.ErrUnavailable)
	}
	return c.Close()
}

// UpdateHealthy is the health a new version must pass on probation:
// Healthy, at least one mesh peer connected when it had peers before, and
// containerd answering where this machine has it.
func (n *Node) UpdateHealthy(ctx context.Context) error {
	if err := n.Healthy(ctx); err != nil {
		return err
	}
	if n.knewPeers && len(n.host.Connected()) == 0 {
		return fmt.Errorf("no mesh peer connected yet: %w", errdefs.ErrUnavailable)
	}
	if n.prober.Capabilities().Containerd && !n.selfTested.Load() {
		if err := n.selfTest(ctx); err != nil {
			return err
		}
		n.selfTested.Store(true)
	}
	return nil
}

// selfTestTimeout bounds the self-test task.
const selfTestTimeout = 20 * time.Second

// selfTest runs `true` in the default task image, when this machine holds
// it: a new version must be able to run tasks. Without the image (it
// would have to be pulled) only containerd's answer is checked.
func (n *Node) selfTest(ctx context.Context) error {
	img := n.cfg.Tasks.Policy.DefaultImage
	if !slices.ContainsFunc(n.images.HeldNames(ctx), func(held string) bool { return images.Refers(held, img) }) {
		if _, err := n.images.Store(ctx); err != nil {
			return fmt.Errorf("containerd: %w", err)
		}
		n.log.Info("self-test: the default image is not held here; containerd answers", "image", img)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, selfTestTimeout)
	defer cancel()
	out, err := n.runner.Run(ctx, runtime.Spec{ID: "selftest-" + tasks.NewTaskID(), Command: []string{"true"}, Timeout: selfTestTimeout}, "", quietEvents{})
	if err != nil {
		return fmt.Errorf("self-test task: %w", err)
	}
	if out.Result.ExitCode != 0 {
		return fmt.Errorf("self-test task `true` in %s exited %d: %w", img, out.Result.ExitCode, errdefs.ErrUnavailable)
	}
	n.log.Info("self-test task ran", "image", img)
	return nil
}

// quietEvents drops a self-test task's events.
type quietEvents struct{}

func (quietEvents) Started(string, peer.ID, cid.Cid) error { return nil }
func (quietEvents) Output(runtime.Chunk) error             { return nil }
func (quietEvents) Progress(string, uint64, uint64) error  { return nil }

// StopRequested is closed once a drain asked the peer to stop (cortex-peer
// drain without --stay): whoever runs the peer then closes it.
func (n *Node) StopRequested() <-chan struct{} { return n.stop }

// Drain makes the peer ineligible for new tasks (the mesh learns it from
// the next heartbeat, sent at once), lets the tasks it runs end within
// deadline (0: the configured drain_deadline), then stops and returns the
// rest, and waits for their results to be acknowledged. Unless stay, it
// then asks for the peer to stop (StopRequested).
func (n *Node) Drain(ctx context.Context, deadline time.Duration, stay bool, progress func(apiserver.DrainStatus)) (apiserver.DrainStatus, error) {
	if deadline <= 0 {
		deadline = n.cfg.DrainDeadline
	}
	var announced sync.Once
	conv := func(s delegation.DrainStatus) apiserver.DrainStatus {
		return apiserver.DrainStatus{
			Running: s.Running, Undelivered: s.Undelivered, Completed: s.Completed, Returned: s.Returned,
			LeftUndelivered: s.LeftUndelivered, Elapsed: s.Elapsed, Done: s.Done, Stopping: s.Done && !stay,
		}
	}
	st, err := n.delegation.Drain(ctx, deadline, func(s delegation.DrainStatus) {
		announced.Do(n.hb.Announce) // the drain has begun: say so now
		if progress != nil {
			progress(conv(s))
		}
	})
	if err != nil {
		return conv(st), err
	}
	if !stay {
		// Browser sessions do not survive the process: their state
		// does, as DAGs the log names (browser open --state CID).
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if saved := n.browser.SaveAll(sctx); len(saved) > 0 {
			n.log.Info("drain: browser sessions' state saved", "sessions", saved)
		}
		cancel()
		n.stopOnce.Do(func() { close(n.stop) })
	}
	return conv(st), nil
}

// Restart drains the peer and asks whoever runs it to start it again
// (the update supervisor starts releases/current): a restart, not a
// decommission, so the peer comes back eligible.
func (n *Node) Restart(ctx context.Context) {
	n.restart.Store(true)
	if _, err := n.Drain(ctx, 0, false, nil); err != nil {
		n.log.Warn("drain before restart failed; restarting anyway", "err", err)
		n.stopOnce.Do(func() { close(n.stop) })
	}
}

// RestartRequested reports whether the stop asked for is a restart.
func (n *Node) RestartRequested() bool { return n.restart.Load() }

// Updates is the updater, for the API and tests.
func (n *Node) Updates() *update.Service { return n.updates }

// Eligible undoes a drain that stayed.
func (n *Node) Eligible() bool {
	was := n.delegation.Eligible()
	if was {
		n.hb.Announce()
	}
	return was
}
