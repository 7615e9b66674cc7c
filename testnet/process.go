package testnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Defaults of process testnets.
const (
	DefaultProcessHeartbeat = time.Second
	pollInterval            = 50 * time.Millisecond
	stopGrace               = 10 * time.Second
	loopbackListen          = "/ip4/127.0.0.1/tcp/0"
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

	opts ProcessOptions
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// ProcessNet is a running process testnet.
type ProcessNet struct {
	Peers []*ProcessPeer
	opts  ProcessOptions
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
	for i := range opts.N {
		name := "peer" + strconv.Itoa(i+1)
		p := &ProcessPeer{Name: name, DataDir: filepath.Join(opts.Dir, name), opts: opts}
		p.LogFile = filepath.Join(p.DataDir, "peer.log")
		args := []string{"init", "--data", p.DataDir, "--listen", loopbackListen, "--no-mdns", "--heartbeat", opts.Heartbeat.String(), "--label", "testnet=" + name}
		for _, r := range opts.AllowedRoots {
			args = append(args, "--allowed-root", r)
		}
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
				if err := q.start(); err != nil {
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

func (p *ProcessPeer) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("testnet: %s log: %w", p.Name, err)
	}
	cmd := exec.Command(p.opts.Binary, "join", "--data", p.DataDir, "--log-level", p.opts.LogLevel)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// A testnet that dies takes its peers with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("testnet: start %s: %w", p.Name, err)
	}
	p.cmd = cmd
	done := make(chan struct{})
	p.done = done
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
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
			p.ID = id.GetId()
			p.Addrs = id.GetAddrs()
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

// Restart starts the peer again after it exited, with the same data dir.
func (p *ProcessPeer) Restart(ctx context.Context) error {
	select {
	case <-p.Exited():
	default:
		return fmt.Errorf("testnet: %s still running: %w", p.Name, errdefs.ErrAlreadyExists)
	}
	if err := p.start(); err != nil {
		return err
	}
	return p.waitAPI(ctx)
}

// stop sends SIGTERM, waits up to stopGrace, then kills.
func (p *ProcessPeer) stop() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
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

func (pn *ProcessNet) others(p *ProcessPeer) []string {
	var ids []string
	for _, q := range pn.Peers {
		if q != p {
			ids = append(ids, q.ID)
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
// waits for them. Safe to call more than once.
func (pn *ProcessNet) Stop() error {
	var wg sync.WaitGroup
	errs := make([]error, len(pn.Peers))
	for i, p := range pn.Peers {
		wg.Go(func() { errs[i] = p.stop() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// FirstExit returns a channel that receives the first peer that exits.
func (pn *ProcessNet) FirstExit(ctx context.Context) <-chan *ProcessPeer {
	ch := make(chan *ProcessPeer, len(pn.Peers))
	for _, p := range pn.Peers {
		go func() {
			select {
			case <-p.Exited():
				ch <- p
			case <-ctx.Done():
			}
		}()
	}
	return ch
}
