package testnet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/node/datadir"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Defaults of process testnets.
const (
	DefaultProcessHeartbeat = time.Second
	pollInterval            = 50 * time.Millisecond
	stopGrace               = 10 * time.Second
	// drainGrace is how long a stopped peer may drain before the second
	// SIGTERM.
	drainGrace     = 2 * time.Second
	loopbackListen = "/ip4/127.0.0.1/tcp/0"
)

// ProcessOptions configure StartProcesses.
type ProcessOptions struct {
	// Binary is the cortex-peer executable; required.
	Binary string
	// N is the number of peers, at least 1.
	N int
	// Dir holds DIR/peer1 … DIR/peerN; it must not hold them already.
	Dir string
	// Heartbeat is the peers' heartbeat interval (DefaultProcessHeartbeat if 0).
	Heartbeat time.Duration
	// LogLevel of the peers (info if empty). Each peer logs to DIR/peerK/peer.log.
	LogLevel string
	// AllowedRoots are added to every peer's [api] allowed_roots (init's
	// --allowed-root), besides the default home and temp dir.
	AllowedRoots []string
	// ConfigEdits replace, in every peer's config.toml after init, each
	// key's line with its value's (for example the tasks namespace line);
	// a key absent from the file is an error, so an edit is never lost.
	ConfigEdits map[string]string
	// FixedPorts gives each peer a port of its own at init instead of a
	// new one at every start, so that peers that restart on their own
	// (an update's restart) find each other again.
	FixedPorts bool
	// AllowlistOnly runs the mesh without a mesh key: each peer admits the
	// others by id alone (policy.allowlist).
	AllowlistOnly bool
	// OnExit, if set, is called once for every end of a peer process,
	// from the goroutine that reaped it and before Exited closes. It must
	// not block, nor wait on the peer.
	OnExit func(PeerExit)
	// OnRestart, if set, is called each time a peer has been started again
	// (Restart, RestartPeer, RestartDead) and answers on its API.
	OnRestart func(*ProcessPeer)
}

// PeerExit is how one peer process ended.
type PeerExit struct {
	Peer *ProcessPeer
	Pid  int
	// Err is nil for exit status 0, else what exec.Cmd.Wait returned.
	Err error
	// Requested is true when the testnet stopped the peer (Stop, or a
	// restart of a running peer): an end that is no death.
	Requested bool
}

// Status says how the process ended: "exit status 1", "killed by SIGKILL".
func (e PeerExit) Status() string {
	var ee *exec.ExitError
	if !errors.As(e.Err, &ee) {
		if e.Err != nil {
			return e.Err.Error()
		}
		return "exit status 0"
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("exit status %d", ee.ExitCode())
}

// TestNamespaceEdit is the ConfigEdits entry that runs a process testnet's
// tasks in TestNamespace, away from the user's containers and images.
var TestNamespaceEdit = map[string]string{`namespace = "cortex"`: `namespace = "` + TestNamespace + `"`}

// ProcessPeer is one peer process.
type ProcessPeer struct {
	Name    string
	ID      string
	DataDir string
	Addrs   []string
	LogFile string

	net *ProcessNet
	// restarting serializes the restarts of this peer.
	restarting sync.Mutex

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	err      error
	ended    bool // the current process has been reaped
	stopping bool // the testnet asked the current process to end
}

// ProcessNet is a running process testnet.
type ProcessNet struct {
	Peers []*ProcessPeer
	opts  ProcessOptions

	// mu orders starts against Stop: once stopped is set no peer starts,
	// so none outlives Stop.
	mu      sync.Mutex
	stopped bool
}

// StartProcesses initializes and starts N peers: the first with a new mesh
// key, the others with its key, bootstrapped to it. It returns once every
// peer answers on its API; call WaitReady to wait for the mesh to form.
func StartProcesses(ctx context.Context, opts ProcessOptions) (_ *ProcessNet, err error) {
	if opts.Binary == "" || opts.N < 1 || opts.Dir == "" {
		return nil, fmt.Errorf("testnet: need a binary, a dir and at least one peer: %w", errdefs.ErrInvalid)
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = DefaultProcessHeartbeat
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	pn := &ProcessNet{opts: opts}
	defer func() {
		if err != nil {
			pn.Stop()
		}
	}()
	if opts.AllowlistOnly {
		return pn, pn.startAllowlistOnly(ctx)
	}
	for i := range opts.N {
		name := "peer" + strconv.Itoa(i+1)
		p := &ProcessPeer{Name: name, DataDir: filepath.Join(opts.Dir, name), net: pn}
		p.LogFile = filepath.Join(p.DataDir, "peer.log")
		args := initArgs(opts, name, p.DataDir)
		if i > 0 {
			args = append(args, "--mesh-key", filepath.Join(pn.Peers[0].DataDir, "mesh.key"))
			args = append(args, bootstrapArgs(pn.Peers[0].Addrs)...)
		}
		if out, err := exec.CommandContext(ctx, opts.Binary, args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("testnet: init %s: %v: %s", name, err, out)
		}
		if err := EditConfig(filepath.Join(p.DataDir, "config.toml"), opts.ConfigEdits); err != nil {
			return nil, fmt.Errorf("testnet: %s: %w", name, err)
		}
		pn.Peers = append(pn.Peers, p)
		// The first peer must be up before the others can bootstrap to it;
		// the others start together.
		if i == 0 || i == opts.N-1 {
			for _, q := range pn.Peers {
				if q.cmd != nil {
					continue
				}
				if err := q.start(nil); err != nil {
					return nil, err
				}
			}
			for _, q := range pn.Peers {
				if err := q.waitAPI(ctx); err != nil {
					return nil, err
				}
			}
		}
	}
	return pn, nil
}

// freePort is a loopback TCP port free now (0 if none could be found, which
// lets the peer pick one).
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// initArgs are the arguments of `cortex-peer init` for the peer name of a
// testnet, in dataDir.
func initArgs(opts ProcessOptions, name, dataDir string) []string {
	listen := loopbackListen
	if opts.FixedPorts {
		listen = fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort())
	}
	args := []string{"init", "--data", dataDir, "--listen", listen, "--no-mdns", "--heartbeat", opts.Heartbeat.String(), "--label", "testnet=" + name}
	for _, r := range opts.AllowedRoots {
		args = append(args, "--allowed-root", r)
	}
	return args
}

// startAllowlistOnly initializes every peer, makes each admit the others
// by id alone (no mesh key), then starts the first, and the others
// bootstrapped to it.
func (pn *ProcessNet) startAllowlistOnly(ctx context.Context) error {
	opts := pn.opts
	var ids []string
	for i := range opts.N {
		name := "peer" + strconv.Itoa(i+1)
		p := &ProcessPeer{Name: name, DataDir: filepath.Join(opts.Dir, name), net: pn}
		p.LogFile = filepath.Join(p.DataDir, "peer.log")
		if out, err := exec.CommandContext(ctx, opts.Binary, initArgs(opts, name, p.DataDir)...).CombinedOutput(); err != nil {
			return fmt.Errorf("testnet: init %s: %v: %s", name, err, out)
		}
		sk, err := datadir.Dir{Root: p.DataDir}.Identity()
		if err != nil {
			return fmt.Errorf("testnet: %s: %w", name, err)
		}
		id, err := peer.IDFromPrivateKey(sk)
		if err != nil {
			return fmt.Errorf("testnet: %s: %w", name, err)
		}
		ids = append(ids, strconv.Quote(id.String()))
		pn.Peers = append(pn.Peers, p)
	}
	edits := maps.Clone(opts.ConfigEdits)
	if edits == nil {
		edits = map[string]string{}
	}
	edits[`mesh_key_file = "`+datadir.MeshKeyFile+`"`] = `mesh_key_file = ""`
	edits["allowlist = []"] = "allowlist = [" + strings.Join(ids, ", ") + "]"
	for _, p := range pn.Peers {
		if err := EditConfig(filepath.Join(p.DataDir, "config.toml"), edits); err != nil {
			return fmt.Errorf("testnet: %s: %w", p.Name, err)
		}
	}
	first := pn.Peers[0]
	if err := first.start(nil); err != nil {
		return err
	}
	if err := first.waitAPI(ctx); err != nil {
		return err
	}
	for _, p := range pn.Peers[1:] {
		if err := p.start(first.Addrs); err != nil {
			return err
		}
	}
	for _, p := range pn.Peers[1:] {
		if err := p.waitAPI(ctx); err != nil {
			return err
		}
	}
	return nil
}

// EditConfig replaces, in the config file at path, each key's text with its
// value's; a key absent from the file is an error, so an edit is never lost.
func EditConfig(path string, edits map[string]string) error {
	if len(edits) == 0 {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	text := string(b)
	for from, to := range edits {
		if !strings.Contains(text, from) {
			return fmt.Errorf("config edit: %q is not in %s: %w", from, path, errdefs.ErrNotFound)
		}
		text = strings.Replace(text, from, to, 1)
	}
	return os.WriteFile(path, []byte(text), 0o600)
}

func bootstrapArgs(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		out = append(out, "--bootstrap", a)
	}
	return out
}

// start runs the peer's process, bootstrapping to addrs besides the peers
// in its config file.
func (p *ProcessPeer) start(addrs []string) error {
	pn := p.net
	pn.mu.Lock()
	defer pn.mu.Unlock()
	if pn.stopped {
		return fmt.Errorf("testnet: not starting %s: the testnet is stopping: %w", p.Name, errdefs.ErrUnavailable)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("testnet: %s log: %w", p.Name, err)
	}
	args := append([]string{"join", "--data", p.DataDir, "--log-level", pn.opts.LogLevel}, bootstrapArgs(addrs)...)
	cmd := exec.Command(pn.opts.Binary, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// A testnet that dies takes its peers with it. Each peer has a process
	// group of its own, so that signals a terminal or shell sends to the
	// testnet's job (Ctrl-C, `kill -HUP %1`) reach the testnet alone, which
	// decides what its peers get.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("testnet: start %s: %w", p.Name, err)
	}
	p.cmd = cmd
	p.ended, p.stopping = false, false
	done := make(chan struct{})
	p.done = done
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err, p.ended = err, true
		requested := p.stopping
		p.mu.Unlock()
		if pn.opts.OnExit != nil {
			pn.opts.OnExit(PeerExit{Peer: p, Pid: cmd.Process.Pid, Err: err, Requested: requested})
		}
		close(done)
	}()
	return nil
}

// waitAPI waits until the peer answers on its API and records its id.
func (p *ProcessPeer) waitAPI(ctx context.Context) error {
	c, err := apiclient.Dial(p.DataDir)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		id, err := c.Identity(ctx)
		if err == nil {
			p.mu.Lock()
			p.ID = id.GetId()
			p.Addrs = id.GetAddrs()
			p.mu.Unlock()
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("testnet: %s exited at start (%v); see %s", p.Name, p.ExitErr(), p.LogFile)
		case <-ctx.Done():
			return fmt.Errorf("testnet: waiting for %s: %w (last error: %v)", p.Name, ctx.Err(), err)
		case <-time.After(pollInterval):
		}
	}
}

func (p *ProcessPeer) id() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ID
}

// Exited is closed when the process has ended.
func (p *ProcessPeer) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// ExitErr is the process's exit status once Exited is closed.
func (p *ProcessPeer) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Pid is the process id of the running peer.
func (p *ProcessPeer) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to the peer process.
func (p *ProcessPeer) Signal(sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return fmt.Errorf("testnet: %s not started: %w", p.Name, errdefs.ErrUnavailable)
	}
	return p.cmd.Process.Signal(sig)
}

// Running reports whether the peer's process is running; it is false
// already when OnExit is called.
func (p *ProcessPeer) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.ended
}

// Restart starts the peer again after it exited, with the same data dir
// and so the same identity, bootstrapped to the running peers as well as
// to those of its config file: a peer that restarts gets a new port, so a
// peer that bootstrapped to it would not find it again.
func (p *ProcessPeer) Restart(ctx context.Context) error {
	p.restarting.Lock()
	defer p.restarting.Unlock()
	return p.restartLocked(ctx)
}

func (p *ProcessPeer) restartLocked(ctx context.Context) error {
	if p.Running() {
		return fmt.Errorf("testnet: %s still running: %w", p.Name, errdefs.ErrAlreadyExists)
	}
	if err := p.start(p.net.liveAddrs(p)); err != nil {
		return err
	}
	if err := p.waitAPI(ctx); err != nil {
		return err
	}
	if on := p.net.opts.OnRestart; on != nil {
		on(p)
	}
	return nil
}

// liveAddrs are the addresses of the running peers other than p.
func (pn *ProcessNet) liveAddrs(p *ProcessPeer) []string {
	var addrs []string
	for _, q := range pn.Peers {
		if q != p && q.Running() {
			q.mu.Lock()
			addrs = append(addrs, q.Addrs...)
			q.mu.Unlock()
		}
	}
	return addrs
}

// Peer returns the peer named name, or an error wrapping
// errdefs.ErrNotFound that lists the names there are.
func (pn *ProcessNet) Peer(name string) (*ProcessPeer, error) {
	names := make([]string, 0, len(pn.Peers))
	for _, p := range pn.Peers {
		if p.Name == name {
			return p, nil
		}
		names = append(names, p.Name)
	}
	return nil, notFoundError{fmt.Sprintf("the testnet in %s has no peer named %q (its peers: %s)", pn.opts.Dir, name, strings.Join(names, ", "))}
}

// notFoundError is an unknown name, said without a trailing kind: users
// read it as it is.
type notFoundError struct{ text string }

func (e notFoundError) Error() string { return e.text }
func (e notFoundError) Unwrap() error { return errdefs.ErrNotFound }

// RestartPeer restarts the peer named name: if it is running it is
// stopped first (SIGTERM, as Stop does), so that a restart always leaves a
// fresh process, as `systemctl restart` does. It returns the peer and
// whether it was running. Restarts of one peer happen one at a time.
func (pn *ProcessNet) RestartPeer(ctx context.Context, name string) (_ *ProcessPeer, wasRunning bool, err error) {
	p, err := pn.Peer(name)
	if err != nil {
		return nil, false, err
	}
	p.restarting.Lock()
	defer p.restarting.Unlock()
	if wasRunning = p.Running(); wasRunning {
		// How it ended does not stop the restart: it was asked to end, and
		// ends within stopGrace whatever it does; its log keeps the rest.
		_ = p.stop()
	}
	return p, wasRunning, p.restartLocked(ctx)
}

// RestartDead restarts every peer whose process has ended, one after the
// other, and returns those it restarted. It goes on past a failure and
// returns every error.
func (pn *ProcessNet) RestartDead(ctx context.Context) ([]*ProcessPeer, error) {
	var restarted []*ProcessPeer
	var errs []error
	for _, p := range pn.Peers {
		if p.Running() {
			continue
		}
		p.restarting.Lock()
		err := p.restartLocked(ctx)
		p.restarting.Unlock()
		switch {
		case errors.Is(err, errdefs.ErrAlreadyExists):
			// restarted meanwhile by someone else
		case err != nil:
			errs = append(errs, err)
		default:
			restarted = append(restarted, p)
		}
	}
	return restarted, errors.Join(errs...)
}

// stop sends SIGTERM, waits up to stopGrace, then kills.
func (p *ProcessPeer) stop() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopping = cmd != nil
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	// A first SIGTERM drains the peer: its tasks may end, results are
	// delivered. A testnet stops its peers now, as a machine going down
	// would after its grace: a second SIGTERM, when the drain takes more
	// than drainGrace, kills what still runs.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return p.ExitErr()
	case <-time.After(drainGrace):
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-done:
		return p.ExitErr()
	case <-time.After(stopGrace):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("testnet: %s did not stop within %s of SIGTERM; killed", p.Name, stopGrace)
	}
}

// WaitReady waits until every peer sees every other peer in its peer list.
func (pn *ProcessNet) WaitReady(ctx context.Context) error {
	for _, p := range pn.Peers {
		if err := waitSees(ctx, p, pn.others(p)); err != nil {
			return err
		}
	}
	return nil
}

// WaitRejoined waits until p and every other running peer see each other.
func (pn *ProcessNet) WaitRejoined(ctx context.Context, p *ProcessPeer) error {
	var live []string
	for _, q := range pn.Peers {
		if q == p || !q.Running() {
			continue
		}
		live = append(live, q.id())
		if err := waitSees(ctx, q, []string{p.id()}); err != nil {
			return err
		}
	}
	return waitSees(ctx, p, live)
}

func (pn *ProcessNet) others(p *ProcessPeer) []string {
	var ids []string
	for _, q := range pn.Peers {
		if q != p {
			ids = append(ids, q.id())
		}
	}
	return ids
}

func waitSees(ctx context.Context, p *ProcessPeer, ids []string) error {
	c, err := apiclient.Dial(p.DataDir)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		peers, err := c.Peers(ctx, false)
		if err == nil {
			seen := map[string]bool{}
			for _, q := range peers {
				seen[q.GetId()] = true
			}
			all := true
			for _, id := range ids {
				all = all && seen[id]
			}
			if all {
				return nil
			}
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("testnet: %s exited (%v); see %s", p.Name, p.ExitErr(), p.LogFile)
		case <-ctx.Done():
			return fmt.Errorf("testnet: waiting for %s to see the mesh: %w", p.Name, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// Stop stops every peer (SIGTERM, then SIGKILL after a grace period) and
// waits for them; no peer starts afterwards. Safe to call more than once.
func (pn *ProcessNet) Stop() error {
	pn.mu.Lock()
	pn.stopped = true
	pn.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(pn.Peers))
	for i, p := range pn.Peers {
		wg.Go(func() { errs[i] = p.stop() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
