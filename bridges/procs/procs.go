// Package procs finds, measures and kills the child processes a bridge
// runs (Chromium, language servers) through /proc, and checks that a
// directory is reachable by the unprivileged uid they run as. It imports
// only the standard library.
package procs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Match says whether a process is one of a bridge's, from what /proc
// shows of it.
type Match func(pid string) bool

// CmdlineContains matches a process whose command line contains one of
// subs. A command line is read whole: processes that retitle themselves
// (Chromium's children) make it one string, not arguments apart.
func CmdlineContains(subs ...string) Match {
	return func(pid string) bool {
		cl, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil {
			return false
		}
		for _, s := range subs {
			if bytes.Contains(cl, []byte(s)) {
				return true
			}
		}
		return false
	}
}

// EnvironContains matches a process whose environment holds the variable
// key=value: a marker its parent set when it started it.
func EnvironContains(key, value string) Match {
	mark := []byte(key + "=" + value + "\x00")
	return func(pid string) bool {
		env, err := os.ReadFile("/proc/" + pid + "/environ")
		return err == nil && bytes.Contains(env, mark)
	}
}

// Live lists the live (not zombie) processes, this one aside, that match.
func Live(match Match) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !match(e.Name()) {
			continue
		}
		if Alive(pid) { // a zombie is dead, waiting for its parent
			pids = append(pids, pid)
		}
	}
	return pids
}

// InGroup matches the processes of a process group.
func InGroup(pgid int) Match {
	want := strconv.Itoa(pgid)
	return func(pid string) bool {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return false
		}
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			return false
		}
		f := bytes.Fields(st[i+1:]) // state ppid pgrp ...
		return len(f) >= 3 && string(f[2]) == want
	}
}

// KillGroup kills a process group and waits, up to max, until none of its
// processes is alive: a killed child (the server's own children too) is
// gone when it returns, not merely signalled.
func KillGroup(pgid int, max time.Duration) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	deadline := time.Now().Add(max)
	for len(Live(InGroup(pgid))) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// Kill sends SIGKILL to each process and waits, up to max, until none of
// them is alive, so that a caller who kills what a previous run left does
// not race the kernel tearing it down. It says how many it reached.
func Kill(pids []int, max time.Duration) int {
	n := 0
	for _, pid := range pids {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	deadline := time.Now().Add(max)
	for _, pid := range pids {
		for Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return n
}

// Alive says whether pid is a process that is not a zombie.
func Alive(pid int) bool {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return i < 0 || len(st) <= i+2 || st[i+2] != 'Z'
}

// Memory is a process's proportional set size (memory it shares counted
// once across the sharers), or its resident size where the kernel gives
// no PSS, in bytes; 0 if it is gone.
func Memory(pid int) int64 {
	p := "/proc/" + strconv.Itoa(pid)
	if f, err := os.Open(p + "/smaps_rollup"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if kb, ok := bytes.CutPrefix(sc.Bytes(), []byte("Pss:")); ok {
				if n, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(kb), []byte("kB")))), 10, 64); err == nil {
					return n << 10
				}
			}
		}
	}
	statm, err := os.ReadFile(p + "/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(statm)
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(string(f[1]), 10, 64)
	return pages * int64(os.Getpagesize())
}

// Reachable says why another uid cannot reach dir: a directory from / down
// to it that others may not search.
func Reachable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by others (mode %v)", d, info.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}
