// Package fswatch tells whether anything changed in a directory tree since
// it was last scanned, from inotify events, so that a re-import of a tree
// nothing touched need not stat its files (as git's fsmonitor does).
//
// A scan adds a watch on every directory before it lists it. Any event on a
// watched directory (an entry created, deleted, moved, written, its
// attributes changed) marks its trees changed; so does a lost event (the
// kernel's queue overflowed) or a watch that could not be added. Events are
// read, without blocking, when a scan begins or ends: nothing runs between
// scans, and an event queued before Begin is never missed.
//
// What inotify does not see, a watcher does not either: writes through a
// shared memory mapping, and changes to a file through a hard link in an
// unwatched directory (the caller should not trust a tree with such files,
// see Scan.End), or made on another machine of a network file system.
package fswatch

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mask is every event that can change what a scan of a directory sees.
const mask = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ONLYDIR

// Limits of a watcher.
const (
	// DefaultMaxWatches bounds the directories watched in all (the
	// kernel's own limit, fs.inotify.max_user_watches, is shared by all
	// of the user's processes); a tree past it is not watched.
	DefaultMaxWatches = 65536
	// maxTrees bounds the trees watched; the one begun longest ago goes.
	maxTrees = 16
)

// ErrClosed is returned by Begin after Close.
var ErrClosed = errors.New("watcher closed")

// Watcher watches trees of directories. Its methods are safe for
// concurrent use.
type Watcher struct {
	mu         sync.Mutex
	fd         int // inotify instance, non-blocking; -1 once closed
	maxWatches int
	trees      map[string]*tree         // by root path
	byWatch    map[int32]map[*tree]bool // watch descriptor -> trees that hold it
	buf        []byte                   // for reading events
	tick       uint64                   // orders Begin calls, for eviction
	closed     bool
}

type tree struct {
	root     string
	dev, ino uint64 // of the root directory when its scan began
	watches  map[int32]bool
	changed  bool   // an event since the current state's scan began
	valid    bool   // every directory of the last full scan is watched
	value    any    // what the last successful scan left, nil if none
	scan     uint64 // the latest scan begun; only it may End with a value
	used     uint64 // tick of the last Begin
}

// New starts a watcher of up to maxWatches directories (DefaultMaxWatches
// if maxWatches <= 0).
func New(maxWatches int) (*Watcher, error) {
	if maxWatches <= 0 {
		maxWatches = DefaultMaxWatches
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	return &Watcher{
		fd: fd, maxWatches: maxWatches,
		trees: map[string]*tree{}, byWatch: map[int32]map[*tree]bool{},
		buf: make([]byte, 64<<10),
	}, nil
}

// Close stops watching. It is safe to call twice.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	w.trees, w.byWatch = nil, nil
	return unix.Close(w.fd)
}

// A Scan is one scan of a tree, begun by Begin.
type Scan struct {
	w      *Watcher
	t      *tree
	id     uint64
	failed bool // a watch could not be added
}

// Begin starts a scan of the tree at root (an absolute path), whose root
// directory is now the inode (dev, ino). If the tree was scanned before,
// that scan ended with a value that still(value) accepts, and nothing
// changed since the scan began, Begin returns that value and no scan is
// needed (scan is nil). Otherwise the caller scans, adding each directory
// with Scan.Add before listing it, and ends with Scan.End.
func (w *Watcher) Begin(root string, dev, ino uint64, still func(value any) bool) (scan *Scan, value any, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, nil, ErrClosed
	}
	w.drain()
	w.tick++
	t := w.trees[root]
	if t != nil && t.valid && !t.changed && t.value != nil && t.dev == dev && t.ino == ino && still(t.value) {
		t.used = w.tick
		return nil, t.value, nil
	}
	if t == nil {
		if len(w.trees) >= maxTrees {
			w.evictOldest()
		}
		t = &tree{root: root, watches: map[int32]bool{}}
		w.trees[root] = t
	}
	t.dev, t.ino, t.used = dev, ino, w.tick
	t.changed, t.valid, t.value = false, false, nil
	t.scan = w.tick
	return &Scan{w: w, t: t, id: w.tick}, nil, nil
}

// Add watches a directory of the scan's tree, open as fd, and must be
// called before the directory is listed.
func (s *Scan) Add(fd int) {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || s.failed {
		s.failed = true
		return
	}
	if len(w.byWatch) >= w.maxWatches {
		s.failed = true
		return
	}
	// The directory is named through its descriptor, so the watch is on
	// the directory that will be listed, whatever its path is now.
	wd, err := unix.InotifyAddWatch(w.fd, "/proc/self/fd/"+strconv.Itoa(fd), mask)
	if err != nil {
		s.failed = true
		return
	}
	wd32 := int32(wd)
	if w.byWatch[wd32] == nil {
		w.byWatch[wd32] = map[*tree]bool{}
	}
	w.byWatch[wd32][s.t] = true
	s.t.watches[wd32] = true
}

// End ends the scan. With ok (the scan succeeded and every file it saw can
// only change through its directory), value is kept as the tree's state,
// for Begin to return while nothing changes; events since the scan began
// already count. Without ok, the next scan of the tree is a full one.
func (s *Scan) End(ok bool, value any) {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || s.t.scan != s.id || w.trees[s.t.root] != s.t {
		return // a later scan of the tree began, or the tree was evicted
	}
	w.drain()
	if ok && !s.failed {
		s.t.valid, s.t.value = true, value
	}
}

// drain reads every queued event and marks the trees it concerns changed.
func (w *Watcher) drain() {
	for {
		n, err := unix.Read(w.fd, w.buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				w.all() // cannot say what was lost
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				w.all()
				continue
			}
			for t := range w.byWatch[ev.Wd] {
				t.changed = true
			}
			if ev.Mask&unix.IN_IGNORED != 0 { // the kernel removed the watch
				for t := range w.byWatch[ev.Wd] {
					delete(t.watches, ev.Wd)
				}
				delete(w.byWatch, ev.Wd)
			}
		}
	}
}

// all marks every tree changed.
func (w *Watcher) all() {
	for _, t := range w.trees {
		t.changed = true
	}
}

// evictOldest stops watching the tree begun longest ago, removing the
// watches no other tree holds.
func (w *Watcher) evictOldest() {
	var old *tree
	for _, t := range w.trees {
		if old == nil || t.used < old.used {
			old = t
		}
	}
	if old == nil {
		return
	}
	delete(w.trees, old.root)
	for wd := range old.watches {
		holders := w.byWatch[wd]
		delete(holders, old)
		if len(holders) == 0 {
			delete(w.byWatch, wd)
			_, _ = unix.InotifyRmWatch(w.fd, uint32(wd))
		}
	}
}
