package lsp

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// testCache is the bridge's cache shared by the tests (warm Go build cache
// and gopls cache, prepared module cache), under a dir the servers' uid
// can reach.
var testCache string

// Every goroutine of a server, its connection and its reaper ends with
// Manager.Close.
func TestMain(m *testing.M) {
	parent, err := os.MkdirTemp("", "lsp-test-")
	if err != nil {
		panic(err)
	}
	if err := os.Chmod(parent, 0o711); err != nil {
		panic(err)
	}
	testCache = filepath.Join(parent, "cache")
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { removeAll(parent) }))
}

// removeAll removes dir, read-only module dirs too.
func removeAll(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	_ = os.RemoveAll(dir)
}
