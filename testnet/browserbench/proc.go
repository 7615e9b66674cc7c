package main

import (
	"os"
	"strconv"
	"strings"

	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
)

// memory is the summed memory of a set of processes, in KiB: resident
// (shared pages counted once per process) and proportional (shared pages
// divided among their users, so that it adds up).
type memory struct {
	procs    int
	rss, pss int64
}

// chromiumMemory sums the memory of the Chromium processes below pid.
func chromiumMemory(pid int) memory {
	var m memory
	for _, p := range benchkit.Descendants(pid) {
		dir := "/proc/" + strconv.Itoa(p)
		comm, err := os.ReadFile(dir + "/comm")
		if err != nil || !strings.HasPrefix(string(comm), "chrom") {
			continue
		}
		m.procs++
		m.rss += kbField(dir+"/status", "VmRSS:")
		m.pss += kbField(dir+"/smaps_rollup", "Pss:")
	}
	return m
}

// kbField reads the "key: N kB" line of a /proc file.
func kbField(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// statusField is the first value of a /proc/PID/status line ("Uid:" → the
// real uid).
func statusField(path, key string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return f[0]
			}
		}
	}
	return "?"
}
