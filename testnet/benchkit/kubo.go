package benchkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// KuboPair is two Kubo daemons on loopback, profile "test", routing off,
// connected to each other: the baseline the workspace and artifacts
// benches compare with.
type KuboPair struct {
	bin   string
	repos [2]string
	procs [2]*exec.Cmd
}

// StartKubo starts the pair with repos under dir.
func StartKubo(ctx context.Context, bin, dir string) (*KuboPair, error) {
	k := &KuboPair{bin: bin}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for i := range 2 {
		repo := filepath.Join(dir, fmt.Sprintf("node%d", i+1))
		k.repos[i] = repo
		if out, err := k.Cmd(i, "init", "--profile=test").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("init: %v: %s", err, out)
		}
		for _, kv := range [][2]string{
			{"Routing.Type", `"none"`},
			{"Addresses.Swarm", `["/ip4/127.0.0.1/tcp/0"]`},
			{"Addresses.API", `"/ip4/127.0.0.1/tcp/0"`},
			{"Addresses.Gateway", `"/ip4/127.0.0.1/tcp/0"`},
			{"Bootstrap", `[]`},
		} {
			if out, err := k.Cmd(i, "config", "--json", kv[0], kv[1]).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("config %s: %v: %s", kv[0], err, out)
			}
		}
		d := k.Cmd(i, "daemon", "--offline=false")
		logf, _ := os.Create(filepath.Join(dir, fmt.Sprintf("node%d.log", i+1)))
		d.Stdout, d.Stderr = logf, logf
		if err := d.Start(); err != nil {
			return nil, err
		}
		k.procs[i] = d
		deadline := time.Now().Add(60 * time.Second)
		// A command run before the daemon is up would take the repo lock
		// itself; wait for the daemon to say it is ready.
		for log, _ := os.ReadFile(logf.Name()); !strings.Contains(string(log), "Daemon is ready"); log, _ = os.ReadFile(logf.Name()) {
			if time.Now().After(deadline) {
				k.Stop()
				return nil, fmt.Errorf("node%d did not start:\n%s", i+1, log)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	out, err := k.Cmd(0, "id", "-f", "<addrs>").Output()
	if err != nil {
		return nil, err
	}
	var addr string
	for _, a := range strings.Fields(string(out)) {
		if strings.Contains(a, "/tcp/") && strings.HasPrefix(a, "/ip4/127.0.0.1") {
			addr = a
		}
	}
	if o, err := k.Cmd(1, "swarm", "connect", addr).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("swarm connect %s: %v: %s", addr, err, o)
	}
	return k, nil
}

// Cmd is an ipfs command on node i (0 or 1).
func (k *KuboPair) Cmd(i int, args ...string) *exec.Cmd {
	c := exec.Command(k.bin, args...)
	c.Env = append(os.Environ(), "IPFS_PATH="+k.repos[i])
	return c
}

// Add adds dir or a file on node i (CIDv1, raw leaves) and returns its CID.
func (k *KuboPair) Add(i int, path string) (string, error) {
	out, err := k.Cmd(i, "add", "-r", "-Q", "--cid-version=1", "--raw-leaves", path).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kubo add: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// KuboFetchLimit bounds the Kubo fetch: a tree with an empty file never
// completes there (a zero-length raw block is answered with HAVE and never
// sent), and the run must go on.
const KuboFetchLimit = 120 * time.Second

// Pin fetches root on node i; false if it did not finish within
// KuboFetchLimit.
func (k *KuboPair) Pin(i int, root string) (bool, error) {
	c := k.Cmd(i, "pin", "add", root)
	if err := c.Start(); err != nil {
		return false, fmt.Errorf("kubo pin add: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return false, fmt.Errorf("kubo pin add: %w", err)
		}
		return true, nil
	case <-time.After(KuboFetchLimit):
		c.Process.Kill()
		<-done
		return false, nil
	}
}

// Stop stops both daemons.
func (k *KuboPair) Stop() {
	for _, p := range k.procs {
		if p != nil && p.Process != nil {
			p.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				p.Process.Kill()
			}
		}
	}
}
