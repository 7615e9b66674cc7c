// Package store opens the peer's local key-value store, an embedded badger
// database in the data dir, tuned for a small resident footprint. Each
// subsystem keeps its keys under its own prefix.
//
// store imports no other package of this module except errdefs.
package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Config sizes badger's memory use. The defaults keep an idle peer small;
// a peer storing large workspaces may raise them.
type Config struct {
	Dir           string
	MemTableBytes int64
	BlockCacheMiB int64
	IndexCacheMiB int64
	ValueLogMiB   int64
	// ValueThreshold: values at least this large go to the value log, an
	// append-only file, instead of the LSM tree, so large blocks are
	// written once and never compacted.
	ValueThreshold int64
	NumMemtables   int
	CompactorCount int
	// ReserveBytes are kept free on the store's disk: writes of blocks
	// that would eat into them are refused (resource_exhausted), and the
	// store does not open with less, because badger writes its tables and
	// logs through memory maps and a full disk kills the process.
	ReserveBytes int64
}

// DefaultConfig returns the tuned defaults for dir.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:            dir,
		MemTableBytes:  16 << 20,
		BlockCacheMiB:  32,
		IndexCacheMiB:  16,
		ValueLogMiB:    256,
		ValueThreshold: 1 << 10,
		NumMemtables:   2,
		CompactorCount: 2,
		ReserveBytes:   64 << 20,
	}
}

// Validate checks the sizes.
func (c Config) Validate() error {
	if c.Dir == "" || c.MemTableBytes <= 0 || c.BlockCacheMiB < 0 || c.IndexCacheMiB < 0 || c.ValueLogMiB <= 0 || c.ValueThreshold <= 0 || c.NumMemtables < 1 || c.CompactorCount < 2 || c.ReserveBytes < 0 {
		return fmt.Errorf("store config %+v: %w", c, errdefs.ErrInvalid)
	}
	return nil
}

// Store is the open database. Close it once; Close is safe to call twice.
type Store struct {
	db        *badger.DB
	dir       string
	reserve   int64
	closeOnce sync.Once
	closeErr  error
}

// Open opens (or creates) the store.
func Open(cfg Config, log *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", cfg.Dir, err)
	}
	// Opening needs less than the reserve (flushing what the logs hold),
	// which the writes refused above it leave free.
	if err := room(cfg.Dir, 0, cfg.ReserveBytes/2); err != nil {
		return nil, fmt.Errorf("open store: %w; free space and start again", err)
	}
	opts := badger.DefaultOptions(cfg.Dir).
		WithLogger(badgerLogger{log}).
		WithMemTableSize(cfg.MemTableBytes).
		WithNumMemtables(cfg.NumMemtables).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(cfg.BlockCacheMiB << 20).
		WithIndexCacheSize(cfg.IndexCacheMiB << 20).
		WithValueLogFileSize(cfg.ValueLogMiB << 20).
		WithValueThreshold(cfg.ValueThreshold).
		WithNumCompactors(cfg.CompactorCount).
		WithCompression(options.None)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", cfg.Dir, err)
	}
	return &Store{db: db, dir: cfg.Dir, reserve: cfg.ReserveBytes}, nil
}

// Room refuses, with ErrResourceExhausted, a write of need bytes that
// would leave less than the reserve free on the store's disk.
func (s *Store) Room(need int64) error { return room(s.dir, need, s.reserve) }

func room(dir string, need, reserve int64) error {
	if reserve == 0 {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return nil // cannot tell: let the write say
	}
	free := int64(st.Bavail) * st.Bsize
	if free-need < reserve {
		return fmt.Errorf("no space left on the device of %s: %d MiB free, %d MiB asked, %d MiB kept free for the store: %w",
			dir, free>>20, (need+(1<<20)-1)>>20, reserve>>20, errdefs.ErrResourceExhausted)
	}
	return nil
}

// DB is the badger database, for subsystems that keep their own keys.
func (s *Store) DB() *badger.DB { return s.db }

// Size is the bytes the store takes on disk: the blocks its files have
// allocated, not their lengths (badger's value log is a sparse file of
// its full size from the start).
func (s *Store) Size() uint64 { return DiskUsage(s.dir) }

// DiskUsage is the bytes the files under dir have allocated on disk, as du
// counts them; 0 for a dir that does not exist. Files that vanish while it
// walks are skipped.
func DiskUsage(dir string) uint64 {
	var total uint64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += uint64(st.Blocks) * 512
			}
		}
		return nil
	})
	return total
}

// Get reads one key; a missing key wraps errdefs.ErrNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if err != nil {
			return err
		}
		out, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("get %q: %w", key, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %q: %w", key, err)
	}
	return out, nil
}

// Put writes one key. Below half the reserve free it refuses, with
// ErrResourceExhausted, as Open does: a record (a few hundred bytes, where
// blocks and task output are refused at the whole reserve) still goes in on
// a disk the store keeps room on, but never onto a disk something else has
// filled, where badger's write through its memory maps would kill the
// process.
func (s *Store) Put(key, value []byte) error {
	if err := room(s.dir, int64(len(key)+len(value)), s.reserve/2); err != nil {
		return fmt.Errorf("put %q: %w", key, err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, value) }); err != nil {
		return fmt.Errorf("put %q: %w", key, err)
	}
	return nil
}

// Delete removes one key; a missing key is not an error.
func (s *Store) Delete(key []byte) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(key) }); err != nil {
		return fmt.Errorf("delete %q: %w", key, err)
	}
	return nil
}

// Scan calls fn for every key under prefix, in key order, until fn returns
// an error (returned as is) or the keys run out.
func (s *Store) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("scan %q: %w", item.Key(), err)
			}
			if err := fn(item.KeyCopy(nil), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close flushes and closes the database. Safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close store: %w", err)
		}
	})
	return s.closeErr
}

// badgerLogger sends badger's printf-style logs to slog; its info chatter
// goes to debug.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Infof(f string, a ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprintf(f, a...))) }
func (l badgerLogger) Debugf(f string, a ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
