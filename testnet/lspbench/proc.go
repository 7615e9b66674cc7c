package main

import (
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
