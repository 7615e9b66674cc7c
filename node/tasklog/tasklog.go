// Package tasklog keeps the output of tasks, per task and per stream,
// addressed by sequence number. Up to a cap per task the chunks live in the
// peer's badger store; past it they are appended to a spill file of the task
// in the spill dir, indexed in badger, so that every byte a task wrote can
// be read back (badger's value log would otherwise hold gigabytes that
// compaction must rewrite). When the task's log is closed the spill file
// becomes a DAG in the peer's block store (see Archive), pinned with the
// task and read from there. It is the history a late watcher reads before
// the live output, and what fills gaps in a live stream: a log that loses
// nothing is what makes a relayed stream lossless.
package tasklog

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-cid"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/runtime"
)

// Key layout: prefix + task id + 0x00 + stream byte + big-endian seq. The
// value of a stored chunk is its unix-nano time (8 bytes) then its data; the
// value of a spilled chunk is its time, its offset in the spill file (8
// bytes) and its length (4 bytes).
const (
	logPrefix   = "tasklog/c/"
	spillPrefix = "tasklog/s/"
	metaPrefix  = "tasklog/m/"
	maxTaskID   = 128
	spillValue  = 20
)

// Stats says how much of a task's output was kept.
type Stats struct {
	// StoredBytes are kept in the store, up to the cap.
	StoredBytes int64
	// SpilledBytes are past the cap, kept in the task's spill file.
	SpilledBytes int64
	// DroppedBytes could not be kept at all: the disk was full or failed.
	DroppedBytes int64
	// Last sequence number kept per stream (0: none).
	LastStdout, LastStderr uint64
}

// Archive keeps a finished task's spilled output as a DAG.
type Archive interface {
	// Keep stores f as a file DAG pinned under name and returns its root.
	Keep(ctx context.Context, name string, f *os.File) (cid.Cid, error)
	// ReadFileAt reads the file DAG root at off, as io.ReaderAt does.
	ReadFileAt(ctx context.Context, root cid.Cid, p []byte, off int64) (int, error)
	// Drop unpins name; a missing pin is no error.
	Drop(name string) error
}

// Store reads and writes task logs.
type Store struct {
	db       *badger.DB
	spillDir string
	archive  Archive // nil: spill files stay files
	// room refuses a write of need more bytes of output that the disk has
	// no room for (nil: none is refused); see New.
	room func(need int64) error

	// Archiving runs after a log closes, so that a task's result does not
	// wait for its output to be hashed; Close stops and waits for it.
	ctx       context.Context
	stop      context.CancelFunc
	archiving sync.WaitGroup
	archiveMu sync.Mutex // archiving one task's output against deleting it
}

// New returns a log store on db whose output past a task's cap goes to
// files in spillDir (created when first needed), and into archive (may be
// nil) once the task's log is closed. Every chunk is first offered to room
// (may be nil), with the bytes not yet on disk: its error (the store's
// reserve, store.Room) refuses the chunk, and the writer keeps nothing more,
// so a task's output never eats the space badger needs to survive.
func New(db *badger.DB, spillDir string, archive Archive, room func(need int64) error) *Store {
	ctx, stop := context.WithCancel(context.Background())
	return &Store{db: db, spillDir: spillDir, archive: archive, room: room, ctx: ctx, stop: stop}
}

// Close stops archiving and waits for it; a spill file not yet archived
// stays and is read as a file. Safe to call twice.
func (s *Store) Close() error {
	s.stop()
	s.archiving.Wait()
	return nil
}

// ArchivePin is the pin name of task id's spilled output.
func ArchivePin(id string) string { return "task:" + id + ":log" }

// archiveTimeout bounds turning a spill file into a DAG when a log closes.
const archiveTimeout = 10 * time.Minute

// spillPath names a task's spill file by a hash of its id: an id may hold
// any byte but NUL, a file name may not.
func (s *Store) spillPath(id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(s.spillDir, hex.EncodeToString(sum[:16])+".spill")
}

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

// streamPrefix is the key prefix of one stream of a task in the key space
// kind: logPrefix for stored chunks, spillPrefix for the index of spilled
// ones.
func streamPrefix(kind, id string, s runtime.Stream) []byte {
	k := make([]byte, 0, len(kind)+len(id)+10)
	k = append(append(k, kind...), id...)
	return append(k, 0, byte(s))
}

func chunkKey(kind, id string, s runtime.Stream, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(streamPrefix(kind, id, s), seq)
}

// metaKey ends in NUL so that dropping one task's keys never touches a task
// whose id merely starts with the same bytes.
func metaKey(id string) []byte { return append([]byte(metaPrefix+id), 0) }

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
	// buffered are the bytes appended since the last flush: in the write
	// batch or the spill file's buffer, not yet on disk.
	buffered int64

	spillPath string
	spill     *os.File // open once the cap is passed
	spillBuf  *bufio.Writer
	spillEnd  int64 // offset of the next spilled byte
	owner     *Store
}

// metaSize is the length of a task's stats record.
const metaSize = 40

// flushEvery bounds how many chunks sit in the write batch before a flush,
// so a reader sees recent output without waiting for the task's end.
const flushEvery = 64

// Writer starts the log of task id, keeping at most limit bytes in the
// store and the rest in its spill file.
func (s *Store) Writer(id string, limit int64) (*Writer, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	return &Writer{id: id, limit: limit, db: s.db, wb: s.db.NewWriteBatch(), spillPath: s.spillPath(id), owner: s}, nil
}

// Append keeps c: in the store while it fits under the cap, else in the
// spill file. Once one chunk is spilled, later chunks of the same task are
// spilled too, so what is stored is always a prefix of each stream. A chunk
// that cannot be kept at all (a full disk) is counted as dropped, and so is
// everything after it, so what is kept never has a hole.
func (w *Writer) Append(c runtime.Chunk) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("task log %s: closed: %w", w.id, errdefs.ErrUnavailable)
	}
	n := int64(len(c.Data))
	if w.err != nil {
		w.stats.DroppedBytes += n
		return w.err
	}
	var err error
	if w.owner.room != nil {
		err = w.owner.room(w.buffered + n)
	}
	if err == nil && w.spill == nil && w.stats.StoredBytes+n <= w.limit {
		err = w.store(c)
	} else if err == nil {
		err = w.spillChunk(c)
	}
	if err != nil {
		// The cause first: it is what the user reads (no space left on …).
		w.err = fmt.Errorf("%w (task log %s kept its output up to chunk %d)", diskError(w.spillPath, err), w.id, c.Seq-1)
		w.stats.DroppedBytes += n
		return w.err
	}
	w.buffered += n
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

func (w *Writer) store(c runtime.Chunk) error {
	v := make([]byte, 8+len(c.Data))
	binary.BigEndian.PutUint64(v, uint64(c.Time.UnixNano()))
	copy(v[8:], c.Data)
	if err := w.wb.Set(chunkKey(logPrefix, w.id, c.Stream, c.Seq), v); err != nil {
		return err
	}
	w.stats.StoredBytes += int64(len(c.Data))
	return nil
}

// spillChunk appends c's data to the spill file and its place to the index.
// The index entry goes into the same write batch, flushed after the file,
// so a reader never finds an entry whose bytes are not yet written.
func (w *Writer) spillChunk(c runtime.Chunk) error {
	if w.spill == nil {
		if err := os.MkdirAll(filepath.Dir(w.spillPath), 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(w.spillPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		w.spill, w.spillBuf = f, bufio.NewWriterSize(f, 1<<20)
	}
	if _, err := w.spillBuf.Write(c.Data); err != nil {
		return err
	}
	v := make([]byte, spillValue)
	binary.BigEndian.PutUint64(v, uint64(c.Time.UnixNano()))
	binary.BigEndian.PutUint64(v[8:], uint64(w.spillEnd))
	binary.BigEndian.PutUint32(v[16:], uint32(len(c.Data)))
	if err := w.wb.Set(chunkKey(spillPrefix, w.id, c.Stream, c.Seq), v); err != nil {
		return err
	}
	w.spillEnd += int64(len(c.Data))
	w.stats.SpilledBytes += int64(len(c.Data))
	return nil
}

func (w *Writer) flushLocked() {
	w.pending, w.buffered = 0, 0
	if w.spillBuf != nil {
		if err := w.spillBuf.Flush(); err != nil && w.err == nil {
			w.err = fmt.Errorf("task log %s: write spill file: %w", w.id, diskError(w.spillPath, err))
		}
	}
	if err := w.wb.Flush(); err != nil && w.err == nil {
		w.err = fmt.Errorf("task log %s: flush: %w", w.id, diskError(w.spillPath, err))
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
	w.flushLocked()
	w.wb.Cancel()
	if w.spill != nil {
		if err := w.spill.Close(); err != nil && w.err == nil {
			w.err = fmt.Errorf("task log %s: close spill file: %w", w.id, err)
		}
	}
	if err := w.db.Update(func(txn *badger.Txn) error {
		return txn.Set(metaKey(w.id), encodeMeta(w.stats, cid.Undef))
	}); err != nil && w.err == nil {
		w.err = fmt.Errorf("task log %s: record stats: %w", w.id, err)
	}
	if w.spill != nil && w.err == nil {
		w.owner.archiveLater(w.id, w.stats)
	}
	return w.stats, w.err
}

// diskError classifies a full disk met at path (ENOSPC, EDQUOT) as
// ErrResourceExhausted, saying so first; other errors are returned as
// they are.
func diskError(path string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("no space left on the device of %s (%v): %w", filepath.Dir(path), err, errdefs.ErrResourceExhausted)
	}
	return err
}

func encodeMeta(st Stats, archived cid.Cid) []byte {
	meta := make([]byte, metaSize, metaSize+len(archived.Bytes()))
	binary.BigEndian.PutUint64(meta[0:], uint64(st.StoredBytes))
	binary.BigEndian.PutUint64(meta[8:], uint64(st.DroppedBytes))
	binary.BigEndian.PutUint64(meta[16:], st.LastStdout)
	binary.BigEndian.PutUint64(meta[24:], st.LastStderr)
	binary.BigEndian.PutUint64(meta[32:], uint64(st.SpilledBytes))
	if archived.Defined() {
		meta = append(meta, archived.Bytes()...)
	}
	return meta
}

// archiveLater turns task id's closed spill file into a DAG in the
// background. Until it is done the file serves reads; if it fails, or
// the store closes first, the file stays and goes on serving them.
func (s *Store) archiveLater(id string, st Stats) {
	if s.archive == nil || s.ctx.Err() != nil {
		return
	}
	s.archiving.Add(1)
	go func() {
		defer s.archiving.Done()
		_ = s.archiveSpill(id, st) // a failure leaves the file, which is read as it is
	}()
}

func (s *Store) archiveSpill(id string, st Stats) error {
	s.archiveMu.Lock()
	defer s.archiveMu.Unlock()
	if _, err := s.Stats(id); err != nil {
		return err // deleted meanwhile
	}
	f, err := os.Open(s.spillPath(id))
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(s.ctx, archiveTimeout)
	defer cancel()
	c, err := s.archive.Keep(ctx, ArchivePin(id), f)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(metaKey(id), encodeMeta(st, c))
	}); err != nil {
		return errors.Join(err, s.archive.Drop(ArchivePin(id)))
	}
	// Readers now find the DAG in the stats record; one that opened the
	// file before keeps reading it until it closes it.
	return os.Remove(s.spillPath(id))
}

// Stats returns the recorded stats of a finished task's log.
func (s *Store) Stats(id string) (Stats, error) {
	st, _, err := s.meta(id)
	return st, err
}

// meta reads a finished task's stats record and the root of its archived
// spilled output (cid.Undef: none, or not archived).
func (s *Store) meta(id string) (Stats, cid.Cid, error) {
	if err := checkID(id); err != nil {
		return Stats{}, cid.Undef, err
	}
	var st Stats
	archived := cid.Undef
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(metaKey(id))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			// Records written before spilling existed have 32 bytes.
			if len(v) < metaSize && len(v) != 32 {
				return fmt.Errorf("corrupt stats record: %w", errdefs.ErrInvalid)
			}
			st = Stats{
				StoredBytes:  int64(binary.BigEndian.Uint64(v[0:])),
				DroppedBytes: int64(binary.BigEndian.Uint64(v[8:])),
				LastStdout:   binary.BigEndian.Uint64(v[16:]),
				LastStderr:   binary.BigEndian.Uint64(v[24:]),
			}
			if len(v) >= metaSize {
				st.SpilledBytes = int64(binary.BigEndian.Uint64(v[32:]))
			}
			if len(v) > metaSize {
				c, err := cid.Cast(v[metaSize:])
				if err != nil {
					return fmt.Errorf("corrupt stats record: %v: %w", err, errdefs.ErrInvalid)
				}
				archived = c
			}
			return nil
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Stats{}, cid.Undef, fmt.Errorf("task log %s: %w", id, errdefs.ErrNotFound)
	}
	if err != nil {
		return Stats{}, cid.Undef, fmt.Errorf("task log %s: %w", id, err)
	}
	return st, archived, nil
}

// spillReader reads a task's spilled output: from its DAG once archived,
// else from its spill file.
type spillReader struct {
	ctx     context.Context
	archive Archive
	root    cid.Cid
	file    *os.File
}

func (s *Store) openSpill(ctx context.Context, id string) (*spillReader, error) {
	for attempt := 0; ; attempt++ {
		if _, root, err := s.meta(id); err == nil && root.Defined() && s.archive != nil {
			return &spillReader{ctx: ctx, archive: s.archive, root: root}, nil
		}
		f, err := os.Open(s.spillPath(id))
		if err == nil {
			return &spillReader{ctx: ctx, file: f}, nil
		}
		// Archived between the two looks: the stats record says where.
		if !errors.Is(err, fs.ErrNotExist) || attempt > 0 {
			return nil, fmt.Errorf("spilled output: %w", err)
		}
	}
}

func (r *spillReader) readAt(p []byte, off int64) error {
	var n int
	var err error
	if r.file != nil {
		n, err = r.file.ReadAt(p, off)
	} else {
		n, err = r.archive.ReadFileAt(r.ctx, r.root, p, off)
	}
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (r *spillReader) close() {
	if r.file != nil {
		r.file.Close()
	}
}

// Read returns the kept chunks of one stream with from <= seq, in order,
// at most limit chunks and about maxBytes of data (at least one chunk):
// first those in the store, then those in the spill file.
func (s *Store) Read(ctx context.Context, id string, stream runtime.Stream, from uint64, limit int, maxBytes int) ([]runtime.Chunk, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if stream != runtime.Stdout && stream != runtime.Stderr {
		return nil, fmt.Errorf("task log %s: stream %d: %w", id, stream, errdefs.ErrInvalid)
	}
	var out []runtime.Chunk
	size := 0
	full := func() bool { return len(out) >= limit || (len(out) > 0 && size >= maxBytes) }
	var spill *spillReader
	defer func() {
		if spill != nil {
			spill.close()
		}
	}()
	err := s.db.View(func(txn *badger.Txn) error {
		next, err := scan(ctx, txn, logPrefix, id, stream, from, full, func(seq uint64, v []byte) error {
			if len(v) < 8 {
				return fmt.Errorf("corrupt chunk %d: %w", seq, errdefs.ErrInvalid)
			}
			out = append(out, runtime.Chunk{
				Stream: stream, Seq: seq,
				Time: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
				Data: v[8:],
			})
			size += len(v) - 8
			return nil
		})
		if err != nil || full() {
			return err
		}
		_, err = scan(ctx, txn, spillPrefix, id, stream, next, full, func(seq uint64, v []byte) error {
			if len(v) != spillValue {
				return fmt.Errorf("corrupt spilled chunk %d: %w", seq, errdefs.ErrInvalid)
			}
			if spill == nil {
				var err error
				if spill, err = s.openSpill(ctx, id); err != nil {
					return err
				}
			}
			data := make([]byte, binary.BigEndian.Uint32(v[16:]))
			if err := spill.readAt(data, int64(binary.BigEndian.Uint64(v[8:]))); err != nil {
				return fmt.Errorf("spilled chunk %d: %w", seq, err)
			}
			out = append(out, runtime.Chunk{
				Stream: stream, Seq: seq,
				Time: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
				Data: data,
			})
			size += len(data)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("task log %s: read: %w", id, err)
	}
	return out, nil
}

// scan walks the keys of one stream of a task in the key space kind from
// sequence number from, handing take each one's number and a copy of its
// value, until the keys run out, full says enough, or take fails. It
// returns the number after the last one taken (from if none).
func scan(ctx context.Context, txn *badger.Txn, kind, id string, stream runtime.Stream, from uint64, full func() bool, take func(seq uint64, v []byte) error) (uint64, error) {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = streamPrefix(kind, id, stream)
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(chunkKey(kind, id, stream, from)); it.Valid() && !full(); it.Next() {
		if err := ctx.Err(); err != nil {
			return from, err
		}
		k := it.Item().Key()
		seq := binary.BigEndian.Uint64(k[len(k)-8:])
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return from, err
		}
		if err := take(seq, v); err != nil {
			return from, err
		}
		from = seq + 1
	}
	return from, nil
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
		for _, kind := range []string{logPrefix, spillPrefix} {
			prefixes = append(prefixes, streamPrefix(kind, id, runtime.Stdout), streamPrefix(kind, id, runtime.Stderr))
		}
		prefixes = append(prefixes, metaKey(id))
	}
	if len(prefixes) == 0 {
		return nil
	}
	s.archiveMu.Lock() // no archive of these is half done
	defer s.archiveMu.Unlock()
	if err := s.db.DropPrefix(prefixes...); err != nil {
		return fmt.Errorf("task logs %v: delete: %w", ids, err)
	}
	for _, id := range ids {
		if err := os.Remove(s.spillPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("task log %s: remove spill file: %w", id, err)
		}
		if s.archive != nil {
			if err := s.archive.Drop(ArchivePin(id)); err != nil {
				return fmt.Errorf("task log %s: %w", id, err)
			}
		}
	}
	return nil
}
