package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// sandboxCheck is one property of the sandbox, checked from inside a task.
type sandboxCheck struct {
	name   string
	script string
	root   bool // run as uid 0 (the policy allows it): the sandbox must hold without the help of file permissions
	limits Limits
	gvisor bool // the check also holds under gVisor
	check  func(t *testing.T, r ran, spec Spec)
}

// hostMarker is a file on the host, outside anything a task may see.
type hostMarker struct {
	paths  []string
	secret string
}

func newHostMarker(t *testing.T) hostMarker {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	m := hostMarker{secret: "host-secret-" + hex.EncodeToString(b[:])}
	for _, dir := range []string{"/root", "/tmp"} {
		p := filepath.Join(dir, "cortex-marker-"+hex.EncodeToString(b[:]))
		if err := os.WriteFile(p, []byte(m.secret), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(p) })
		m.paths = append(m.paths, p)
	}
	return m
}

func wantStdout(want string) func(*testing.T, ran, Spec) {
	return func(t *testing.T, r ran, _ Spec) {
		t.Helper()
		if r.Stdout != want {
			t.Errorf("stdout %q, want %q (stderr %q, exit %d)", r.Stdout, want, r.Stderr, r.Result.ExitCode)
		}
	}
}

func sandboxChecks(m hostMarker) []sandboxCheck {
	allRC := regexp.MustCompile(`rc=(\d+)`)
	allFailed := func(t *testing.T, r ran, _ Spec) {
		t.Helper()
		rcs := allRC.FindAllStringSubmatch(r.Stdout, -1)
		if len(rcs) == 0 {
			t.Fatalf("no rc= in stdout %q (stderr %q)", r.Stdout, r.Stderr)
		}
		for _, rc := range rcs {
			if rc[1] == "0" {
				t.Errorf("an operation that must fail succeeded: stdout %q, stderr %q", r.Stdout, r.Stderr)
			}
		}
	}
	return []sandboxCheck{
		{
			name:   "no capabilities",
			script: `grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status`,
			gvisor: true,
			check: func(t *testing.T, r ran, _ Spec) {
				// gVisor has no CapAmb line; the others must be there.
				seen := map[string]bool{}
				for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
					k, v, _ := strings.Cut(l, ":\t")
					seen[k] = true
					if v != "0000000000000000" {
						t.Errorf("%s", l)
					}
				}
				for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd"} {
					if !seen[k] {
						t.Errorf("no %s in %q", k, r.Stdout)
					}
				}
			},
		},
		{
			name:   "no capabilities as root",
			root:   true,
			script: `grep -E '^Cap(Eff|Bnd):' /proc/self/status; id -u`,
			check:  wantStdout("CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n0\n"),
		},
		{
			name:   "no new privileges, seccomp filter",
			script: `grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status`,
			check:  wantStdout("NoNewPrivs:\t1\nSeccomp:\t2\n"),
		},
		{
			name:   "non-root user",
			script: `id -u; id -g`,
			gvisor: true,
			check:  wantStdout("65534\n65534\n"),
		},
		{
			name:   "read-only root",
			root:   true,
			gvisor: true,
			script: `for f in /x /etc/x /bin/x /workspace/x; do touch $f; echo rc=$?; done`,
			check:  allFailed,
		},
		{
			name:   "read-only root mount",
			script: `grep -E '^[^ ]+ / ' /proc/self/mounts`,
			check: func(t *testing.T, r ran, _ Spec) {
				if opts := strings.Fields(r.Stdout); len(opts) < 4 || !strings.HasPrefix(opts[3], "ro,") {
					t.Errorf("root mount %q is not read-only", r.Stdout)
				}
			},
		},
		{
			name:   "sysrq-trigger",
			root:   true,
			script: `echo h > /proc/sysrq-trigger; echo rc=$?`,
			check:  allFailed,
		},
		{
			name:   "sysrq-trigger as user",
			gvisor: true,
			script: `echo h > /proc/sysrq-trigger; echo rc=$?`,
			check:  allFailed,
		},
		{
			name:   "mount",
			root:   true,
			gvisor: true,
			script: `mount -t tmpfs x /tmp; echo rc=$?; mount -t proc proc /tmp; echo rc=$?; umount /proc; echo rc=$?`,
			check:  allFailed,
		},
		{
			name:   "only loopback",
			gvisor: true,
			script: `ls /sys/class/net; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '`,
			check: func(t *testing.T, r ran, _ Spec) {
				// gVisor has no /sys/class/net entries; /proc/net/dev is enough.
				for _, l := range strings.Fields(r.Stdout) {
					if l != "lo" {
						t.Errorf("network interface %q visible (stdout %q)", l, r.Stdout)
					}
				}
				if !strings.Contains(r.Stdout, "lo") {
					t.Errorf("no loopback: %q", r.Stdout)
				}
			},
		},
		{
			name:   "own processes only",
			gvisor: true,
			script: `ls /proc | grep -E '^[0-9]+$'`,
			check: func(t *testing.T, r ran, _ Spec) {
				pids := strings.Fields(r.Stdout)
				if len(pids) == 0 || len(pids) > 5 {
					t.Errorf("%d processes visible: %v", len(pids), pids)
				}
				for _, p := range pids {
					if n, _ := strconv.Atoi(p); n > 20 {
						t.Errorf("pid %d visible: not the task's own namespace (%v)", n, pids)
					}
				}
			},
		},
		{
			name:   "host files invisible",
			root:   true,
			gvisor: true,
			script: fmt.Sprintf(`cat %s 2>/dev/null; ls /root /tmp 2>/dev/null; test -e /etc/hostname && echo host-hostname; echo end`, strings.Join(m.paths, " ")),
			check: func(t *testing.T, r ran, _ Spec) {
				if strings.Contains(r.Stdout, m.secret) || strings.Contains(r.Stdout, "cortex-marker") || strings.Contains(r.Stdout, "host-hostname") {
					t.Errorf("host files visible: %q", r.Stdout)
				}
				if !strings.HasSuffix(r.Stdout, "end\n") {
					t.Errorf("stdout %q", r.Stdout)
				}
			},
		},
		{
			name:   "hostname is the short task id",
			gvisor: true,
			script: `hostname`,
			check: func(t *testing.T, r ran, spec Spec) {
				if want := shortHostname(spec.ID) + "\n"; r.Stdout != want {
					t.Errorf("hostname %q, want %q", r.Stdout, want)
				}
			},
		},
		{
			name:   "tmp is capped, noexec, nosuid, nodev",
			limits: Limits{TmpBytes: 8 << 20},
			script: `grep ' /tmp ' /proc/self/mounts; cp /bin/busybox /tmp/bb; /tmp/bb true; echo exec rc=$?; dd if=/dev/zero of=/tmp/big bs=1M count=32 2>/dev/null; echo fill rc=$?`,
			check: func(t *testing.T, r ran, _ Spec) {
				mnt, rest, _ := strings.Cut(r.Stdout, "\n")
				for _, opt := range []string{"nosuid", "nodev", "noexec", "size=8192k"} {
					if !strings.Contains(mnt, opt) {
						t.Errorf("/tmp mount %q lacks %s", mnt, opt)
					}
				}
				if strings.Contains(rest, "exec rc=0") || strings.Contains(rest, "fill rc=0") {
					t.Errorf("/tmp allowed exec or outgrew its size: %q", rest)
				}
			},
		},
		{
			name:   "open files limit",
			limits: Limits{OpenFiles: 100},
			gvisor: true,
			script: `ulimit -n`,
			check:  wantStdout("100\n"),
		},
	}
}

// The security profile holds, seen from inside a runc task.
func TestSandboxRunc(t *testing.T) {
	t.Parallel()
	runSandboxChecks(t, IsolationRunc)
}

// The same spec under gVisor: the task talks to gVisor's kernel and the
// profile's guarantees hold there too.
func TestSandboxGVisor(t *testing.T) {
	t.Parallel()
	runSandboxChecks(t, IsolationGVisor)
}

func runSandboxChecks(t *testing.T, iso Isolation) {
	te := newTestExec(t, func(c *Config) { c.Policy.AllowRoot = true })
	if iso == IsolationGVisor && te.runscNone == "" {
		t.Fatalf("runsc not found: %s", needDeps)
	}
	m := newHostMarker(t)
	if iso == IsolationGVisor {
		t.Run("gVisor kernel", func(t *testing.T) {
			t.Parallel()
			spec := te.spec(`dmesg; uname -a`)
			spec.Isolation = iso
			r := te.mustRun(t, spec)
			if !strings.Contains(r.Stdout, "gVisor") {
				t.Errorf("dmesg and uname do not mention gVisor: %q", r.Stdout)
			}
		})
	}
	for _, c := range sandboxChecks(m) {
		if iso == IsolationGVisor && !c.gvisor {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			spec := te.spec(c.script)
			spec.Isolation = iso
			spec.Limits = c.limits
			if c.root {
				spec.UID = new(uint32)
			}
			r := te.mustRun(t, spec)
			c.check(t, r, spec)
		})
	}
}

// The cgroup limits are what the spec asked for, seen from the host while
// the task runs; swap is pinned to zero where the host accounts for it.
func TestCgroupLimits(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	spec := te.spec(`echo up; sleep 100`)
	spec.Limits = Limits{MemoryBytes: 64 << 20, CPUs: 0.5, Pids: 50}
	task, err := te.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		task.Kill(ctx)
		collect(ctx, t, task)
	}()
	<-task.Output() // running
	read := func(parts ...string) string {
		p := filepath.Join(append([]string{"/sys/fs/cgroup"}, parts...)...)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s: %v", p, err)
		}
		return strings.TrimSpace(string(b))
	}
	want := map[string]string{}
	mem := strconv.Itoa(64 << 20)
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil { // v1
		dir := func(ctrl, file string) string { return filepath.Join(ctrl, testNamespace, spec.ID, file) }
		want[dir("memory", "memory.limit_in_bytes")] = mem
		want[dir("cpu", "cpu.cfs_quota_us")] = "50000"
		want[dir("cpu", "cpu.cfs_period_us")] = "100000"
		want[dir("pids", "pids.max")] = "50"
		if te.pinSwap {
			want[dir("memory", "memory.memsw.limit_in_bytes")] = mem
		}
	} else { // v2
		dir := func(file string) string { return filepath.Join(testNamespace, spec.ID, file) }
		want[dir("memory.max")] = mem
		want[dir("cpu.max")] = "50000 100000"
		want[dir("pids.max")] = "50"
		if te.pinSwap {
			want[dir("memory.swap.max")] = "0"
		}
	}
	for file, v := range want {
		if got := read(file); got != v {
			t.Errorf("%s = %q, want %q", file, got, v)
		}
	}
}

// A fork bomb hits the pids limit; the peer stays responsive and the task
// ends at its timeout with every process gone.
func TestForkBomb(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	var ticks atomic.Int64
	stop := make(chan struct{})
	tickerDone := make(chan struct{})
	go func() {
		defer close(tickerDone)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				ticks.Add(1)
			}
		}
	}()
	// The task's own shell forks once, before the bomb starts, then execs
	// sleep: once the bomb fills the pids limit a fork of the shell would
	// fail and end it early with "can't fork" (exit 2), a race under load.
	spec := te.spec(`bomb() { bomb | bomb & }; (bomb) & exec sleep 100`)
	spec.Limits.Pids = 64
	spec.Timeout = 3 * time.Second
	start := time.Now()
	r := te.mustRun(t, spec)
	elapsed := time.Since(start)
	close(stop)
	<-tickerDone
	if !r.Result.TimedOut {
		t.Errorf("result %+v: want ended by its timeout", r.Result)
	}
	// A 50 ms ticker over the run: a stalled peer would miss most ticks.
	if want := int64(elapsed / (50 * time.Millisecond) / 2); ticks.Load() < want {
		t.Errorf("%d ticks in %v: the peer stalled (want at least %d)", ticks.Load(), elapsed, want)
	}
	if !strings.Contains(r.Stderr, "can't fork") {
		t.Errorf("the pids limit was not hit: stderr %.300q", r.Stderr)
	}
}

// A task that outgrows its memory is killed by the kernel and reported so.
func TestOOMKilled(t *testing.T) {
	t.Parallel()
	te := newTestExec(t)
	// tail keeps the last lines of its input: with no newline, all of it.
	spec := te.spec(`head -c 629145600 /dev/zero | tail`)
	spec.Limits.MemoryBytes = 64 << 20
	r := te.mustRun(t, spec)
	if !r.Result.OOMKilled {
		t.Errorf("result %+v: want OOM killed (stderr %q)", r.Result, r.Stderr)
	}
	if r.Result.PeakMemoryBytes > 80<<20 || r.Result.PeakMemoryBytes < 32<<20 {
		t.Errorf("peak memory %d, want near the 64 MiB limit", r.Result.PeakMemoryBytes)
	}
}

// CVE-2024-21626: a working directory of /proc/self/fd/N (a descriptor runc
// leaked from the host) gave the task the host's filesystem. Policy.Apply
// refuses such a workdir; underneath, runc refuses to start the task or the
// task cannot reach the host through it.
func TestWorkdirProcFD(t *testing.T) {
	t.Parallel()
	te := newTestExec(t, func(c *Config) { c.Policy.AllowRoot = true })
	m := newHostMarker(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for n := 3; n <= 20; n++ {
		spec := te.spec(`pwd; cat ` + strings.Repeat("../", 12) + "root/" + filepath.Base(m.paths[0]) + ` ` + strings.Repeat("../", 12) + "tmp/" + filepath.Base(m.paths[1]))
		spec.Workdir = fmt.Sprintf("/proc/self/fd/%d", n)
		_, err := te.Start(ctx, spec)
		wantKind(t, err, errdefs.ErrInvalid)

		// Past the policy, straight to the runtime (as root, the worst case).
		spec.Workdir = "/"
		spec.UID = new(uint32)
		applied, err := te.cfg.Policy.Apply(spec)
		if err != nil {
			t.Fatal(err)
		}
		applied.Workdir = fmt.Sprintf("/proc/self/fd/%d", n)
		task, err := te.startApplied(ctx, applied)
		if err != nil {
			t.Logf("fd %d: refused: %v", n, err)
			continue // runc refused: the fix is in
		}
		r := collect(ctx, t, task)
		if strings.Contains(r.Stdout, m.secret) || r.Result.ExitCode == 0 {
			t.Errorf("fd %d: task ran in a host directory: exit %d, stdout %q, stderr %q", n, r.Result.ExitCode, r.Stdout, r.Stderr)
		}
	}
}

// Host network, where the policy grants it, shows the host's interfaces
// (under runc and gVisor), and nothing else of the profile changes.
func TestHostNetwork(t *testing.T) {
	t.Parallel()
	te := newTestExec(t, func(c *Config) { c.Policy.AllowHostNet = true })
	host, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, iso := range []Isolation{IsolationRunc, IsolationGVisor} {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			spec := te.spec(`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; id -u; grep CapEff /proc/self/status`)
			spec.Network = NetworkHost
			spec.Isolation = iso
			r := te.mustRun(t, spec)
			for _, ifc := range host {
				if ifc.Name() != "lo" && !strings.Contains(r.Stdout, ifc.Name()+"\n") {
					t.Errorf("host interface %s not visible: %q", ifc.Name(), r.Stdout)
				}
			}
			if !strings.Contains(r.Stdout, "65534\nCapEff:\t0000000000000000\n") {
				t.Errorf("stdout %q", r.Stdout)
			}
		})
	}
}
