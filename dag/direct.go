package dag

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reading past the page cache. On these machines a buffered read of bytes
// the page cache does not hold cost 2.9 s of CPU per GiB, a direct read
// 0.04 to 0.2 s (dd, 1 GiB in 4 MiB and 256 KiB reads): memory the guest has
// not touched lately costs a fault on the host at its first touch, and the
// page cache's new pages are such memory, a reused buffer is not. The pack
// of a large file is written with O_DIRECT, so it is never in the cache;
// serving a 1 GiB file spent a third of both peers' CPU reading it through
// the cache. See docs/design-notes.md.

// directAlign is the alignment O_DIRECT asks of offsets, lengths and
// buffers on any device.
const directAlign = 4096

// directReadMin: smaller reads go through the page cache regardless; they
// are mostly blocks of the shared packs, which their writes left there.
const directReadMin = 64 << 10

// directReader reads a file from the page cache where the cache holds the
// bytes, and with O_DIRECT, past it, where it does not. Asking first
// (cachestat, one system call) matters: a read that merely tried the cache
// (RWF_NOWAIT) started the same readahead into it.
type directReader struct {
	f          *os.File
	directOnce sync.Once
	direct     int // f opened again with O_DIRECT; -1 where refused
}

func newDirectReader(f *os.File) *directReader { return &directReader{f: f} }

// ReadAt implements io.ReaderAt.
func (d *directReader) ReadAt(p []byte, off int64) (int, error) {
	if len(p) >= directReadMin {
		if fd := d.directFD(); fd >= 0 && !inCache(d.f, off, len(p)) {
			if err := readDirect(fd, p, off); err == nil {
				return len(p), nil
			}
		}
	}
	return d.f.ReadAt(p, off)
}

// directFD opens the file for O_DIRECT reads once: the same file, through
// /proc/self/fd, so that a path replaced meanwhile does not matter; by its
// name where /proc is not mounted.
func (d *directReader) directFD() int {
	d.directOnce.Do(func() {
		fd, err := reopenDirect(d.f)
		if err != nil {
			fd, err = unix.Open(d.f.Name(), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
		}
		d.direct = -1
		if err == nil {
			d.direct = fd
		}
	})
	return d.direct
}

// close closes the file and its O_DIRECT twin.
func (d *directReader) close() {
	d.f.Close()
	d.directOnce.Do(func() { d.direct = -1 }) // none opened after this
	if d.direct >= 0 {
		unix.Close(d.direct)
		d.direct = -1
	}
}

// inCache reports whether the page cache holds every page of n bytes of f
// at off; true where the kernel cannot tell (before Linux 6.5), so that the
// read goes through the cache as it always did.
func inCache(f *os.File, off int64, n int) bool {
	cached, total, ok := cachedPages(f, off, int64(n))
	return !ok || cached >= total
}

// cachedPages reports how many of the pages of n bytes of f at off the page
// cache holds, of how many; ok is false where the kernel cannot tell.
func cachedPages(f *os.File, off, n int64) (cached, total uint64, ok bool) {
	start := off &^ (directAlign - 1)
	rng := unix.CachestatRange{Off: uint64(start), Len: uint64(off + n - start)}
	var st unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &rng, &st, 0); err != nil {
		return 0, 0, false
	}
	return st.Cache, (rng.Len + directAlign - 1) / directAlign, true
}

// reopenDirect opens f again, with O_DIRECT, for reading: the same file,
// through /proc/self/fd, whatever its path now names.
func reopenDirect(f *os.File) (int, error) {
	return unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
}

// alignUp rounds n up to a multiple of directAlign, as O_DIRECT wants
// lengths.
func alignUp(n int) int { return (n + directAlign - 1) &^ (directAlign - 1) }

// directBufs are aligned buffers for direct reads of one block (at most
// MaxBlockSize, plus the alignment on both ends).
var directBufs = sync.Pool{New: func() any {
	b := alignedBuf(MaxBlockSize + 2*directAlign)
	return &b
}}

// readDirect fills p from fd (O_DIRECT) at off: straight into p when p and
// off are aligned and p's capacity covers its length rounded up to a block,
// else through an aligned buffer.
func readDirect(fd int, p []byte, off int64) error {
	rounded := alignUp(len(p))
	if off%directAlign == 0 && isAligned(p) && cap(p) >= rounded {
		return preadFull(fd, p[:rounded], off, len(p))
	}
	start := off &^ (directAlign - 1)
	end := (off + int64(len(p)) + directAlign - 1) &^ (directAlign - 1)
	var buf []byte
	if end-start <= MaxBlockSize+2*directAlign {
		pooled := directBufs.Get().(*[]byte)
		defer directBufs.Put(pooled)
		buf = (*pooled)[:end-start]
	} else {
		buf = alignedBuf(int(end - start))
	}
	if err := preadFull(fd, buf, start, int(off-start)+len(p)); err != nil {
		return err
	}
	copy(p, buf[off-start:])
	return nil
}

// preadFull reads into buf at off until at least need bytes are in.
func preadFull(fd int, buf []byte, off int64, need int) error {
	for got := 0; got < need; {
		k, err := unix.Pread(fd, buf[got:], off+int64(got))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if k == 0 {
			return io.ErrUnexpectedEOF
		}
		got += k
	}
	return nil
}

func isAligned(b []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))&(directAlign-1) == 0
}

// alignedBuf returns n bytes starting at a multiple of directAlign.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := 0
	if a := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (directAlign - 1)); a != 0 {
		skip = directAlign - a
	}
	return b[skip : skip+n : skip+n]
}
