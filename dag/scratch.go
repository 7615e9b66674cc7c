package dag

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Scratch paths: a merge, an export or a get writes beside its target, as
// .NAME.cortex-KIND-PID.SUFFIX, and renames the path over the target once
// it is whole. A peer killed in the middle leaves it behind; the next
// write of the same kind into the same directory removes it.
//
// Whether a scratch path is stale is told by the pid of the process that
// writes it, which its name carries: a process alive with that pid may
// still be writing it, any other is gone and its scratch is litter. Unlike
// an age (mtime), this needs no guess of how long a write may take (a
// merge of a large file, or an export whose directory's mtime stands
// still while a file deep inside it is written), and a leftover goes at
// the very next write, not minutes later. A pid reused by another process,
// or by the restarted peer itself, only keeps a leftover longer: a path a
// live writer is writing is never removed. A name with no pid (written
// before this scheme) is kept, as it cannot be told from a live one.
// Partial files (.cortex-partial-*) are kept for resume and never match.

// Kinds of scratch path.
const (
	ScratchMerge  = "merge"
	ScratchExport = "export"
	ScratchGet    = "get"
)

// ScratchPath names a fresh scratch path of kind beside target, for this
// process: the rest of its name is suffix.
func ScratchPath(target, kind, suffix string) string {
	return filepath.Join(filepath.Dir(target), scratchName(filepath.Base(target), kind, suffix))
}

func scratchName(base, kind, suffix string) string {
	return "." + base + ".cortex-" + kind + "-" + strconv.Itoa(os.Getpid()) + "." + suffix
}

// stalePid reports whether name is a scratch path of kind whose writer,
// named by the pid in it, is gone.
func stalePid(name, kind string) bool {
	marker := ".cortex-" + kind + "-"
	i := strings.LastIndex(name, marker)
	if !strings.HasPrefix(name, ".") || i <= 0 {
		return false
	}
	pidText, _, ok := strings.Cut(name[i+len(marker):], ".")
	pid, err := strconv.Atoi(pidText)
	if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	// Signal 0 checks that the process exists; EPERM: it does, owned by
	// another user.
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// RemoveStaleScratch removes from dir the scratch paths of kind whose
// writer is gone, and returns their names. A dir that does not exist holds
// none.
func RemoveStaleScratch(dir, kind string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look for stale scratch in %s: %w", dir, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !stalePid(e.Name(), kind) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// removeStaleScratchIn is RemoveStaleScratch for a directory under root.
func removeStaleScratchIn(r *os.Root, dir, kind string) ([]string, error) {
	d, err := r.Open(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look for stale scratch in %s: %w", dir, err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("look for stale scratch in %s: %w", dir, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !stalePid(e.Name(), kind) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := r.RemoveAll(p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}
