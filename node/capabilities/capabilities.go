// Package capabilities finds out what this machine offers to tasks
// (containerd, gVisor, Chromium, gopls, CPUs, memory), for the heartbeat and
// the status. It imports nothing of the peer.
package capabilities

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol"
)

// Where the probes look. The containerd socket is Debian's default.
const (
	containerdSocket   = "/run/containerd/containerd.sock"
	containerdProbeTTL = 2 * time.Second
	probeCacheTTL      = 30 * time.Second
)

var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// Prober finds out what this machine can offer to tasks. Results are cached
// for probeCacheTTL so the heartbeat stays cheap.
type Prober struct {
	mu      sync.Mutex
	at      time.Time
	caps    protocol.Capabilities
	lookups func(name string) bool
}

// NewProber returns a prober that looks on this machine.
func NewProber() *Prober { return &Prober{lookups: hasExecutable} }

// Capabilities reports what this machine offers, from a cache.
func (p *Prober) Capabilities() protocol.Capabilities {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.at.IsZero() && time.Since(p.at) < probeCacheTTL {
		return p.caps
	}
	p.caps = protocol.Capabilities{
		Containerd: containerdReachable(),
		GVisor:     p.lookups("runsc"),
		Gopls:      p.lookups("gopls"),
	}
	for _, n := range chromiumNames {
		if p.lookups(n) {
			p.caps.Chromium = true
			break
		}
	}
	p.at = time.Now()
	return p.caps
}

// containerdReachable dials containerd's socket; a socket file without a
// daemon behind it does not count.
func containerdReachable() bool {
	ctx, cancel := context.WithTimeout(context.Background(), containerdProbeTTL)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", containerdSocket)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// hasExecutable looks in $PATH and in the Go bin directories, where `go
// install` puts gopls.
func hasExecutable(name string) bool {
	if _, err := exec.LookPath(name); err == nil {
		return true
	}
	var dirs []string
	if gp := os.Getenv("GOBIN"); gp != "" {
		dirs = append(dirs, gp)
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		dirs = append(dirs, filepath.Join(gp, "bin"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, name)); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}

// Capacity reports CPUs and memory from the kernel, and the tasks running.
func Capacity(runningTasks int) protocol.Capacity {
	c := protocol.Capacity{CPUs: uint32(goruntime.NumCPU()), RunningTasks: uint32(max(runningTasks, 0))}
	c.MemoryTotalBytes, c.MemoryAvailableBytes = meminfo()
	return c
}

func meminfo() (total, available uint64) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "MemTotal:":
			total = kb << 10
		case "MemAvailable:":
			available = kb << 10
		}
	}
	return total, available
}
