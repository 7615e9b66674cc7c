package main

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// descendants lists the live processes below pid (not pid itself).
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

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
	for _, p := range descendants(pid) {
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

// loadAvg is the machine's load over 1, 5 and 15 minutes, and its CPUs:
// the figures of a loaded machine are read with it.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ") + " on " + strconv.Itoa(runtime.NumCPU()) + " CPUs"
}
