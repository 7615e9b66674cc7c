// Package fswatch tells whether anything changed in a directory tree since
// it was last scanned, from inotify events, so that a re-import of a tree
// nothing touched need not stat its files (as git's fsmonitor does).
//
// A scan adds a watch on every directory before it lists it. An event on a
// watched directory (an entry created, deleted, moved, written, its
// attributes changed) marks that directory changed in its trees; the next
// scan lists only the changed directories and their ancestors, and keeps
// what it knew of every other directory whose watch still names the same
// directory (see Scan.Keep). A lost event (the kernel's queue overflowed),
// a watch that could not be added or a scan that failed make the next scan
// a full one. Events are read, without blocking, when a scan begins or ends:
// nothing runs between scans, and an event queued before Begin is never
// missed.
//
// What inotify does not see, a watcher does not either: writes through a
// shared memory mapping, and changes to a file through a hard link in an
// unwatched directory (the caller should not trust a tree with such files,
// see Scan.End), or made on another machine of a network file system.
package fswatch

import (
	"bytes"
	"errors"
	"fmt"
	"path"
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
	fullOn     map[string]bool          // names whose change makes the next scan full
	tick       uint64                   // orders Begin calls, for eviction
	closed     bool
}

type tree struct {
	root     string
	dev, ino uint64 // of the root directory when its scan began
	watches  map[int32]watchedDir
	byRel    map[string]int32 // directory path -> its latest watch
	dirty    map[string]names // directories with an event since the last Begin
	full     bool             // the next scan must list everything
	valid    bool             // the last scan ended well: value stands
	value    any              // what the last successful scan left, nil if none
	scan     uint64           // the latest scan begun; only it may End with a value
	used     uint64           // tick of the last Begin
}

// names are the entries of a directory that events named; all when an
// event named none (one on the directory itself).
type names struct {
	all   bool
	names map[string]bool
}

// watchedDir is a watched directory as its last scan saw it.
type watchedDir struct {
	rel string // slash-separated path from the root, "" for the root
	ino uint64
}

// New starts a watcher of up to maxWatches directories (DefaultMaxWatches
// if maxWatches <= 0). A change to an entry named one of fullOn makes the
// next scan a full one: such files change how the whole subtree below them
// is read (a .cortexignore), not only their own directory.
func New(maxWatches int, fullOn ...string) (*Watcher, error) {
	if maxWatches <= 0 {
		maxWatches = DefaultMaxWatches
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	full := map[string]bool{}
	for _, n := range fullOn {
		full[n] = true
	}
	return &Watcher{
		fd: fd, maxWatches: maxWatches, fullOn: full,
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
	w       *Watcher
	t       *tree
	id      uint64
	full    bool             // list everything: nothing is known
	touched map[string]bool  // the changed directories and their ancestors
	changed map[string]names // what changed in each, as Begin found it
	failed  bool             // a watch could not be added
	ended   bool
}

// Begin starts a scan of the tree at root (an absolute path), whose root
// directory is now the inode (dev, ino). If the tree was scanned before,
// that scan ended with a value that still(value) accepts, and nothing
// changed since the scan began, Begin returns that value and no scan is
// needed (scan is nil). Otherwise the caller scans, adding each directory
// it lists with Scan.Add before listing it, keeping those Scan.Keep allows,
// and ends with Scan.End.
func (w *Watcher) Begin(root string, dev, ino uint64, still func(value any) bool) (scan *Scan, value any, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, nil, ErrClosed
	}
	w.drain()
	w.tick++
	t := w.trees[root]
	same := t != nil && t.valid && !t.full && t.value != nil && t.dev == dev && t.ino == ino && still(t.value)
	if same && len(t.dirty) == 0 {
		t.used = w.tick
		return nil, t.value, nil
	}
	if t == nil {
		if len(w.trees) >= maxTrees {
			w.evictOldest()
		}
		t = &tree{root: root, watches: map[int32]watchedDir{}, byRel: map[string]int32{}}
		w.trees[root] = t
	}
	sc := &Scan{w: w, t: t, id: w.tick, full: !same}
	if same {
		sc.changed = t.dirty
		sc.touched = map[string]bool{}
		for rel := range t.dirty {
			for {
				sc.touched[rel] = true
				if rel == "" {
					break
				}
				if rel = path.Dir(rel); rel == "." {
					rel = ""
				}
			}
		}
	}
	t.dev, t.ino, t.used = dev, ino, w.tick
	t.dirty, t.full, t.valid, t.value = map[string]names{}, false, false, nil
	t.scan = w.tick
	return sc, nil, nil
}

// Keep reports whether the scan may keep what it knew of the directory rel,
// whose inode is ino, without listing it: nothing changed under it since
// the last scan, and the watch made then is on this very directory at this
// very path (not on one moved here, or replaced by a new one).
func (s *Scan) Keep(rel string, ino uint64) bool {
	if s.full || s.touched[rel] {
		return false
	}
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	wd, ok := s.t.byRel[rel]
	if !ok {
		return false
	}
	d, ok := s.t.watches[wd]
	return ok && d.rel == rel && d.ino == ino
}

// Quiet returns, for the directory rel, which entries no event named since
// the last scan: an entry it reports quiet, found again with the same
// inode, is what that scan saw, and need not be looked at again. It
// returns nil when the scan cannot tell (a full scan, an event on the
// directory itself).
func (s *Scan) Quiet(rel string) func(name string) bool {
	if s.full {
		return nil
	}
	c, ok := s.changed[rel]
	if !ok {
		return func(string) bool { return true }
	}
	if c.all {
		return nil
	}
	return func(name string) bool { return !c.names[name] }
}

// Add watches the directory rel of the scan's tree, open as fd, whose inode
// is ino. It must be called before the directory is listed.
func (s *Scan) Add(fd int, rel string, ino uint64) {
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
	s.t.watches[wd32] = watchedDir{rel: rel, ino: ino}
	s.t.byRel[rel] = wd32
}

// End ends the scan. With ok (the scan succeeded and every file it saw can
// only change through its directory), value is kept as the tree's state,
// for Begin to return while nothing changes; events since the scan began
// already count. Without ok, the next scan of the tree is a full one. Only
// the first End of a scan counts.
func (s *Scan) End(ok bool, value any) {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.ended {
		return
	}
	s.ended = true
	if w.closed || s.t.scan != s.id || w.trees[s.t.root] != s.t {
		return // a later scan of the tree began, or the tree was evicted
	}
	w.drain()
	if ok && !s.failed {
		s.t.valid, s.t.value = true, value
	} else {
		s.t.full = true
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
			name := w.buf[off+unix.SizeofInotifyEvent : min(n, off+unix.SizeofInotifyEvent+int(ev.Len))]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				w.all()
				continue
			}
			significant := len(name) > 0 && w.fullOn[string(name)]
			for t := range w.byWatch[ev.Wd] {
				if d, ok := t.watches[ev.Wd]; ok && !significant {
					c := t.dirty[d.rel]
					switch {
					case c.all:
					case len(name) == 0:
						c = names{all: true}
					default:
						if c.names == nil {
							c.names = map[string]bool{}
						}
						c.names[string(name)] = true
					}
					t.dirty[d.rel] = c
				} else {
					t.full = true
				}
			}
			if ev.Mask&unix.IN_IGNORED != 0 { // the kernel removed the watch
				for t := range w.byWatch[ev.Wd] {
					if d, ok := t.watches[ev.Wd]; ok && t.byRel[d.rel] == ev.Wd {
						delete(t.byRel, d.rel)
					}
					delete(t.watches, ev.Wd)
				}
				delete(w.byWatch, ev.Wd)
			}
		}
	}
}

// all makes the next scan of every tree a full one.
func (w *Watcher) all() {
	for _, t := range w.trees {
		t.full = true
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
