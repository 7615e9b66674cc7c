// Command artifactbench prints the artifact figures of the artifacts issue
// side by side with their baselines, in one run: a random file put on one
// peer and got by another (destination on a tmpfs) against Kubo's pin add
// then get of the same bytes and against Go's sha256 of them; the peers'
// memory; a get killed half-way and run again, counting the bytes the mesh
// moved.
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
	pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: 3, Dir: stores, Heartbeat: time.Second, AllowedRoots: []string{work}})
	if err != nil {
		return err
	}
	defer pn.Stop()
	if err := pn.WaitReady(ctx); err != nil {
		return err
	}
	p1, p2, p3 := pn.Peers[0].DataDir, pn.Peers[1].DataDir, pn.Peers[2].DataDir

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
	add("three providers against one", "n/a: a fetch asks one provider", "", "")

	fmt.Println()
	fmt.Printf("%-58s %-24s %-40s %s\n", "artifact figures", "ours", "baseline", "")
	for _, r := range rows {
		fmt.Printf("%-58s %-24s %-40s %s\n", r.what, r.ours, r.baseline, r.ratio)
	}
	fmt.Printf("note: load average at the end: %s\n", benchkit.LoadAvg())
	return nil
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
