// Command soak runs five peers of cortex-peer as processes under mixed
// load for a while (30 minutes by default): delegated tasks with
// workspaces whose output and files come back to the caller, logs -f
// watchers on other peers, fetches of what other peers added, and
// three-way merges, with a random peer killed with SIGKILL and restarted
// every few minutes and another frozen with SIGSTOP for 30 s (the soak's
// partition) in between. At the end it prints a table of what it did and
// what held, and exits 1 if anything did not.
//
//	make soak      # or: go run ./testnet/soak -bin bin/cortex-peer -duration 30m
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
)

const (
	numPeers = 5
	// cliTimeout bounds a client call other than run and logs -f: a get
	// stalls for a minute at most (its --stall-timeout) before it fails.
	cliTimeout = 3 * time.Minute
	// runTimeout bounds run and logs -f: the task's own timeout plus a
	// kill's lost_after and restart.
	runTimeout = taskTimeout + 3*time.Minute
	// resolveWithin is how long a task's result may take to reach its
	// coordinator after its run ended: a lost executor's restart and its
	// delivery, at the mesh's lost_after of a minute, fit several times.
	resolveWithin = 5 * time.Minute
	resolvePoll   = time.Second
	findPoll      = 250 * time.Millisecond
	// watchGrace is how long a logs -f watcher may go on after its task
	// has a result before it is stopped and counted as cut.
	watchGrace  = time.Minute
	mergeWithin = 30 * time.Second
	// retryFor bounds the retries of a fetch or a merge: past two kill
	// periods, what still fails is a finding.
	retryFor      = 4 * time.Minute
	retryPause    = 3 * time.Second
	transferPause = 10 * time.Second
	browserPause  = 45 * time.Second
	rejoinWithin  = 2 * time.Minute
	// chaosGrace is how long after a rejoin a failure is still put down
	// to the kill or the freeze before it: heartbeats, redials and
	// bitswap's want lists take that long to settle.
	chaosGrace = 45 * time.Second
	// cleanupWithin is how long the peers get, once load ends, to remove
	// containers and mounts their tasks and restarts left.
	cleanupWithin = time.Minute
	// rssGrowthLimit is the growth of a peer's RSS from warm-up to the
	// end past which it is not flat.
	rssGrowthLimit = 1.25
	// warmupFraction of the run, or of a restarted process's life, passes
	// before the RSS reading that growth is measured from.
	warmupFraction = 0.2
)

type config struct {
	bin         string
	dir         string
	duration    time.Duration
	killEvery   time.Duration
	freeze      time.Duration
	sampleEvery time.Duration
	tasks       int
	browser     bool
	seed        uint64
}

func (c config) validate() error {
	switch {
	case c.duration <= 0 || c.killEvery <= 0 || c.freeze <= 0 || c.sampleEvery <= 0:
		return errors.New("-duration, -kill-every, -freeze and -sample-every must be positive")
	case c.freeze >= c.killEvery:
		// A freeze starts half-way between kills; one longer than half a
		// period delays the next kill, one longer than a period leaves no
		// time without chaos at all.
		return fmt.Errorf("-freeze %s must be shorter than -kill-every %s", c.freeze, c.killEvery)
	case c.tasks < 1:
		return errors.New("-tasks must be at least 1")
	}
	return nil
}

// peer is a peer of the testnet as the soak addresses it; its id and dir
// never change across restarts.
type peer struct {
	name, id, dir string
	pp            *testnet.ProcessPeer
}

type soak struct {
	cfg   config
	log   *slog.Logger
	ctx   context.Context // the soak's whole life: ends on SIGINT
	pn    *testnet.ProcessNet
	peers []*peer
	root  string // the peers' data dirs and the workspaces, and nothing else
	work  string
	start time.Time
	chaos chaos

	rngMu sync.Mutex
	rng   *rand.Rand

	mu       sync.Mutex
	tasks    []*taskRun
	ops      map[string]*opStat
	samples  map[*peer][]sample
	findings []string
	loadEnd  time.Time
}

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "", "a built cortex-peer (cortex-peerd beside it); empty builds one")
	flag.StringVar(&cfg.dir, "dir", "", "where the peers and workspaces live (default: a new temporary dir, removed when everything held)")
	flag.DurationVar(&cfg.duration, "duration", 30*time.Minute, "how long the load runs")
	flag.DurationVar(&cfg.killEvery, "kill-every", 3*time.Minute, "a random peer is killed with SIGKILL and restarted this often; another is frozen half-way between")
	flag.DurationVar(&cfg.freeze, "freeze", 30*time.Second, "how long a frozen (SIGSTOP) peer stays frozen: the soak's partition")
	flag.DurationVar(&cfg.sampleEvery, "sample-every", 30*time.Second, "how often each peer's RSS is read")
	flag.IntVar(&cfg.tasks, "tasks", 3, "delegated tasks in flight")
	flag.BoolVar(&cfg.browser, "browser", true, "open a browser session on a peer now and then")
	flag.Uint64Var(&cfg.seed, "seed", 0, "seed of the random choices (0: from the clock; printed)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "soak")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	held, err := run(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	if !held {
		os.Exit(1)
	}
}

// run sets the testnet up, runs the load and the chaos for the duration,
// checks what must hold and prints the table. It says whether everything
// held; an error is a soak that could not run.
func run(ctx context.Context, cfg config, log *slog.Logger) (held bool, err error) {
	if err := cfg.validate(); err != nil {
		return false, err
	}
	if cfg.seed == 0 {
		cfg.seed = uint64(time.Now().UnixNano())
	}
	root := cfg.dir
	if root == "" {
		if root, err = os.MkdirTemp("", "cortex-soak-"); err != nil {
			return false, fmt.Errorf("soak dir: %w", err)
		}
	}
	if root, err = filepath.Abs(root); err != nil {
		return false, err
	}
	defer func() {
		if held && cfg.dir == "" {
			_ = os.RemoveAll(root)
			return
		}
		fmt.Printf("the peers' data dirs and logs (peer.log) are kept in %s\n", root)
	}()
	if cfg.bin == "" {
		if cfg.bin, err = testnet.Build(filepath.Join(root, "bin")); err != nil {
			return false, err
		}
	}
	s := &soak{
		cfg: cfg, log: log, ctx: ctx, root: root, work: filepath.Join(root, "work"),
		rng: rand.New(rand.NewPCG(cfg.seed, cfg.seed>>1)), ops: map[string]*opStat{}, samples: map[*peer][]sample{},
	}
	if err := os.MkdirAll(s.work, 0o755); err != nil {
		return false, fmt.Errorf("soak dir: %w", err)
	}
	log.Info("starting", "peers", numPeers, "dir", root, "duration", cfg.duration, "kill_every", cfg.killEvery, "freeze", cfg.freeze, "seed", cfg.seed)
	startCtx, cancel := context.WithTimeout(ctx, rejoinWithin)
	defer cancel()
	s.pn, err = testnet.StartProcesses(startCtx, testnet.ProcessOptions{
		Binary: cfg.bin, N: numPeers, Dir: filepath.Join(root, "peers"),
		AllowedRoots: []string{s.work}, ConfigEdits: testnet.TestNamespaceEdit,
	})
	if err != nil {
		return false, err
	}
	// Whatever happens below, no peer outlives the soak, and none stays
	// frozen.
	defer func() {
		for _, p := range s.pn.Peers {
			_ = p.Signal(syscall.SIGCONT)
		}
		_ = s.pn.Stop()
	}()
	if err := s.pn.WaitReady(startCtx); err != nil {
		return false, err
	}
	for _, p := range s.pn.Peers {
		s.peers = append(s.peers, &peer{name: p.Name, id: p.ID, dir: p.DataDir, pp: p})
	}

	s.start = time.Now()
	load, endLoad := context.WithTimeout(ctx, cfg.duration)
	defer endLoad()
	sampling, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() { s.sampleLoop(sampling) })
	defer func() { stopSampling(); sampler.Wait() }()

	var workers sync.WaitGroup
	workers.Go(func() { s.chaosLoop(load) })
	for w := range cfg.tasks {
		workers.Go(func() { s.taskWorker(load, w+1) })
	}
	workers.Go(func() { s.transferWorker(load) })
	var page context.CancelFunc = func() {}
	waitPage := func() {}
	if cfg.browser {
		var pageCtx context.Context
		pageCtx, page = context.WithCancel(ctx)
		url, wait, err := serveBrowserPage(pageCtx)
		if err != nil {
			page()
			return false, err
		}
		waitPage = wait
		workers.Go(func() { s.browserWorker(load, url) })
	}
	workers.Wait() // the last tasks end after load, each within its own bounds
	page()
	waitPage()
	s.loadEnd = time.Now()
	log.Info("load ended; checking", "took", s.loadEnd.Sub(s.start).Round(time.Second))
	stopSampling()
	sampler.Wait()
	s.sampleAll()

	rep := s.check(ctx)
	return rep.print(os.Stdout, s), nil
}

// pick returns a random peer that is up (neither killed nor frozen), other
// than those excluded.
func (s *soak) pick(exclude ...*peer) *peer {
	for {
		var cands []*peer
		for _, p := range s.peers {
			ok := !s.chaos.isOut(p)
			for _, e := range exclude {
				ok = ok && p != e
			}
			if ok {
				cands = append(cands, p)
			}
		}
		if len(cands) > 0 {
			s.rngMu.Lock()
			p := cands[s.rng.IntN(len(cands))]
			s.rngMu.Unlock()
			return p
		}
		// Only one peer is out at a time, so this is a rare moment.
		time.Sleep(findPoll)
	}
}

// addTask numbers t and records it.
func (s *soak) addTask(t *taskRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tasks = append(s.tasks, t)
	t.n = len(s.tasks)
}

// finding records something that did not hold, outside a task's record.
func (s *soak) finding(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.log.Warn("finding", "what", msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.findings = append(s.findings, msg)
}
