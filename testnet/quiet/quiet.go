// Package quiet waits for the machine to be quiet before a benchmark's
// run, so that each run, ours and the baseline's, starts alike on a
// machine shared with other work.
package quiet

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// Wait waits, up to max, until under 10% of the machine's CPU time is busy
// over a quarter of a second, and says whether it got there.
func Wait(max time.Duration) bool {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		busy1, total1 := cpuTimes()
		time.Sleep(250 * time.Millisecond)
		busy2, total2 := cpuTimes()
		if total2 > total1 && float64(busy2-busy1) < 0.10*float64(total2-total1) {
			return true
		}
	}
	return false
}

// cpuTimes returns the busy and total CPU time of the machine, in ticks,
// from /proc/stat (idle, iowait and time stolen by the hypervisor count as
// not busy).
func cpuTimes() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	for i, f := range fields[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		total += v
		if i != 3 && i != 4 && i != 7 { // idle, iowait, steal
			busy += v
		}
	}
	return busy, total
}
