package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

func TestStorePersists(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Open(DefaultConfig(dir), log)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Put(fmt.Appendf(nil, "a/%d", i), fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put([]byte("b/0"), []byte("other")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get([]byte("missing")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal("second close:", err)
	}

	s, err = Open(DefaultConfig(dir), log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []string
	if err := s.Scan([]byte("a/"), func(k, v []byte) error {
		got = append(got, string(k)+"="+string(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[a/0=v0 a/1=v1 a/2=v2]" {
		t.Fatalf("scan after reopen: %v", got)
	}
	if err := s.Delete([]byte("a/1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get([]byte("a/1")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
}

func TestStoreConfigValidate(t *testing.T) {
	c := DefaultConfig("")
	if err := c.Validate(); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("empty dir: %v", err)
	}
}
