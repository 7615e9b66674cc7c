package cdp

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
)

// MemoryBytes is what this bridge's Chromium processes use: the sum of
// their proportional set sizes (PSS, so memory they share is counted
// once), or of their resident sizes where the kernel gives no PSS. 0 when
// none runs.
func (b *Browser) MemoryBytes() int64 {
	var sum int64
	for _, pid := range b.Processes() {
		sum += processMemory(pid)
	}
	return sum
}

// processMemory is a process's PSS, or its RSS, in bytes; 0 if it is gone.
func processMemory(pid int) int64 {
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
