package lsp

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// When the peer is root, gopls runs as the configured uid with a scrubbed
// environment, reads modules from a module cache of its own that it cannot
// write, and still resolves into a dependency.
func TestServerRunsUnprivilegedWithScrubbedEnv(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the peer is not root here: servers run as the peer's own user")
	}
	t.Setenv("CORTEX_TEST_CANARY", "the peer's secret")
	m := newTestManager(t)
	ws := workspace(t)
	s := readyServer(t, m, ws)
	ctx := testContext(t, 2*time.Minute)
	defs, _, err := s.Definition(ctx, Position{File: "multibase.go", Line: 119, Col: 34}) // b58.EncodeAlphabet
	mc := filepath.Join(testCache, "modcache")
	if err != nil || len(defs) != 1 || !strings.HasPrefix(defs[0].File, mc+"/github.com/mr-tron/base58@v1.3.0/") {
		t.Fatalf("definition in a dependency: %+v %v, want it under %s", defs, err, mc)
	}
	pid := m.Servers()[0].PID
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	want := "Uid:\t" + strconv.Itoa(DefaultUID)
	if !bytes.Contains(status, []byte(want)) {
		t.Errorf("gopls runs as:\n%s", status)
	}
	environ, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, v := range map[string]string{"GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local", "GOPROXY": "off",
		"GOMODCACHE": mc, "HOME": filepath.Join(testCache, "home"), "GOPLSCACHE": filepath.Join(testCache, "home", ".cache", "gopls")} {
		if env[k] != v {
			t.Errorf("gopls env %s=%q, want %q", k, env[k], v)
		}
	}
	if _, ok := env["CORTEX_TEST_CANARY"]; ok {
		t.Error("the peer's environment reached gopls")
	}
	// The module cache is root's, read-only to gopls; its home is its own.
	for dir, uid := range map[string]uint32{mc: 0, filepath.Join(testCache, "home"): DefaultUID, filepath.Join(testCache, "home", ".cache", "gopls"): DefaultUID} {
		info, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st := info.Sys().(*syscall.Stat_t); st.Uid != uid {
			t.Errorf("%s is owned by %d, want %d", dir, st.Uid, uid)
		}
	}
	if info, _ := os.Stat(mc); info.Mode().Perm()&0o022 != 0 {
		t.Errorf("module cache mode %v: writable by others", info.Mode().Perm())
	}
}

// A restarted server with the persistent cache is ready fast: the time to
// the first ready definition, cold (empty cache, modules to copy) and
// again after Close with the same cache.
func TestPersistentCacheWarmsRestart(t *testing.T) {
	parent, err := os.MkdirTemp("", "lsp-cold-")
	if err != nil {
		t.Fatal(err)
	}
	defer removeAll(parent)
	_ = os.Chmod(parent, 0o711)
	cache := filepath.Join(parent, "cache")
	ws, p := workspace(t), Position{File: "encoder.go", Line: 59, Col: 14}
	// CORTEX_LSP_CACHE_WS=DIR CORTEX_LSP_CACHE_POS=FILE:LINE:COL measure
	// on another workspace, not copied.
	if dir := os.Getenv("CORTEX_LSP_CACHE_WS"); dir != "" {
		f := strings.Split(os.Getenv("CORTEX_LSP_CACHE_POS"), ":")
		if len(f) != 3 {
			t.Fatal("CORTEX_LSP_CACHE_POS: want FILE:LINE:COL")
		}
		line, _ := strconv.Atoi(f[1])
		col, _ := strconv.Atoi(f[2])
		ws, p = dir, Position{File: f[0], Line: line, Col: col}
	}
	var took []time.Duration
	for range 2 {
		m := newTestManager(t, func(c *Config) { c.CacheDir = cache })
		ctx := testContext(t, 2*time.Minute)
		t0 := time.Now()
		s, err := m.Server(ctx, ws)
		if err != nil {
			t.Fatal(err)
		}
		defs, st, err := s.Definition(ctx, p)
		if err != nil || st.State != StateReady || len(defs) != 1 {
			t.Fatal(defs, st, err)
		}
		took = append(took, time.Since(t0))
		s.Release()
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("first ready definition: cold %v, restarted with the cache %v (%.0f%%)", took[0].Round(time.Millisecond), took[1].Round(time.Millisecond), 100*took[1].Seconds()/took[0].Seconds())
}
