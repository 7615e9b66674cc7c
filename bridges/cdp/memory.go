package cdp

import "github.com/cortex-peer/cortex-peer/bridges/procs"

// MemoryBytes is what this bridge's Chromium processes use: the sum of
// their proportional set sizes (PSS, so memory they share is counted
// once), or of their resident sizes where the kernel gives no PSS. 0 when
// none runs.
func (b *Browser) MemoryBytes() int64 {
	var sum int64
	for _, pid := range b.Processes() {
		sum += procs.Memory(pid)
	}
	return sum
}
