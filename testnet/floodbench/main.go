// Command floodbench prints the hostile-peer figures of the reliability
// issue in one run: an honest task's latency on a peer, quiet and while a
// third member of the mesh floods that peer, first with every attack at
// once and then with each attack alone; the victim's memory; what the
// flooder sent and how the victim answered.
//
//	make bench-flood            # or: go run ./testnet/floodbench -bin bin/cortex-peer
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
	"github.com/cortex-peer/cortex-peer/testnet/flood"
	"github.com/cortex-peer/cortex-peer/testnet/quiet"
)

func main() {
	bin := flag.String("bin", "", "a built cortex-peer (cortex-peerd beside it); empty builds one")
	runs := flag.Int("runs", 5, "honest tasks timed quiet and under each flood")
	each := flag.Bool("each", true, "also flood with each attack alone")
	flag.Parse()
	if err := run(*bin, *runs, *each); err != nil {
		fmt.Fprintln(os.Stderr, "floodbench:", err)
		os.Exit(1)
	}
}

func run(bin string, runs int, each bool) error {
	if bin == "" {
		dir, err := os.MkdirTemp("", "floodbench-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if bin, err = testnet.Build(dir); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	sets := [][]string{nil}
	if each {
		for _, a := range flood.Attacks {
			sets = append(sets, []string{a})
		}
	}
	fmt.Printf("%-10s %10s %10s %7s %9s %9s %11s %12s  %s\n", "attacks", "quiet", "flooded", "ratio", "RSS", "RSS peak", "victim CPU", "flooder CPU", "victim's warnings")
	failed := false
	for _, set := range sets {
		if !quiet.Wait(10 * time.Second) {
			fmt.Fprintln(os.Stderr, "  (the machine did not settle within 10 s)")
		}
		dir, err := os.MkdirTemp("", "floodbench-")
		if err != nil {
			return err
		}
		fig, err := flood.RunScenario(ctx, flood.ScenarioOptions{Binary: bin, Dir: dir, HonestRuns: runs, Flood: flood.Config{Attacks: set}})
		_ = os.RemoveAll(dir)
		name := "all"
		if set != nil {
			name = set[0]
		}
		q, f := flood.Median(fig.Quiet), flood.Median(fig.Flooded)
		var warned []string
		for msg, n := range fig.Warnings {
			warned = append(warned, fmt.Sprintf("%d× %.40s", n, msg))
		}
		ratio := "-"
		if q > 0 && f > 0 {
			ratio = fmt.Sprintf("%.2fx", f.Seconds()/q.Seconds())
		}
		share := func(d time.Duration) string {
			if fig.FloodTime <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f%%", 100*d.Seconds()/fig.FloodTime.Seconds())
		}
		fmt.Printf("%-10s %10s %10s %7s %6d MiB %6d MiB %11s %12s  %s\n", name, q.Round(time.Millisecond), f.Round(time.Millisecond), ratio,
			fig.RSSBefore>>20, fig.RSSPeak>>20, share(fig.VictimCPU), share(fig.FlooderCPU), strings.Join(warned, "; "))
		if name == "all" {
			for _, r := range fig.Report.Rows() {
				fmt.Printf("    flooder: %s: %s\n", r[0], r[1])
			}
		}
		if err != nil || !fig.VictimAlive {
			fmt.Printf("    FAILED: victim alive %v: %v\n", fig.VictimAlive, err)
			failed = true
		}
	}
	fmt.Println("(CPU: share of one core over the flood; the machine has", runtime.NumCPU(), "cores)")
	fmt.Printf("(medians of %d honest tasks each; a task is `run --peer VICTIM -- sh -c '%s'` from the other peer)\n", runs, flood.HonestScript)
	if failed {
		return fmt.Errorf("the victim failed under a flood")
	}
	return nil
}
