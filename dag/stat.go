package dag

import (
	"encoding/binary"
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// fileStat is what the import index remembers of a file's or a symlink's
// inode: if all of it is unchanged, so is the content (see racy).
type fileStat struct {
	size, mtimeNs, ctimeNs int64
	ino                    uint64
	mode                   uint32 // st_mode: type and permission bits
}

func statOf(st *unix.Stat_t) fileStat {
	return fileStat{
		size:    st.Size,
		mtimeNs: st.Mtim.Nano(),
		ctimeNs: st.Ctim.Nano(),
		ino:     st.Ino,
		mode:    st.Mode,
	}
}

func (s fileStat) isRegular() bool { return s.mode&unix.S_IFMT == unix.S_IFREG }
func (s fileStat) isSymlink() bool { return s.mode&unix.S_IFMT == unix.S_IFLNK }
func (s fileStat) isDir() bool     { return s.mode&unix.S_IFMT == unix.S_IFDIR }

// unixfsMode is the mode an imported file records (see recordedFileMode).
func (s fileStat) unixfsMode() os.FileMode {
	return recordedFileMode(os.FileMode(s.mode))
}

// Modes a UnixFS node leaves out: a file or directory that has them records
// no mode, so the common tree hashes as it always did (and as other UnixFS
// tools hash it), and only files and directories with other permissions
// cost a mode in their node.
const (
	defaultFileMode os.FileMode = 0o644
	defaultDirMode  os.FileMode = 0o755
)

// recordedFileMode is the mode an imported file records: its permission
// bits (never setuid, setgid or sticky), or 0 (none) for 0644. A file of
// mode 0000 records none either: UnixFS cannot tell it from no mode.
func recordedFileMode(perm os.FileMode) os.FileMode {
	if perm = perm.Perm(); perm == defaultFileMode {
		return 0
	}
	return perm
}

// recordedDirMode is the mode an imported directory records: its
// permission bits, or 0 (none) for 0755.
func recordedDirMode(perm os.FileMode) os.FileMode {
	if perm = perm.Perm(); perm == defaultDirMode {
		return 0
	}
	return perm
}

// Racy timestamps (git's "racy clean" problem, see git's
// Documentation/technical/racy-git.txt). The index trusts a file whose stat
// is unchanged. That is only sound if any later change to the file must
// change its stat: a write in the same clock tick as the last one, to a
// file of the same size, leaves mtime and ctime as they were. The kernel
// stamps a change with its coarse clock (CLOCK_REALTIME_COARSE, or a finer
// clock, never earlier), truncated to the file system's resolution. So a
// file whose timestamps are older than the coarse clock read before its
// stat, by more than that resolution, gets new timestamps from any change
// that follows; one whose timestamps are not is racy: the index must not
// vouch for it until it has been stat'ed and read again once the clock has
// moved on (see importer.hashDeferred).
//
// Timestamps set by another clock (NFS servers, FUSE daemons) are outside
// this reasoning, as they are outside git's when clocks disagree.

// coarseNow reads the clock the kernel stamps files with.
func coarseNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts); err != nil {
		var fine unix.Timespec
		if unix.ClockGettime(unix.CLOCK_REALTIME, &fine) == nil {
			return fine.Nano() - racyFallbackLag
		}
		return 0 // no clock: everything recent is racy
	}
	return ts.Nano()
}

// racyFallbackLag is how far the coarse clock may trail the real-time
// clock (a tick at HZ=100, doubled), for a kernel without the former.
const racyFallbackLag = 20e6

// racy reports whether a change to the file made after ref (a coarseNow
// reading taken before the stat) could leave its stat as it is.
func (s fileStat) racy(ref int64) bool {
	return s.mtimeNs >= ref-grain(s.mtimeNs) || s.ctimeNs >= ref-grain(s.ctimeNs)
}

// racyUntil is the coarse-clock time after which the stat is no longer
// racy.
func (s fileStat) racyUntil() int64 {
	return max(s.mtimeNs+grain(s.mtimeNs), s.ctimeNs+grain(s.ctimeNs))
}

// grain bounds the resolution of the file system that wrote timestamp t:
// the largest power of ten nanoseconds dividing it, and for a whole second
// two seconds (FAT's mtime resolution). On a file system with nanosecond
// timestamps it is almost always a few nanoseconds.
func grain(t int64) int64 {
	if t%1e9 == 0 {
		return 2e9
	}
	g := int64(1)
	for t%(g*10) == 0 {
		g *= 10
	}
	return g
}

// direntBufSize is the getdents buffer of a directory scan.
const direntBufSize = 32 << 10

// dirent is one entry read from a directory.
type dirent struct {
	name string
	typ  uint8 // unix.DT_*; DT_UNKNOWN when the file system does not say
	ino  uint64
}

// readDirents lists the directory open as fd, without "." and "..", in the
// order the file system returns them. buf is scratch space.
func readDirents(fd int, buf []byte) ([]dirent, error) {
	var out []dirent
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8,
		// then the name, NUL-terminated and padded.
		b := buf[:n]
		for len(b) >= 19 {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return nil, errors.New("malformed directory entry")
			}
			ino := binary.NativeEndian.Uint64(b[0:8])
			typ := b[18]
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			b = b[reclen:]
			if ino == 0 || string(name) == "." || string(name) == ".." {
				continue
			}
			out = append(out, dirent{name: string(name), typ: typ, ino: ino})
		}
	}
}

// fstatOf is the stat of an open file.
func fstatOf(f *os.File) (fileStat, error) {
	var sys unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &sys); err != nil {
		return fileStat{}, err
	}
	return statOf(&sys), nil
}

// fstatat stats name in the directory open as dirfd, not following a
// symlink, and returns its number of links besides.
func fstatat(dirfd int, name string) (fileStat, uint64, error) {
	var st unix.Stat_t
	for {
		err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fileStat{}, 0, err
		}
		return statOf(&st), uint64(st.Nlink), nil
	}
}

// openDirAt opens the directory name in dirfd, refusing a symlink.
func openDirAt(dirfd int, name string) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, err
	}
}

// readFileAt reads the regular file name in dirfd whole (for small files:
// .cortexignore). O_NONBLOCK keeps a FIFO from blocking the open; it does
// not change reads of a regular file.
func readFileAt(dirfd int, name string) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, errNotRegular
	}
	return io.ReadAll(f)
}

var errNotRegular = errors.New("not a regular file")

// readlinkAt returns the target of the symlink name in dirfd.
func readlinkAt(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
