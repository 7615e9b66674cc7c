package flood

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/node/datadir"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// ScenarioOptions configure RunScenario.
type ScenarioOptions struct {
	Binary string // a built cortex-peer
	Dir    string // holds the testnet's data dirs
	// HonestRuns is the number of honest tasks timed quiet and again under
	// the flood (default 3).
	HonestRuns int
	// Warmup is how long the flood runs before the honest tasks (default
	// 3 s): long enough for every attack to be at full rate.
	Warmup time.Duration
	// Flood configures the flooder (its Victim and MeshKey are filled in).
	Flood Config
	// Logf, if set, is told what happens.
	Logf func(format string, args ...any)
}

// HonestScript is the honest task: a shell loop of about half a second of
// CPU on an idle core of this machine, in a fresh container.
const HonestScript = `i=0; while [ $i -lt 60000 ]; do i=$((i+1)); done; echo done $i`

// Figures are what a scenario measured.
type Figures struct {
	Quiet, Flooded []time.Duration // the honest tasks, in order
	// Victim memory: resident set before the flood and its peak during it.
	RSSBefore, RSSPeak int64
	// CPU time the victim and the flooder (this process) spent during the
	// flood, and the flood's length: on one machine they share its cores
	// with the honest task.
	VictimCPU, FlooderCPU, FloodTime time.Duration
	VictimAlive                      bool
	Report                           Report
	// Warnings counts the victim's warning lines during the flood by
	// message.
	Warnings map[string]int
}

// Median of ds.
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// RunScenario starts two peers, times honest tasks submitted by one to
// the other, floods the other (the victim) from a third member, and times
// the same tasks again under the flood.
func RunScenario(ctx context.Context, opts ScenarioOptions) (Figures, error) {
	if opts.HonestRuns <= 0 {
		opts.HonestRuns = 3
	}
	if opts.Warmup <= 0 {
		opts.Warmup = 3 * time.Second
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var fig Figures
	pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: opts.Binary, N: 2, Dir: opts.Dir, ConfigEdits: testnet.TestNamespaceEdit})
	if err != nil {
		return fig, err
	}
	defer pn.Stop()
	if err := pn.WaitReady(ctx); err != nil {
		return fig, err
	}
	victim, honest := pn.Peers[0], pn.Peers[1]
	runHonest := func() (time.Duration, error) {
		start := time.Now()
		cmd := exec.CommandContext(ctx, opts.Binary, "run", "--data", honest.DataDir, "--peer", victim.ID, "--", "sh", "-c", HonestScript)
		cmd.Env = append(os.Environ(), "CORTEX_PEER_DATA=")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		d := time.Since(start)
		if err != nil || !strings.Contains(out.String(), "done 60000") {
			return d, fmt.Errorf("honest task: %v: %s", err, strings.TrimSpace(out.String()))
		}
		return d, nil
	}
	// The first run pulls nothing (the image is local) but warms the
	// caches of both peers; it is not counted.
	if _, err := runHonest(); err != nil {
		return fig, err
	}
	for range opts.HonestRuns {
		d, err := runHonest()
		if err != nil {
			return fig, err
		}
		fig.Quiet = append(fig.Quiet, d)
		logf("quiet honest task: %v", d.Round(time.Millisecond))
	}
	fig.RSSBefore = rss(victim.Pid())

	d, fc, err := datadir.Load(victim.DataDir)
	if err != nil {
		return fig, err
	}
	raw, err := d.ReadMeshKey(fc)
	if err != nil {
		return fig, err
	}
	key, err := p2p.DecodeMeshKey(raw)
	if err != nil {
		return fig, err
	}
	info, err := peer.AddrInfoFromString(victim.Addrs[0])
	if err != nil {
		return fig, fmt.Errorf("victim address %q: %w", victim.Addrs[0], err)
	}
	cfg := opts.Flood
	cfg.Victim, cfg.MeshKey = *info, key
	f, err := New(ctx, cfg)
	if err != nil {
		return fig, err
	}
	defer f.Close()
	logStart := fileSize(victim.LogFile)
	victimCPU0, selfCPU0, floodStart := cpuTime(victim.Pid()), selfCPU(), time.Now()
	fctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var rep Report
	wg.Go(func() { rep = f.Run(fctx) })
	var peak int64
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, rss(victim.Pid()))
			select {
			case <-fctx.Done():
				return
			case <-t.C:
			}
		}
	})
	logf("flooding %s from %s", victim.ID, f.ID())
	sleep(ctx, opts.Warmup)
	var runErr error
	for range opts.HonestRuns {
		d, err := runHonest()
		if err != nil {
			runErr = err
			break
		}
		fig.Flooded = append(fig.Flooded, d)
		logf("flooded honest task: %v", d.Round(time.Millisecond))
	}
	stop()
	wg.Wait()
	fig.VictimCPU, fig.FlooderCPU, fig.FloodTime = cpuTime(victim.Pid())-victimCPU0, selfCPU()-selfCPU0, time.Since(floodStart)
	fig.Report, fig.RSSPeak = rep, peak
	fig.VictimAlive = victim.Running()
	fig.Warnings = warnings(victim.LogFile, logStart)
	return fig, runErr
}

// rss is a process's resident set in bytes (0 if unknown).
func rss(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuTime is the CPU time a process has used (user and system).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after it do not.
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// warnings counts the WARN lines of a peer's log after offset by message.
func warnings(logFile string, offset int64) map[string]int {
	out := map[string]int{}
	fh, err := os.Open(logFile)
	if err != nil {
		return out
	}
	defer fh.Close()
	if _, err := fh.Seek(offset, 0); err != nil {
		return out
	}
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "level=WARN") {
			continue
		}
		msg := line
		if _, after, ok := strings.Cut(line, "msg="); ok {
			msg = after
			if strings.HasPrefix(msg, `"`) {
				if end := strings.Index(msg[1:], `"`); end >= 0 {
					msg = msg[1 : end+1]
				}
			} else if sp := strings.IndexByte(msg, ' '); sp >= 0 {
				msg = msg[:sp]
			}
		}
		out[msg]++
	}
	return out
}
