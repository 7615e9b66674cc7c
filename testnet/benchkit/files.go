package benchkit

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"
)

// WriteRandom writes n pseudo-random bytes (the same for every run) to path.
func WriteRandom(path string, n int64) error { return WriteRandomSeeded(path, n, 42) }

// WriteRandomSeeded is WriteRandom with another seed: other bytes.
func WriteRandomSeeded(path string, n int64, seed byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{seed})
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, r, n); err != nil {
		return err
	}
	return w.Flush()
}

// SHA256File hashes a file: the baseline of what reading and hashing its
// bytes costs here.
func SHA256File(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// RSSSampler polls a process's memory while an operation runs and keeps
// the largest anonymous (heap, stacks) and total resident sizes seen.
type RSSSampler struct {
	pid             int
	done            chan struct{}
	finished        chan struct{}
	MaxAnon, MaxRSS float64 // MiB, valid after Stop
}

// SampleRSS starts sampling pid every 20 ms.
func SampleRSS(pid int) *RSSSampler {
	s := &RSSSampler{pid: pid, done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(s.finished)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			kb := procStatus(pid)
			s.MaxAnon = max(s.MaxAnon, kb["RssAnon"])
			s.MaxRSS = max(s.MaxRSS, kb["VmRSS"])
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and says what it saw.
func (s *RSSSampler) Stop() string {
	close(s.done)
	<-s.finished
	return fmt.Sprintf("max anonymous %.0f MiB, max resident %.0f MiB (incl. file-backed mmap of the store)", s.MaxAnon, s.MaxRSS)
}

func procStatus(pid int) map[string]float64 {
	kb := map[string]float64{}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return kb
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB")); err == nil {
			kb[k] = float64(n) / 1024
		}
	}
	return kb
}
