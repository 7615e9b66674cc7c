package tasklog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/dag"
	"github.com/cortex-peer/cortex-peer/node/store"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/runtime"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	st, err := store.Open(store.DefaultConfig(t.TempDir()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(st.DB(), t.TempDir(), NewDAGArchive(dag.NewStore(st.DB()), new(sync.RWMutex)), nil)
	t.Cleanup(func() { s.Close() })
	return s
}

func chunk(s runtime.Stream, seq uint64, data string) runtime.Chunk {
	return runtime.Chunk{Stream: s, Seq: seq, Time: time.Unix(1700000000, int64(seq)), Data: []byte(data)}
}

func TestWriteReadRanges(t *testing.T) {
	s := openStore(t)
	w, err := s.Writer("task-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 200; i++ {
		if err := w.Append(chunk(runtime.Stdout, i, fmt.Sprintf("out %d\n", i))); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			if err := w.Append(chunk(runtime.Stderr, i/10, fmt.Sprintf("err %d\n", i/10))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Chunks already flushed are readable while the task still writes.
	got, err := s.Read(context.Background(), "task-1", runtime.Stdout, 1, 1000, 1<<20)
	if err != nil || len(got) < flushEvery {
		t.Fatalf("read while writing: %d chunks, %v", len(got), err)
	}
	st, err := w.Close()
	if err != nil || st.LastStdout != 200 || st.LastStderr != 20 || st.DroppedBytes != 0 {
		t.Fatalf("close: %+v %v", st, err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	got, err = s.Read(context.Background(), "task-1", runtime.Stdout, 150, 10, 1<<20)
	if err != nil || len(got) != 10 || got[0].Seq != 150 || got[9].Seq != 159 || string(got[0].Data) != "out 150\n" {
		t.Fatalf("range: %v %v", got, err)
	}
	if !got[0].Time.Equal(time.Unix(1700000000, 150)) {
		t.Fatalf("time %v", got[0].Time)
	}
	got, err = s.Read(context.Background(), "task-1", runtime.Stderr, 1, 100, 1<<20)
	if err != nil || len(got) != 20 || got[19].Seq != 20 {
		t.Fatalf("stderr: %d %v", len(got), err)
	}
	// maxBytes bounds the answer but always returns at least one chunk.
	got, _ = s.Read(context.Background(), "task-1", runtime.Stdout, 1, 1000, 1)
	if len(got) != 1 {
		t.Fatalf("maxBytes 1: %d chunks", len(got))
	}
	rec, err := s.Stats("task-1")
	if err != nil || rec != st {
		t.Fatalf("stats %+v %v, want %+v", rec, err, st)
	}
}

// Past the cap, output is spilled, not dropped: every chunk reads back in
// order, from the start or from a chunk in the spill, and Delete removes it.
func TestPastTheCapIsSpilledNotDropped(t *testing.T) {
	s := openStore(t)
	w, _ := s.Writer("capped", 10)
	data := []string{"aaaa", "bbbb", "cccc", "d", "e"}
	for i, d := range data {
		if err := w.Append(chunk(runtime.Stdout, uint64(i+1), d)); err != nil {
			t.Fatal(err)
		}
	}
	_ = w.Append(chunk(runtime.Stderr, 1, "err"))
	// Spilled chunks are readable before the task ends.
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, "capped", runtime.Stdout, 4); got != "de" {
		t.Fatalf("while writing, from 4: %q", got)
	}
	st, err := w.Close()
	if err != nil || st.StoredBytes != 8 || st.SpilledBytes != 9 || st.DroppedBytes != 0 || st.LastStdout != 5 || st.LastStderr != 1 {
		t.Fatalf("stats %+v %v", st, err)
	}
	if rec, err := s.Stats("capped"); err != nil || rec != st {
		t.Fatalf("recorded stats %+v %v, want %+v", rec, err, st)
	}
	// Closed, the spilled output becomes a pinned DAG (in the background:
	// the task's result does not wait for it), and the file goes; reads
	// meanwhile find one or the other.
	if got := readAll(t, s, "capped", runtime.Stdout, 2); got != "bbbbccccde" {
		t.Fatalf("while archiving, from 2: %q", got)
	}
	s.archiving.Wait()
	dags := s.archive.(*DAGArchive).dags
	if _, root, _ := s.meta("capped"); !root.Defined() {
		t.Fatal("no archived root in the stats record")
	} else if pins, _ := dags.Pins(); pins[ArchivePin("capped")] != root {
		t.Fatalf("pins %v: the archive is not pinned", pins)
	}
	if _, err := os.Stat(s.spillPath("capped")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("spill file after archiving: %v", err)
	}
	if got := readAll(t, s, "capped", runtime.Stdout, 1); got != "aaaabbbbccccde" {
		t.Fatalf("from 1: %q", got)
	}
	if got := readAll(t, s, "capped", runtime.Stdout, 3); got != "ccccde" {
		t.Fatalf("from 3: %q", got)
	}
	if got := readAll(t, s, "capped", runtime.Stderr, 1); got != "err" {
		t.Fatalf("stderr: %q", got)
	}
	if err := s.Delete("capped"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.spillPath("capped")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("spill file after delete: %v", err)
	}
	if got := readAll(t, s, "capped", runtime.Stdout, 1); got != "" {
		t.Fatalf("after delete: %q", got)
	}
	if pins, _ := dags.Pins(); len(pins) != 0 {
		t.Fatalf("pins after delete: %v", pins)
	}
}

// A chunk that cannot be kept (here the spill dir is a file) is counted as
// dropped, and so is everything after it: what is kept has no hole.
func TestUnkeptChunksAreCountedAsDropped(t *testing.T) {
	st, err := store.Open(store.DefaultConfig(t.TempDir()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := New(st.DB(), blocked, nil, nil)
	w, _ := s.Writer("full", 4)
	_ = w.Append(chunk(runtime.Stdout, 1, "aaaa"))
	if err := w.Append(chunk(runtime.Stdout, 2, "bb")); err == nil {
		t.Fatal("spill into a file: no error")
	}
	_ = w.Append(chunk(runtime.Stdout, 3, "c"))
	stats, _ := w.Close()
	if stats.StoredBytes != 4 || stats.DroppedBytes != 3 || stats.LastStdout != 1 {
		t.Fatalf("stats %+v", stats)
	}
}

func readAll(t *testing.T, s *Store, id string, stream runtime.Stream, from uint64) string {
	t.Helper()
	var all bytes.Buffer
	err := s.Each(context.Background(), id, stream, from, func(c runtime.Chunk) error {
		all.Write(c.Data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all.String()
}

func TestDeleteLeavesOtherTasks(t *testing.T) {
	s := openStore(t)
	for _, id := range []string{"abc", "abcd"} {
		w, _ := s.Writer(id, 1<<10)
		_ = w.Append(chunk(runtime.Stdout, 1, id))
		if _, err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete("abc"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stats("abc"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted stats: %v", err)
	}
	got, _ := s.Read(context.Background(), "abcd", runtime.Stdout, 1, 10, 1<<10)
	if len(got) != 1 {
		t.Fatalf("other task lost its log: %v", got)
	}
	if _, err := s.Stats("abcd"); err != nil {
		t.Fatal(err)
	}
}

func TestBadInput(t *testing.T) {
	s := openStore(t)
	for _, id := range []string{"", "a\x00b", string(make([]byte, 200))} {
		if _, err := s.Writer(id, 1); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Writer(%q): %v", id, err)
		}
	}
	if _, err := s.Read(context.Background(), "x", 7, 1, 1, 1); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("bad stream: %v", err)
	}
	w, _ := s.Writer("closed", 10)
	w.Close()
	if err := w.Append(chunk(runtime.Stdout, 1, "x")); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("append after close: %v", err)
	}
}

// Each reads past one batch, whether the batch ends by count or by bytes.
func TestEachReadsEveryBatch(t *testing.T) {
	s := openStore(t)
	w, err := s.Writer("task-each", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	big := string(bytes.Repeat([]byte("x"), 256<<10))
	const n = 3*eachBatch + 7
	for i := uint64(1); i <= n; i++ {
		data := "line\n"
		if i <= 40 { // 10 MiB: more than one batch of bytes
			data = big
		}
		if err := w.Append(chunk(runtime.Stdout, i, data)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	next := uint64(5)
	err = s.Each(context.Background(), "task-each", runtime.Stdout, 5, func(c runtime.Chunk) error {
		if c.Seq != next {
			return fmt.Errorf("chunk %d, want %d", c.Seq, next)
		}
		next++
		return nil
	})
	if err != nil || next != n+1 {
		t.Fatalf("read up to %d of %d: %v", next-1, n, err)
	}
	stop := errors.New("stop")
	if err := s.Each(context.Background(), "task-each", runtime.Stdout, 1, func(runtime.Chunk) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("fn's error: %v", err)
	}
}

// A chunk the room check refuses (the store's reserve) is not written, nor
// is anything after it; the error says why, classified as resource
// exhausted, and what was kept before it stays readable.
func TestRoomRefusalIsResourceExhausted(t *testing.T) {
	st, err := store.Open(store.DefaultConfig(t.TempDir()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var asked []int64
	full := false
	s := New(st.DB(), t.TempDir(), nil, func(need int64) error {
		asked = append(asked, need)
		if full {
			return fmt.Errorf("no space left on the device of /x: %w", errdefs.ErrResourceExhausted)
		}
		return nil
	})
	w, _ := s.Writer("room", 4)
	_ = w.Append(chunk(runtime.Stdout, 1, "aaaa"))
	_ = w.Append(chunk(runtime.Stdout, 2, "bb")) // spilled
	full = true
	err = w.Append(chunk(runtime.Stdout, 3, "c"))
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.HasPrefix(err.Error(), "no space left on") {
		t.Fatalf("append past the room: %v", err)
	}
	_ = w.Append(chunk(runtime.Stdout, 4, "dd"))
	stats, cerr := w.Close()
	if !errors.Is(cerr, errdefs.ErrResourceExhausted) || stats.StoredBytes != 4 || stats.SpilledBytes != 2 || stats.DroppedBytes != 3 || stats.LastStdout != 2 {
		t.Fatalf("close: %+v %v", stats, cerr)
	}
	// What is not yet on disk is counted in what is asked for.
	if len(asked) != 3 || asked[0] != 4 || asked[1] != 6 || asked[2] != 7 {
		t.Fatalf("room asked for %v, want [4 6 7]", asked)
	}
	if got := readAll(t, s, "room", runtime.Stdout, 1); got != "aaaabb" {
		t.Fatalf("kept %q", got)
	}
}
