// Package tasklog keeps the output of tasks in the peer's badger store, per
// task and per stream, addressed by sequence number, up to a cap per task.
// Output past the cap is counted as dropped from the store; the live stream
// never drops anything. It is the history a late watcher reads before the
// live output, and what fills gaps in a live stream.
package tasklog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// Key layout: prefix + task id + 0x00 + stream byte + big-endian seq. The
// value is the chunk's unix-nano time (8 bytes) then its data.
const (
	logPrefix  = "tasklog/c/"
	metaPrefix = "tasklog/m/"
	maxTaskID  = 128
)

// Stats says how much of a task's output was kept.
type Stats struct {
	StoredBytes  int64
	DroppedBytes int64
	// Last sequence number stored per stream (0: none).
	LastStdout, LastStderr uint64
}

// Store reads and writes task logs.
type Store struct {
	db *badger.DB
}

// New returns a log store on db.
func New(db *badger.DB) *Store { return &Store{db: db} }

func checkID(id string) error {
	if id == "" || len(id) > maxTaskID {
		return fmt.Errorf("task id %q: want 1..%d bytes: %w", id, maxTaskID, errdefs.ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		if id[i] == 0 {
			return fmt.Errorf("task id %q: contains NUL: %w", id, errdefs.ErrInvalid)
		}
	}
	return nil
}

func chunkKey(id string, s runtime.Stream, seq uint64) []byte {
	k := make([]byte, 0, len(logPrefix)+len(id)+10)
	k = append(k, logPrefix...)
	k = append(k, id...)
	k = append(k, 0, byte(s))
	return binary.BigEndian.AppendUint64(k, seq)
}

// metaKey ends in NUL so that dropping one task's keys never touches a task
// whose id merely starts with the same bytes.
func metaKey(id string) []byte { return append([]byte(metaPrefix+id), 0) }

func streamPrefix(id string, s runtime.Stream) []byte {
	k := append([]byte(logPrefix), id...)
	return append(k, 0, byte(s))
}

// Writer appends one task's output. It is not safe for concurrent use
// except that Stats may be called at any time.
type Writer struct {
	id      string
	limit   int64
	wb      *badger.WriteBatch
	db      *badger.DB
	mu      sync.Mutex
	stats   Stats
	err     error
	closed  bool
	pending int
}

// flushEvery bounds how many chunks sit in the write batch before a flush,
// so a reader sees recent output without waiting for the task's end.
const flushEvery = 64

// Writer starts the log of task id, keeping at most limit bytes (0: keep
// nothing, only count).
func (s *Store) Writer(id string, limit int64) (*Writer, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	return &Writer{id: id, limit: limit, db: s.db, wb: s.db.NewWriteBatch()}, nil
}

// Append stores c when it fits under the cap, else counts it as dropped.
// Once one chunk is dropped, later chunks of the same task are dropped too,
// so what is stored is always a prefix of each stream.
func (w *Writer) Append(c runtime.Chunk) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("task log %s: closed: %w", w.id, errdefs.ErrUnavailable)
	}
	n := int64(len(c.Data))
	if w.err != nil || w.stats.DroppedBytes > 0 || w.stats.StoredBytes+n > w.limit {
		w.stats.DroppedBytes += n
		return w.err
	}
	v := make([]byte, 8+len(c.Data))
	binary.BigEndian.PutUint64(v, uint64(c.Time.UnixNano()))
	copy(v[8:], c.Data)
	if err := w.wb.Set(chunkKey(w.id, c.Stream, c.Seq), v); err != nil {
		w.err = fmt.Errorf("task log %s: store chunk: %w", w.id, err)
		w.stats.DroppedBytes += n
		return w.err
	}
	w.stats.StoredBytes += n
	if c.Stream == runtime.Stdout {
		w.stats.LastStdout = c.Seq
	} else {
		w.stats.LastStderr = c.Seq
	}
	w.pending++
	if w.pending >= flushEvery {
		w.flushLocked()
	}
	return w.err
}

func (w *Writer) flushLocked() {
	w.pending = 0
	if err := w.wb.Flush(); err != nil && w.err == nil {
		w.err = fmt.Errorf("task log %s: flush: %w", w.id, err)
	}
	w.wb = w.db.NewWriteBatch()
}

// Flush makes what was appended so far visible to readers. Writers call it
// when no more output is waiting, so a follower sees a quiet task's last
// lines at once while a busy task's chunks are still written in batches.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.pending == 0 {
		return w.err
	}
	w.flushLocked()
	return w.err
}

// Stats returns what was kept and dropped so far.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Close flushes what is buffered and records the task's log stats. Safe to
// call twice.
func (w *Writer) Close() (Stats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.stats, w.err
	}
	w.closed = true
	if err := w.wb.Flush(); err != nil && w.err == nil {
		w.err = fmt.Errorf("task log %s: flush: %w", w.id, err)
	}
	meta := make([]byte, 32)
	binary.BigEndian.PutUint64(meta[0:], uint64(w.stats.StoredBytes))
	binary.BigEndian.PutUint64(meta[8:], uint64(w.stats.DroppedBytes))
	binary.BigEndian.PutUint64(meta[16:], w.stats.LastStdout)
	binary.BigEndian.PutUint64(meta[24:], w.stats.LastStderr)
	if err := w.db.Update(func(txn *badger.Txn) error {
		return txn.Set(metaKey(w.id), meta)
	}); err != nil && w.err == nil {
		w.err = fmt.Errorf("task log %s: record stats: %w", w.id, err)
	}
	return w.stats, w.err
}

// Stats returns the recorded stats of a finished task's log.
func (s *Store) Stats(id string) (Stats, error) {
	if err := checkID(id); err != nil {
		return Stats{}, err
	}
	var st Stats
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(metaKey(id))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			if len(v) != 32 {
				return fmt.Errorf("corrupt stats record: %w", errdefs.ErrInvalid)
			}
			st = Stats{
				StoredBytes:  int64(binary.BigEndian.Uint64(v[0:])),
				DroppedBytes: int64(binary.BigEndian.Uint64(v[8:])),
				LastStdout:   binary.BigEndian.Uint64(v[16:]),
				LastStderr:   binary.BigEndian.Uint64(v[24:]),
			}
			return nil
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Stats{}, fmt.Errorf("task log %s: %w", id, errdefs.ErrNotFound)
	}
	if err != nil {
		return Stats{}, fmt.Errorf("task log %s: %w", id, err)
	}
	return st, nil
}

// Read returns the stored chunks of one stream with from <= seq, in order,
// at most limit chunks and about maxBytes of data (at least one chunk).
func (s *Store) Read(ctx context.Context, id string, stream runtime.Stream, from uint64, limit int, maxBytes int) ([]runtime.Chunk, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if stream != runtime.Stdout && stream != runtime.Stderr {
		return nil, fmt.Errorf("task log %s: stream %d: %w", id, stream, errdefs.ErrInvalid)
	}
	var out []runtime.Chunk
	size := 0
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = streamPrefix(id, stream)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(chunkKey(id, stream, from)); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(out) >= limit || (len(out) > 0 && size >= maxBytes) {
				return nil
			}
			k := it.Item().Key()
			seq := binary.BigEndian.Uint64(k[len(k)-8:])
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) < 8 {
				return fmt.Errorf("corrupt chunk %d: %w", seq, errdefs.ErrInvalid)
			}
			out = append(out, runtime.Chunk{
				Stream: stream, Seq: seq,
				Time: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
				Data: v[8:],
			})
			size += len(v) - 8
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("task log %s: read: %w", id, err)
	}
	return out, nil
}

// Each calls fn for every stored chunk of one stream with from <= seq, in
// order, reading the store in batches, until the chunks run out or fn
// returns an error (returned as is).
func (s *Store) Each(ctx context.Context, id string, stream runtime.Stream, from uint64, fn func(runtime.Chunk) error) error {
	for {
		chunks, err := s.Read(ctx, id, stream, from, eachBatch, eachBatchBytes)
		if err != nil || len(chunks) == 0 {
			return err
		}
		for _, c := range chunks {
			if err := fn(c); err != nil {
				return err
			}
			from = c.Seq + 1
		}
	}
}

// Batches of Each: enough to amortise a read, small enough for memory.
const (
	eachBatch      = 256
	eachBatchBytes = 4 << 20
)

// Delete removes the logs of the tasks ids, in one go: badger's
// DropPrefix pauses writes while it runs, so it is called once.
func (s *Store) Delete(ids ...string) error {
	var prefixes [][]byte
	for _, id := range ids {
		if err := checkID(id); err != nil {
			return err
		}
		prefixes = append(prefixes, streamPrefix(id, runtime.Stdout), streamPrefix(id, runtime.Stderr), metaKey(id))
	}
	if len(prefixes) == 0 {
		return nil
	}
	if err := s.db.DropPrefix(prefixes...); err != nil {
		return fmt.Errorf("task logs %v: delete: %w", ids, err)
	}
	return nil
}
