package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cortex-peer/cortex-peer/bridges/procs"
	"github.com/cortex-peer/cortex-peer/testnet"
	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
)

// row is one line of the table; held is "ok", "NOT HELD" or "" (a figure).
type row struct{ what, figure, held string }

type report struct {
	rows []row
	bad  int
}

func (r *report) add(what, figure string, ok bool) {
	h := "ok"
	if !ok {
		h = "NOT HELD"
		r.bad++
	}
	r.rows = append(r.rows, row{what, figure, h})
}

func (r *report) note(what, figure string) { r.rows = append(r.rows, row{what, figure, ""}) }

// check looks, once load has ended, at everything that must hold, stops
// the testnet, and looks again at what a stopped testnet must not leave.
func (s *soak) check(ctx context.Context) *report {
	r := &report{}
	s.checkTasks(ctx, r)
	s.checkOps(r)
	s.checkChaos(r)
	s.checkStores(ctx, r)
	before := s.leaks(ctx, true)
	if err := s.pn.Stop(); err != nil {
		s.finding("stop: %v", err)
	}
	after := s.leaks(ctx, false)
	for i := range before {
		r.add(before[i].what, before[i].figure+"; after stop: "+after[i].figure, before[i].held == "ok" && after[i].held == "ok")
	}
	r.note("goroutines", "skipped: neither status --json nor the API exposes a goroutine count or pprof; threads and open files per peer are below instead")
	s.checkRSS(r)
	s.mu.Lock()
	findings := slices.Clone(s.findings)
	s.mu.Unlock()
	r.add("other findings", fmt.Sprintf("%d", len(findings)), len(findings) == 0)
	for _, f := range findings {
		r.rows = append(r.rows, row{"  finding", clip(f, 200), "NOT HELD"})
	}
	return r
}

func (s *soak) checkTasks(ctx context.Context, r *report) {
	s.mu.Lock()
	tasks := slices.Clone(s.tasks)
	s.mu.Unlock()
	// Exactly once: every task the soak submitted is in exactly one
	// peer's list, once; a task run twice, or recorded again after a
	// restart, shows here.
	count := map[string]int{}
	for _, p := range s.peers {
		list, err := s.tasksOf(ctx, p)
		if err != nil {
			s.finding("tasks on %s at the end: %v", p.name, err)
			continue
		}
		for _, ti := range list {
			if strings.HasPrefix(ti.marker(), "soak-") {
				count[ti.marker()]++
			}
		}
	}
	exact := 0
	for _, t := range tasks {
		n := count[t.marker]
		if n == 1 || n == 0 && t.outcome == outNotSubmitted {
			exact++
		} else {
			t.fail("recorded %d times across the peers' task lists", n)
		}
	}
	late := 0
	for _, t := range tasks {
		if t.logShort {
			s.recheckLog(ctx, t)
			if t.logLate {
				late++
			}
		}
	}
	outcomes := map[string]int{}
	var unresolved, sawLost, noProblems int
	var want, kept, runGot, runCut, watchGot int
	watches := map[string]int{}
	mergedWant, mergedOK := 0, 0
	for _, t := range tasks {
		outcomes[t.outcome]++
		if t.outcome == outUnresolved {
			unresolved++
		}
		if t.states["lost"] {
			sawLost++
		}
		if len(t.problems) == 0 {
			noProblems++
		}
		if t.final.Result != nil {
			want += t.logBytes
			kept += t.logBytes
			if clean(t.final.Result) {
				want += t.expectLen - t.logBytes // any shortfall shows as a difference
			}
			if t.runErr == "" {
				runGot += t.runGot
			} else {
				runCut++
			}
			mergedWant++
			if t.mergedOK {
				mergedOK++
			}
		}
		if t.watch != "" {
			watches[t.watch]++
			watchGot += t.watchGot
		}
	}
	coords, execs := map[*peer]bool{}, map[*peer]bool{}
	for _, t := range tasks {
		coords[t.coord], execs[t.exec] = true, true
	}
	each := 0
	if len(tasks) > 0 {
		each = tasks[0].expectLen
	}
	r.note(fmt.Sprintf("tasks submitted (run --workspace, ~25 s, %s of output each)", mb(each)),
		fmt.Sprintf("%d, %d in flight, from %d coordinators to %d executors (never the coordinator)", len(tasks), s.cfg.tasks, len(coords), len(execs)))
	for _, o := range []string{outDelivered, outDeliveredCut, outEndedByKill, outNotSubmitted} {
		r.note("  "+o, fmt.Sprint(outcomes[o]))
	}
	for o, n := range outcomes {
		if !slices.Contains([]string{outDelivered, outDeliveredCut, outEndedByKill, outNotSubmitted, outUnresolved}, o) {
			r.add("  "+o, fmt.Sprint(n), false)
		}
	}
	r.note("  marked lost by their coordinator at some point", fmt.Sprint(sawLost))
	r.add("  without a result at the end", fmt.Sprint(unresolved), unresolved == 0)
	r.add("  recorded exactly once across the 5 peers' task lists", fmt.Sprintf("%d of %d", exact, len(tasks)), exact == len(tasks))
	r.add("task output, as each task's kept log on its coordinator",
		fmt.Sprintf("%s kept of %s the tasks printed (a task a kill ended: what it printed before)", mb(kept), mb(want)), kept == want)
	r.note("  kept logs short when their task ended, complete at the end", fmt.Sprint(late))
	r.note("  run --json of the caller", fmt.Sprintf("%s received by %d runs that ended with a result, every byte as printed; %d runs cut by a kill or freeze", mb(runGot), len(tasks)-runCut-outcomes[outUnresolved], runCut))
	var ws []string
	for _, k := range []string{"complete", "cut, caught up", "WRONG"} {
		ws = append(ws, fmt.Sprintf("%s %d", k, watches[k]))
	}
	r.add("  logs -f watchers on other peers", fmt.Sprintf("%s (%s received live)", strings.Join(ws, ", "), mb(watchGot)), watches["WRONG"] == 0)
	r.add("results merged back into the caller's directory", fmt.Sprintf("%d of %d: out/TASK.txt, state.txt, a local edit kept, no conflict", mergedOK, mergedWant), mergedOK == mergedWant)
	// A later merge must not have undone an earlier one.
	intact, merged := 0, 0
	for _, t := range tasks {
		if t.mergedOK && clean(t.final.Result) {
			merged++
			if b, err := os.ReadFile(filepath.Join(t.dir, "out", t.marker+".txt")); err == nil && string(b) == string(expectedFile(t.marker)) {
				intact++
			}
		}
	}
	r.add("  merged files still intact at the end", fmt.Sprintf("%d of %d", intact, merged), intact == merged)
	r.add("tasks with any problem", fmt.Sprintf("%d of %d", len(tasks)-noProblems, len(tasks)), noProblems == len(tasks))
	for _, t := range tasks {
		for _, p := range t.problems {
			r.rows = append(r.rows, row{fmt.Sprintf("  %s (%s, %s→%s)", t.marker, t.id, t.coord.name, t.exec.name), clip(p, 200), "NOT HELD"})
		}
	}
}

func mb(n int) string { return fmt.Sprintf("%.2f MB", float64(n)/1e6) }

func (s *soak) checkOps(r *report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kind := range []string{opGet, opWsGet, opMerge, opBrowser} {
		st := s.ops[kind]
		if st == nil {
			if kind != opBrowser || s.cfg.browser {
				r.add(kind, "none ran", false)
			}
			continue
		}
		fig := fmt.Sprintf("%d steps ok; %d failed attempts retried (%d with no kill or freeze near), %d gave up", st.ok, st.failed, st.failedCalm, st.gaveUp)
		if st.bytes > 0 {
			fig += fmt.Sprintf("; %s moved and compared", mb(int(st.bytes)))
		}
		r.add(kind, fig, st.gaveUp == 0 && st.failedCalm == 0)
		if st.lastErr != "" {
			r.note("  last failure", st.lastErr)
		}
	}
}

func (s *soak) checkChaos(r *report) {
	var kills, freezes []string
	for _, w := range s.chaos.all() {
		e := fmt.Sprintf("%s@%s (%s)", w.peer.name, mmss(w.from.Sub(s.start)), w.note)
		if w.kind == "kill" {
			kills = append(kills, e)
		} else {
			freezes = append(freezes, e)
		}
	}
	r.note(fmt.Sprintf("kills: SIGKILL of a random peer every %s, restarted on its data dir", s.cfg.killEvery), fmt.Sprintf("%d: %s", len(kills), strings.Join(kills, "; ")))
	r.note(fmt.Sprintf("partitions: SIGSTOP of a random peer for %s, then SIGCONT", s.cfg.freeze), fmt.Sprintf("%d: %s", len(freezes), strings.Join(freezes, "; ")))
}

func mmss(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// checkStores runs ws verify on every peer: every pin's DAG whole, every
// block hashing to its CID, after the kills.
func (s *soak) checkStores(ctx context.Context, r *report) {
	var figs []string
	ok := true
	for _, p := range s.peers {
		res, err := s.cli(ctx, 10*time.Minute, "ws", "verify", "--json", "--data", p.dir)
		var v struct {
			Blocks  int   `json:"blocks"`
			Bytes   int64 `json:"bytes"`
			Missing int   `json:"missing_count"`
			Corrupt int   `json:"corrupt_count"`
		}
		if err != nil || json.Unmarshal(res.stdout, &v) != nil {
			ok = false
			figs = append(figs, fmt.Sprintf("%s: %v %s", p.name, err, res))
			continue
		}
		if res.code != 0 || v.Missing+v.Corrupt > 0 {
			ok = false
		}
		figs = append(figs, fmt.Sprintf("%s %d blocks %d/%d", p.name, v.Blocks, v.Missing, v.Corrupt))
	}
	r.add("ws verify of every peer's store (blocks, missing/corrupt)", strings.Join(figs, "; "), ok)
}

// leaks counts what the soak's peers must not leave behind: containers
// in the test namespace labelled with a soak peer as owner, mounts under
// the soak's dir, and Chromium processes of the peers' browser dirs. With
// the peers running, it gives them cleanupWithin to remove what tasks
// and restarts left, and allows each its one shared Chromium.
func (s *soak) leaks(ctx context.Context, running bool) []row {
	deadline := time.Now().Add(cleanupWithin)
	var containers, mounts []string
	var chromium map[string]int
	for {
		containers = s.containers(ctx)
		mounts = mountsUnder(s.root)
		chromium = s.chromium()
		extra := 0
		for _, n := range chromium {
			if running && n > 1 || !running && n > 0 {
				extra++
			}
		}
		if len(containers) == 0 && len(mounts) == 0 && extra == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(resolvePoll)
	}
	when := "running peers"
	if !running {
		when = "stopped"
	}
	var ch []string
	chOK := true
	for _, p := range s.peers {
		n := chromium[p.name]
		ch = append(ch, fmt.Sprintf("%s %d", p.name, n))
		chOK = chOK && (n == 0 || running && n == 1)
	}
	held := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "NOT HELD"
	}
	return []row{
		{"leaked containers (ns " + testnet.TestNamespace + ", owner a soak peer; tasks are theirs)", fmt.Sprintf("%s: %d %s", when, len(containers), clip(strings.Join(containers, " "), 120)), held(len(containers) == 0)},
		{"leaked mounts under the soak's dir (/proc/self/mountinfo)", fmt.Sprintf("%s: %d %s", when, len(mounts), clip(strings.Join(mounts, " "), 120)), held(len(mounts) == 0)},
		{"Chromium main processes per peer (one shared per peer at most)", fmt.Sprintf("%s: %s", when, strings.Join(ch, ", ")), held(chOK)},
	}
}

func (s *soak) containers(ctx context.Context) []string {
	var ids []string
	for _, p := range s.peers {
		cctx, cancel := context.WithTimeout(ctx, cliTimeout)
		out, err := exec.CommandContext(cctx, "ctr", "-n", testnet.TestNamespace, "containers", "ls", "-q",
			`labels."io.cortex-peer.owner"==`+p.id).Output()
		cancel()
		if err != nil {
			ids = append(ids, fmt.Sprintf("(ctr: %v)", err))
			continue
		}
		for _, id := range strings.Fields(string(out)) {
			ids = append(ids, p.name+":"+id)
		}
	}
	return ids
}

// mountsUnder lists the mount points at or under dir, and bind mounts
// whose source is there.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return []string{err.Error()}
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text()) // id parent major:minor root mountpoint ...
		if len(fields) < 5 {
			continue
		}
		for _, p := range fields[3:5] {
			if p == dir || strings.HasPrefix(p, dir+"/") {
				found = append(found, fields[4])
				break
			}
		}
	}
	return found
}

// chromium counts the Chromium main processes (not its renderers or
// helpers, which carry --type=) of each peer's browser dir, which the
// peer's config puts under the temp dir, named by its data dir's hash.
func (s *soak) chromium() map[string]int {
	counts := map[string]int{}
	for _, p := range s.peers {
		sum := sha256.Sum256([]byte(p.dir))
		dir := filepath.Join(os.TempDir(), "cortex-browser-"+hex.EncodeToString(sum[:6])) + "/"
		match := procs.CmdlineContains("--user-data-dir=" + dir)
		for _, pid := range procs.Live(match) {
			cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if !strings.Contains(string(cl), "--type=") {
				counts[p.name]++
			}
		}
	}
	return counts
}

// checkRSS reports each peer's RSS at warm-up and at the end. A peer
// killed during the run is measured over the life of its last process,
// from warmupFraction into it; one restarted too late for that is n/a.
func (s *soak) checkRSS(r *report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	span := s.loadEnd.Sub(s.start)
	warm := s.start.Add(time.Duration(warmupFraction * float64(span)))
	for _, p := range s.peers {
		all := s.samples[p]
		if len(all) == 0 {
			r.add("RSS "+p.name, "no samples", false)
			continue
		}
		last := all[len(all)-1]
		var life []sample
		for _, x := range all {
			if x.pid == last.pid {
				life = append(life, x)
			}
		}
		born := life[0].at
		from := warm
		if t := born.Add(time.Duration(warmupFraction * float64(span))); t.After(from) {
			from = t
		}
		i := sort.Search(len(life), func(i int) bool { return !life[i].at.Before(from) })
		restarts := 0
		for k := 1; k < len(all); k++ {
			if all[k].pid != all[k-1].pid {
				restarts++
			}
		}
		ctxNote := fmt.Sprintf("threads %d, open files %d at the end", last.threads, last.fds)
		if restarts > 0 {
			ctxNote = fmt.Sprintf("restarted %dx, last at %s; ", restarts, mmss(born.Sub(s.start))) + ctxNote
		}
		if i >= len(life) || last.at.Sub(life[i].at) < time.Duration(warmupFraction*float64(span)) {
			r.note("RSS "+p.name, fmt.Sprintf("%s at the end; n/a: its last process lived too short a while to measure (%s)", mib(last.rss), ctxNote))
			continue
		}
		base := life[i]
		growth := float64(last.rss)/float64(base.rss) - 1
		flat := float64(last.rss) <= rssGrowthLimit*float64(base.rss)
		verdict := "flat"
		if !flat {
			verdict = "not flat"
		}
		r.add("RSS "+p.name, fmt.Sprintf("%s at %s → %s at %s (%+.0f%%, %s; %s)", mib(base.rss), mmss(base.at.Sub(s.start)), mib(last.rss), mmss(last.at.Sub(s.start)), 100*growth, verdict, ctxNote), flat)
	}
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// print writes the table and says whether everything held.
func (r *report) print(w io.Writer, s *soak) bool {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "soak: %d peers as processes, %s of load from %s, seed %d; load average at the end %s\n",
		numPeers, s.loadEnd.Sub(s.start).Round(time.Second), s.start.Format("15:04:05"), s.cfg.seed, benchkit.LoadAvg())
	fmt.Fprintf(w, "a partition is made by freezing a peer's process with SIGSTOP for %s (its connections stay open, nothing answers), healed by SIGCONT\n\n", s.cfg.freeze)
	wWhat, wFig := 0, 0
	for _, x := range r.rows {
		wWhat = max(wWhat, len([]rune(x.what)))
		wFig = max(wFig, min(len([]rune(x.figure)), 110))
	}
	fmt.Fprintf(w, "%-*s  %-*s  %s\n", wWhat, "check", wFig, "figure", "held")
	for _, x := range r.rows {
		fmt.Fprintf(w, "%-*s  %-*s  %s\n", wWhat, x.what, wFig, x.figure, x.held)
	}
	if r.bad == 0 {
		fmt.Fprintln(w, "\neverything held")
		return true
	}
	fmt.Fprintf(w, "\n%d checks did not hold\n", r.bad)
	return false
}
