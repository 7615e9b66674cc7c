// Command artifactbench prints the artifact figures of the artifacts issue
// side by side with their baselines, in one run: a random file put on one
// peer and got by another (destination on a tmpfs) against Kubo's pin add
// then get of the same bytes and against Go's sha256 of them; the peers'
// memory; a get killed half-way and run again, counting the bytes the mesh
// moved; a get from three providers against one, uncapped and with each
// provider's serving capped to a third of what one provider delivered.
//
//	make bench-artifacts            # or: go run ./testnet/artifactbench -kubo .bench/ipfs
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
	"github.com/cortex-peer/cortex-peer/testnet/quiet"
)

func main() {
	kubo := flag.String("kubo", "", "path to a Kubo `ipfs` binary (v0.43); empty skips the Kubo baseline")
	mib := flag.Int("mib", 1024, "size in MiB of the random file")
	bin := flag.String("bin", "", "a built cortex-peer (cortex-peerd beside it); empty builds one")
	flag.Parse()
	if err := run(*kubo, *bin, int64(*mib)<<20); err != nil {
		fmt.Fprintln(os.Stderr, "artifactbench:", err)
		os.Exit(1)
	}
}

type row struct{ what, ours, baseline, ratio string }

var rows []row

func add(what, ours, baseline, ratio string) { rows = append(rows, row{what, ours, baseline, ratio}) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func mbps(n int64, d time.Duration) string {
	return fmt.Sprintf("%.0f MB/s", float64(n)/1e6/d.Seconds())
}

func settle() {
	if !quiet.Wait(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "  (the machine did not settle within 10 s)")
	}
}

func timeIt(f func() error) (time.Duration, error) {
	settle()
	t0 := time.Now()
	err := f()
	return time.Since(t0), err
}

func cli(bin string, args ...string) ([]byte, error) {
	out, err := exec.Command(bin, args...).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return out, fmt.Errorf("%s %v: %v: %s", filepath.Base(bin), args, err, ee.Stderr)
	}
	return out, err
}

func meshReceived(bin, data string) (uint64, error) {
	out, err := cli(bin, "status", "--json", "--data", data)
	if err != nil {
		return 0, err
	}
	var st struct {
		Received uint64 `json:"mesh_bytes_received"`
	}
	return st.Received, json.Unmarshal(out, &st)
}

func run(kuboBin, bin string, size int64) error {
	ctx := context.Background()
	// The destination on a tmpfs, as the issue measures; the peers' stores
	// on disk, as a user's are.
	base := os.TempDir()
	var st syscall.Statfs_t
	if syscall.Statfs("/dev/shm", &st) == nil && int64(st.Bavail)*st.Bsize > 4*size+(1<<30) {
		base = "/dev/shm"
	}
	work, err := os.MkdirTemp(base, "artifactbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	stores, err := os.MkdirTemp("", "artifactbench-peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stores)
	if bin == "" {
		if bin, err = testnet.Build(work); err != nil {
			return err
		}
	}
	src := filepath.Join(work, "random.bin")
	if err := benchkit.WriteRandom(src, size); err != nil {
		return err
	}
	pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: 4, Dir: stores, Heartbeat: time.Second, AllowedRoots: []string{work}})
	if err != nil {
		return err
	}
	defer pn.Stop()
	if err := pn.WaitReady(ctx); err != nil {
		return err
	}
	p1, p2, p3, p4 := pn.Peers[0].DataDir, pn.Peers[1].DataDir, pn.Peers[2].DataDir, pn.Peers[3].DataDir

	var sum []byte
	tHash, err := timeIt(func() (err error) { sum, err = benchkit.SHA256File(src); return err })
	if err != nil {
		return err
	}
	var put struct {
		CID string `json:"cid"`
	}
	s0 := benchkit.SampleRSS(pn.Peers[0].Pid())
	tPut, err := timeIt(func() error {
		out, err := cli(bin, "put", "--json", "--data", p1, src)
		if err == nil {
			err = json.Unmarshal(out, &put)
		}
		return err
	})
	m0 := s0.Stop()
	if err != nil {
		return err
	}
	add(fmt.Sprintf("put %d MiB random file on peer 1", size>>20), secs(tPut), "sha256 "+secs(tHash), fmt.Sprintf("%.2fx sha256", tPut.Seconds()/tHash.Seconds()))
	add("  peer 1 memory during the put (goal < 256 MiB)", m0, "", "")

	// 1. get by peer 2.
	dest := filepath.Join(work, "got.bin")
	s1, s2 := benchkit.SampleRSS(pn.Peers[0].Pid()), benchkit.SampleRSS(pn.Peers[1].Pid())
	tGet, err := timeIt(func() error { _, err := cli(bin, "get", "--json", "--data", p2, put.CID, "-o", dest); return err })
	m1, m2 := s1.Stop(), s2.Stop()
	if err != nil {
		return err
	}
	if got, err := benchkit.SHA256File(dest); err != nil || !bytes.Equal(got, sum) {
		return fmt.Errorf("the file got differs from the file put (%v)", err)
	}
	_ = os.Remove(dest)
	var tKubo time.Duration
	kuboNote := "n/a (no -kubo)"
	if kuboBin != "" {
		k, err := benchkit.StartKubo(ctx, kuboBin, filepath.Join(stores, "kubo"))
		if err != nil {
			return fmt.Errorf("kubo: %w", err)
		}
		defer k.Stop()
		root, err := k.Add(0, src)
		if err != nil {
			return err
		}
		var tPin, tOut time.Duration
		done := false
		if tPin, err = timeIt(func() (err error) { done, err = k.Pin(1, root); return err }); err != nil {
			return err
		}
		if !done {
			return fmt.Errorf("kubo pin add did not finish within %s", benchkit.KuboFetchLimit)
		}
		kdest := filepath.Join(work, "kubo.bin")
		if tOut, err = timeIt(func() error {
			out, err := k.Cmd(1, "get", "-o", kdest, root).CombinedOutput()
			if err != nil {
				return fmt.Errorf("kubo get: %v: %s", err, out)
			}
			return nil
		}); err != nil {
			return err
		}
		_ = os.Remove(kdest)
		tKubo = tPin + tOut
		kuboNote = fmt.Sprintf("kubo %s (pin add %s + get %s)", secs(tKubo), secs(tPin), secs(tOut))
	}
	ratio := ""
	if tKubo > 0 {
		ratio = fmt.Sprintf("%.2fx faster than kubo (goal >= 3x)", tKubo.Seconds()/tGet.Seconds())
	}
	add(fmt.Sprintf("get %d MiB by peer 2 (fetch + write to tmpfs)", size>>20), secs(tGet)+", "+mbps(size, tGet), kuboNote, ratio)
	add("  against sha256 of the same bytes (goal within 3x)", secs(tGet), "sha256 "+secs(tHash), fmt.Sprintf("%.2fx sha256", tGet.Seconds()/tHash.Seconds()))
	add("  peer 1 (serving) memory (goal < 256 MiB)", m1, "", "")
	add("  peer 2 (fetching) memory (goal < 256 MiB)", m2, "", "")

	// 2. A get killed half-way, then run again: what the mesh moved.
	before, err := meshReceived(bin, p3)
	if err != nil {
		return err
	}
	settle()
	cut := exec.Command(bin, "get", "--data", p3, put.CID, "-o", filepath.Join(work, "resumed.bin"))
	if err := cut.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Minute)
	var atKill uint64
	for {
		n, err := meshReceived(bin, p3)
		if err != nil {
			return err
		}
		if atKill = n - before; atKill >= uint64(size)/2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cut.Process.Kill()
	_ = cut.Wait()
	time.Sleep(time.Second) // the peer hears its caller gone and stops the fetch
	tResume, err := timeIt(func() error {
		_, err := cli(bin, "get", "--data", p3, put.CID, "-o", filepath.Join(work, "resumed.bin"))
		return err
	})
	if err != nil {
		return err
	}
	after, err := meshReceived(bin, p3)
	if err != nil {
		return err
	}
	moved := after - before
	add("get killed at ~50%, then run again: bytes moved in all", fmt.Sprintf("%.1f%% of the file", 100*float64(moved)/float64(size)),
		fmt.Sprintf("killed after %.0f%%", 100*float64(atKill)/float64(size)), fmt.Sprintf("goal < 110%%: %s", met(float64(moved) < 1.10*float64(size))))
	add("  the second get", secs(tResume), "", "")
	_ = os.Remove(filepath.Join(work, "resumed.bin"))

	// 3. Three providers against one. Peers 1, 2 and 3 now hold the file.
	var three getJSON
	tThree, err := timeIt(func() error {
		var err error
		three, err = getFile(bin, p4, put.CID, filepath.Join(work, "three.bin"))
		return err
	})
	if err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(work, "three.bin"))
	add(fmt.Sprintf("get %d MiB from 3 providers (goal: no slower than 1)", size>>20), secs(tThree)+", "+mbps(size, tThree),
		"1 provider "+secs(tGet), fmt.Sprintf("%.2fx: %s; %s", tGet.Seconds()/tThree.Seconds(), met(tThree.Seconds() <= 1.1*tGet.Seconds()), three.shares()))
	rate := float64(size) / tGet.Seconds() / 3
	if err := capped(ctx, bin, stores, work, min(size, 256<<20), int64(rate)); err != nil {
		return err
	}
	pn.Stop() // its peers' CPU is the next part's
	if err := allowlistOnly(ctx, bin, stores, work, src, size, tGet); err != nil {
		return err
	}

	fmt.Println()
	fmt.Printf("%-58s %-24s %-40s %s\n", "artifact figures", "ours", "baseline", "")
	for _, r := range rows {
		fmt.Printf("%-58s %-24s %-40s %s\n", r.what, r.ours, r.baseline, r.ratio)
	}
	fmt.Printf("note: load average at the end: %s\n", benchkit.LoadAvg())
	return nil
}

// getJSON is what `get --json` prints.
type getJSON struct {
	Providers map[string]uint64 `json:"providers"`
}

// shares says what each provider sent, in MiB.
func (g getJSON) shares() string {
	var parts []string
	for _, n := range g.Providers {
		parts = append(parts, fmt.Sprintf("%d", n>>20))
	}
	slices.Sort(parts)
	return fmt.Sprintf("MiB from each provider: %s", strings.Join(parts, "/"))
}

func getFile(bin, data, c, dest string) (getJSON, error) {
	var g getJSON
	out, err := cli(bin, "get", "--json", "--data", data, c, "-o", dest)
	if err == nil {
		err = json.Unmarshal(out, &g)
	}
	return g, err
}

// capped measures a get from one provider against one from three when
// each provider serves at most rate bytes a second: on a testnet of five
// peers, file A is put on peer 1 alone and got by peer 4, file B put on
// peers 1, 2 and 3 and got by peer 5.
func capped(ctx context.Context, bin, stores, work string, size, rate int64) error {
	dir, err := os.MkdirTemp(stores, "capped-")
	if err != nil {
		return err
	}
	pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: 5, Dir: dir, Heartbeat: time.Second, AllowedRoots: []string{work},
		ConfigEdits: map[string]string{"serve_bytes_per_second = 0": fmt.Sprintf("serve_bytes_per_second = %d", rate)}})
	if err != nil {
		return err
	}
	defer pn.Stop()
	if err := pn.WaitReady(ctx); err != nil {
		return err
	}
	var cids [2]string
	for i, holders := range [][]int{{0}, {0, 1, 2}} {
		src := filepath.Join(work, fmt.Sprintf("capped-%d.bin", i))
		if err := benchkit.WriteRandomSeeded(src, size, byte(100+i)); err != nil {
			return err
		}
		for _, h := range holders {
			out, err := cli(bin, "put", "--json", "--data", pn.Peers[h].DataDir, src)
			if err != nil {
				return err
			}
			var put struct {
				CID string `json:"cid"`
			}
			if err := json.Unmarshal(out, &put); err != nil {
				return err
			}
			cids[i] = put.CID
		}
		_ = os.Remove(src)
	}
	var times [2]time.Duration
	var three getJSON
	for i, getter := range []int{3, 4} {
		dest := filepath.Join(work, fmt.Sprintf("capped-got-%d.bin", i))
		if times[i], err = timeIt(func() error {
			var err error
			three, err = getFile(bin, pn.Peers[getter].DataDir, cids[i], dest)
			return err
		}); err != nil {
			return err
		}
		_ = os.Remove(dest)
	}
	add(fmt.Sprintf("get %d MiB, each provider capped at %s: 3 providers (goal >= 2x)", size>>20, mbps(rate, time.Second)), secs(times[1])+", "+mbps(size, times[1]),
		"1 provider "+secs(times[0])+", "+mbps(size, times[0]), fmt.Sprintf("%.2fx: %s; %s", times[0].Seconds()/times[1].Seconds(), met(times[0] >= 2*times[1]), three.shares()))
	return nil
}

// allowlistOnly gets the file on a 2-peer mesh without a mesh key (the
// peers admit each other by id): what the mesh key's second encryption of
// every byte costs a get.
func allowlistOnly(ctx context.Context, bin, stores, work, src string, size int64, withKey time.Duration) error {
	dir, err := os.MkdirTemp(stores, "allowlist-")
	if err != nil {
		return err
	}
	pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: 2, Dir: dir, Heartbeat: time.Second, AllowedRoots: []string{work}, AllowlistOnly: true})
	if err != nil {
		return err
	}
	defer pn.Stop()
	if err := pn.WaitReady(ctx); err != nil {
		return err
	}
	out, err := cli(bin, "put", "--json", "--data", pn.Peers[0].DataDir, src)
	if err != nil {
		return err
	}
	var put struct {
		CID string `json:"cid"`
	}
	if err := json.Unmarshal(out, &put); err != nil {
		return err
	}
	dest := filepath.Join(work, "allowlist.bin")
	t, err := timeIt(func() error { _, err := getFile(bin, pn.Peers[1].DataDir, put.CID, dest); return err })
	if err != nil {
		return err
	}
	_ = os.Remove(dest)
	add(fmt.Sprintf("get %d MiB on an allowlist-only mesh (no mesh key)", size>>20), secs(t)+", "+mbps(size, t),
		"with the mesh key "+secs(withKey), fmt.Sprintf("the mesh key costs %.0f%% of the get's time", 100*(1-t.Seconds()/withKey.Seconds())))
	return nil
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
