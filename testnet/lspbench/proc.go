package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
)

// goplsBelow lists the gopls processes below pid.
func goplsBelow(pid int) []int {
	var out []int
	for _, p := range benchkit.Descendants(pid) {
		if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/comm"); strings.TrimSpace(string(comm)) == "gopls" {
			out = append(out, p)
		}
	}
	return out
}

// alive says whether pid is a live process (not a zombie).
func alive(pid int) bool {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return i < 0 || !bytes.HasPrefix(bytes.TrimSpace(st[i+1:]), []byte("Z"))
}
