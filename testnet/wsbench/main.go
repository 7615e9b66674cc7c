// Command wsbench measures workspace import, fetch and delta against the
// baselines the workspace issue names, in one run, and prints them side by
// side: IPFS Kubo (two daemons on loopback) and rsync (local and to a
// daemon on 127.0.0.1). Every run writes into a fresh directory on a tmpfs
// when one has room, for us and for the baselines alike, so the figures
// measure the tools and not ext4's cost of creating files after a large
// rm -rf.
//
//	go run ./testnet/wsbench -kubo /path/to/ipfs
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/testnet"
	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
	"github.com/cortex-peer/cortex-peer/testnet/quiet"
)

func main() {
	kubo := flag.String("kubo", "", "path to a Kubo `ipfs` binary (v0.43); empty skips the Kubo baseline")
	corpus := flag.String("corpus", goSrc(), "directory to use as the workspace corpus")
	bigMiB := flag.Int("big", 1024, "size in MiB of the random-bytes file")
	storesDir = flag.String("stores", os.TempDir(), "where the peers' data dirs (and stores) live")
	work := flag.String("work", "", "scratch directory (default: a new one on /dev/shm if it has room, else the system temp dir)")
	flag.Parse()
	if err := run(*kubo, *corpus, *bigMiB, *work); err != nil {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		os.Exit(1)
	}
}

var storesDir *string

type row struct {
	what, ours, baseline, ratio string
}

var rows []row

func report(what string, ours time.Duration, baseName string, base time.Duration) {
	r := row{what: what, ours: secs(ours)}
	if base > 0 {
		r.baseline = baseName + " " + secs(base)
		r.ratio = fmt.Sprintf("%.2fx", float64(base)/float64(ours))
	}
	rows = append(rows, r)
	fmt.Fprintf(os.Stderr, "  %-55s ours %-9s %s %s\n", what, r.ours, r.baseline, r.ratio)
}

func note(what, value string) {
	rows = append(rows, row{what: what, ours: value})
	fmt.Fprintf(os.Stderr, "  %-55s %s\n", what, value)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

// fetchRuns is how many times the whole corpus is fetched, ours and rsync's.
const fetchRuns = 3

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func runsOf(ds []time.Duration) string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = secs(d)
	}
	return strings.Join(out, " ")
}

func run(kubo, corpus string, bigMiB int, work string) error {
	ctx := context.Background()
	if work == "" {
		base := os.TempDir()
		var st syscall.Statfs_t
		if syscall.Statfs("/dev/shm", &st) == nil && int64(st.Bavail)*st.Bsize > 12<<30 {
			base = "/dev/shm"
		}
		d, err := os.MkdirTemp(base, "wsbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	}
	fmt.Fprintf(os.Stderr, "scratch: %s\n", work)
	bin, err := testnet.Build(work)
	if err != nil {
		return err
	}

	// Corpora: a copy of the Go source tree, and one big random file.
	src := filepath.Join(work, "corpus")
	if err := exec.Command("cp", "-a", corpus, src).Run(); err != nil {
		return fmt.Errorf("copy corpus: %w", err)
	}
	files, bytes := treeSize(src)
	fmt.Fprintf(os.Stderr, "corpus: %d files, %.0f MB\n", files, float64(bytes)/1e6)
	bigDir := filepath.Join(work, "big")
	bigFile := filepath.Join(bigDir, "random.bin")
	if err := os.MkdirAll(bigDir, 0o755); err != nil {
		return err
	}
	if err := benchkit.WriteRandom(bigFile, int64(bigMiB)<<20); err != nil {
		return err
	}

	// The peers' stores live on disk, as they would for a user: on a tmpfs
	// badger's memory-mapped value log would count as resident memory.
	peersDir, err := os.MkdirTemp(*storesDir, "wsbench-peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(peersDir)
	// Peer 1 imports; peers 2.. each fetch the corpus once (a peer that
	// holds it would not fetch again).
	pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: 1 + fetchRuns, Dir: peersDir, Heartbeat: time.Second, AllowedRoots: []string{work}})
	if err != nil {
		return err
	}
	defer pn.Stop()
	if err := pn.WaitReady(ctx); err != nil {
		return err
	}
	p1, p2 := pn.Peers[0].DataDir, pn.Peers[1].DataDir

	// Baseline: Kubo import and fetch.
	var k *benchkit.KuboPair
	if kubo != "" {
		if k, err = benchkit.StartKubo(ctx, kubo, filepath.Join(work, "kubo")); err != nil {
			return fmt.Errorf("kubo: %w", err)
		}
		defer k.Stop()
	}

	// 1. Full import.
	var root string
	tOurs := timeIt(func() { root = mustAdd(bin, p1, src) })
	var tKubo time.Duration
	var kuboRoot string
	if k != nil {
		tKubo = timeIt(func() { kuboRoot = must(k.Add(0, src)) })
	}
	report(fmt.Sprintf("full import, %d files", files), tOurs, "kubo add", tKubo)

	// 2. Re-import with no change.
	var noopRuns []time.Duration
	for range fetchRuns {
		noopRuns = append(noopRuns, timeIt(func() { mustAdd(bin, p1, src) }))
	}
	tNoop := median(noopRuns)
	report(fmt.Sprintf("re-import, no change (median of %d: %s)", fetchRuns, runsOf(noopRuns)), tNoop, "", 0)
	note("  as a share of the full import (goal < 5%)", fmt.Sprintf("%.1f%%", 100*tNoop.Seconds()/tOurs.Seconds()))
	// The same through the local API, as an agent calls it: without the
	// CLI process's start (see the next row), which is most of the above.
	api, err := apiclient.Dial(p1)
	if err != nil {
		return err
	}
	defer api.Close()
	var apiErr error
	tNoopAPI := timeIt(func() { _, apiErr = api.WorkspaceAdd(ctx, src, false, nil) })
	if apiErr != nil {
		return apiErr
	}
	report("  same, one call to the local API", tNoopAPI, "", 0)
	note("    as a share of the full import", fmt.Sprintf("%.2f%%", 100*tNoopAPI.Seconds()/tOurs.Seconds()))
	tStart := timeIt(func() { mustRun(bin, "version") })
	report("  start of the CLI alone (cortex-peer version)", tStart, "", 0)

	// 3. Fetch the whole corpus, against rsync from a daemon: fetchRuns
	// pairs, each of ours by a peer that holds nothing yet and rsync into a
	// fresh directory, back to back so that both meet the same state of the
	// machine (page cache, writeback); the medians are compared.
	daemon, err := startRsyncDaemon(work, src)
	if err != nil {
		return err
	}
	defer daemon.Process.Kill()
	var ourRuns, rsyncRuns []time.Duration
	for i := 1; i <= fetchRuns; i++ {
		ourDest := filepath.Join(work, fmt.Sprintf("dest-ours-%d", i))
		ourRuns = append(ourRuns, timeIt(func() { mustGet(bin, pn.Peers[i].DataDir, root, ourDest) }))
		rsyncDest := filepath.Join(work, fmt.Sprintf("dest-rsync-%d", i))
		rsyncRuns = append(rsyncRuns, timeIt(func() {
			mustRun("rsync", "-a", "rsync://127.0.0.1:"+rsyncPort+"/corpus/", rsyncDest+"/")
		}))
	}
	dest := filepath.Join(work, "dest-ours-1") // peer 2's copy, brought up to date in step 4
	tFetch := median(ourRuns)
	var tKuboFetch time.Duration
	kuboDone := true
	if k != nil {
		tKuboFetch = timeIt(func() { kuboDone = must(k.Pin(1, kuboRoot)) })
	}
	report("fetch whole corpus by a second peer (ours: ws get incl. write)", tFetch, "kubo pin add", tKuboFetch)
	if !kuboDone {
		note("  kubo pin add did not finish", fmt.Sprintf("stopped after %s (empty files: zero-length blocks never sent)", benchkit.KuboFetchLimit))
	}
	report(fmt.Sprintf("  same, against rsync from a daemon on loopback (medians of %d)", fetchRuns), tFetch, "rsync", median(rsyncRuns))
	note("    each run, ours / rsync", runsOf(ourRuns)+" / "+runsOf(rsyncRuns))

	// 4. Ten files change, one of them by a 1 MB append to a large file.
	changed := changeTen(src)
	base := root
	tDelta := timeIt(func() { root = mustAdd(bin, p1, src) })
	report("re-import after 10 files changed (goal < 10% of full)", tDelta, "", 0)
	note("  as a share of the full import", fmt.Sprintf("%.1f%%", 100*tDelta.Seconds()/tOurs.Seconds()))
	// Peer 2 brings its copy up to date in place, as rsync does: a merge of
	// BASE -> the new root into the copy, fetching what it lacks.
	var got getResult
	tDeltaFetch := timeIt(func() { got = mustMerge(bin, p2, base, root, dest) })
	tRsyncDelta := timeIt(func() {
		mustRun("rsync", "-a", "rsync://127.0.0.1:"+rsyncPort+"/corpus/", filepath.Join(work, "dest-rsync-1")+"/")
	})
	report("delta after the 10 changes, in place (ours: ws merge)", tDeltaFetch, "rsync", tRsyncDelta)
	note("  block bytes moved / changed bytes", fmt.Sprintf("%d / %d (goal <= 2x + 64 KiB = %d)", got.FetchedBytes, changed, 2*changed+64<<10))

	// 5. The 1 GiB file: import against sha256 of the same bytes.
	tHash := timeIt(func() { must(benchkit.SHA256File(bigFile)) })
	var bigRoot string
	s1 := benchkit.SampleRSS(pn.Peers[0].Pid())
	tBig := timeIt(func() { bigRoot = mustAdd(bin, p1, bigDir) })
	report(fmt.Sprintf("import %d MiB random file (goal within 2x of sha256)", bigMiB), tBig, "sha256", tHash)
	note("  peer 1 memory during the import (goal < 256 MiB)", s1.Stop())
	s2 := benchkit.SampleRSS(pn.Peers[1].Pid())
	tBigFetch := timeIt(func() { mustGet(bin, p2, bigRoot, filepath.Join(work, "dest-big")) })
	report(fmt.Sprintf("fetch %d MiB file by peer 2", bigMiB), tBigFetch, "", 0)
	note("  peer 2 memory during the fetch (goal < 256 MiB)", s2.Stop())

	fmt.Println()
	fmt.Printf("%-58s %-10s %-22s %s\n", "workspace figures", "ours", "baseline", "baseline/ours")
	for _, r := range rows {
		fmt.Printf("%-58s %-10s %-22s %s\n", r.what, r.ours, r.baseline, r.ratio)
	}
	return nil
}

// must is v, or the end of the bench with err.
func must[T any](v T, err error) T {
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		os.Exit(1)
	}
	return v
}

// goSrc is the source tree of the Go installation on the PATH.
func goSrc() string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return ""
	}
	return filepath.Join(strings.TrimSpace(string(out)), "src")
}

func timeIt(f func()) time.Duration {
	settle()
	start := time.Now()
	f()
	return time.Since(start)
}

// settle waits, up to 10 s, until the machine is quiet: under 10% of its
// CPU time busy over a quarter of a second. Every figure, ours and the
// baselines' alike, is then taken from a quiet machine, not while the last
// step's background work (a store's compactions, a Kubo daemon's
// housekeeping) still runs. It does not wait for the kernel's writeback,
// which starts only once pages have been dirty for 30 s: waiting that long
// between steps let these machines' memory monitor (DAMON, which pages out
// what was not touched for a minute) evict what the next step reads.
func settle() {
	if !quiet.Wait(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "  (the machine did not settle within 10 s)")
	}
}

func mustRun(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		os.Exit(1)
	}
	return string(out)
}

func mustAdd(bin, data, dir string) string {
	out := mustRun(bin, "ws", "add", "--json", "--data", data, dir)
	var r struct {
		CID string `json:"cid"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		fmt.Fprintf(os.Stderr, "ws add output: %v\n%s", err, out)
		os.Exit(1)
	}
	return r.CID
}

type getResult struct {
	FetchedBlocks uint64 `json:"fetched_blocks"`
	FetchedBytes  uint64 `json:"fetched_bytes"`
}

func mustGet(bin, data, root, dest string) getResult {
	out := mustRun(bin, "ws", "get", "--json", "--data", data, root, dest)
	var r getResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		fmt.Fprintf(os.Stderr, "ws get output: %v\n%s", err, out)
		os.Exit(1)
	}
	return r
}

func mustMerge(bin, data, base, theirs, dir string) getResult {
	out := mustRun(bin, "ws", "merge", "--json", "--data", data, base, theirs, dir)
	var r getResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		fmt.Fprintf(os.Stderr, "ws merge output: %v\n%s", err, out)
		os.Exit(1)
	}
	return r
}

func treeSize(dir string) (files int, bytes int64) {
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			files++
			bytes += info.Size()
		}
		return nil
	})
	return files, bytes
}

// changeTen edits nine small files and appends 1 MB to the largest file of
// the corpus; it returns the number of bytes changed.
func changeTen(src string) int64 {
	var small []string
	var largest string
	var largestSize int64
	_ = filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		if strings.HasSuffix(p, ".go") && len(small) < 9 && info.Size() > 1000 && info.Size() < 20000 {
			small = append(small, p)
		}
		if info.Size() > largestSize {
			largest, largestSize = p, info.Size()
		}
		return nil
	})
	var changed int64
	for _, p := range small {
		f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		n, _ := f.WriteString("\n// changed by wsbench\n")
		f.Close()
		changed += int64(n)
	}
	f, _ := os.OpenFile(largest, os.O_APPEND|os.O_WRONLY, 0)
	buf := make([]byte, 1_000_000)
	rand.NewChaCha8([32]byte{7}).Read(buf)
	n, _ := f.Write(buf)
	f.Close()
	return changed + int64(n)
}

const rsyncPort = "28730"

func startRsyncDaemon(work, src string) (*exec.Cmd, error) {
	conf := filepath.Join(work, "rsyncd.conf")
	body := fmt.Sprintf("use chroot = no\nuid = root\ngid = root\n[corpus]\npath = %s\nread only = yes\n", src)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("rsync", "--daemon", "--no-detach", "--address=127.0.0.1", "--port="+rsyncPort, "--config="+conf)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for range 100 {
		if exec.Command("rsync", "rsync://127.0.0.1:"+rsyncPort+"/").Run() == nil {
			return cmd, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	return nil, fmt.Errorf("rsync daemon did not start")
}
