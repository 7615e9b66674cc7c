package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Kinds of operation besides tasks, as the table names them.
const (
	opGet     = "get of a file put on another peer"
	opWsGet   = "ws get of a tree added on another peer"
	opMerge   = "ws merge of a tree fetched from another peer"
	opBrowser = "browser session opened on another peer"
)

// opStat counts one kind of operation.
type opStat struct {
	ok, gaveUp int
	// failed attempts (each retried), and those with no kill or freeze
	// anywhere in the mesh near them: the ones to read the logs for.
	failed, failedCalm int
	bytes              int64
	lastErr            string
}

// attempt runs f until it succeeds or retryFor has passed, counting each
// failure, and says whether it succeeded. Failures during a kill or a
// freeze are what a mesh under chaos owes a retry; f must be safe to run
// again.
func (s *soak) attempt(kind string, f func(ctx context.Context) error) bool {
	deadline := time.Now().Add(retryFor)
	for {
		t0 := time.Now()
		err := f(s.ctx)
		s.mu.Lock()
		st := s.ops[kind]
		if st == nil {
			st = &opStat{}
			s.ops[kind] = st
		}
		if err == nil {
			st.ok++
			s.mu.Unlock()
			return true
		}
		st.failed++
		calm := !s.chaos.near(t0, time.Now())
		if calm {
			st.failedCalm++
		}
		st.lastErr = clip(err.Error(), 300)
		giveUp := time.Now().After(deadline) || s.ctx.Err() != nil
		if giveUp {
			st.gaveUp++
		}
		s.mu.Unlock()
		s.log.Warn("attempt failed", "op", kind, "calm", calm, "giving_up", giveUp, "err", clip(err.Error(), 300))
		if giveUp {
			return false
		}
		select {
		case <-time.After(retryPause):
		case <-s.ctx.Done():
		}
	}
}

func (s *soak) countBytes(kind string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.ops[kind]; st != nil {
		st.bytes += n
	}
}

// transferWorker moves data between peers until load ends: a file put on
// one and got on another, a tree added on one and fetched by another, and
// a three-way merge of two trees added on one into a directory fetched
// and edited on another.
func (s *soak) transferWorker(load context.Context) {
	for i := 0; load.Err() == nil && s.ctx.Err() == nil; i++ {
		var err error
		switch i % 3 {
		case 0:
			err = s.getFile(i)
		case 1:
			err = s.getTree(i)
		case 2:
			err = s.mergeTree(i)
		}
		if err != nil {
			s.finding("transfer %d: %v", i, err)
		}
		select {
		case <-load.Done():
		case <-time.After(transferPause):
		}
	}
}

func (s *soak) putCID(ctx context.Context, verb string, p *peer, path string) (string, error) {
	args := []string{"put", "--json", "--data", p.dir, path}
	if verb == "ws add" {
		args = []string{"ws", "add", "--json", "--data", p.dir, path}
	}
	out, err := s.ok(ctx, cliTimeout, args...)
	if err != nil {
		return "", err
	}
	var v struct {
		CID string `json:"cid"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return "", fmt.Errorf("%s --json: %w: %s", verb, err, clip(string(out), 200))
	}
	if v.CID == "" {
		return "", fmt.Errorf("%s --json printed no cid: %s", verb, clip(string(out), 200))
	}
	return v.CID, nil
}

func (s *soak) getFile(i int) error {
	src, dst := s.pick(), s.pick()
	for dst == src {
		dst = s.pick(src)
	}
	size := (1 + i%4) << 20
	data := randomBytes(size, int64(i))
	path := filepath.Join(s.work, fmt.Sprintf("file-%d.bin", i))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	var c string
	if !s.attempt(opGet, func(ctx context.Context) (err error) { c, err = s.putCID(ctx, "put", src, path); return err }) {
		return nil
	}
	dest := filepath.Join(s.work, fmt.Sprintf("file-%d.got", i))
	if !s.attempt(opGet, func(ctx context.Context) error {
		if _, err := s.ok(ctx, cliTimeout, "get", "--force", "--data", dst.dir, c, "-o", dest); err != nil {
			return err
		}
		got, err := os.ReadFile(dest)
		if err != nil || !bytes.Equal(got, data) {
			s.finding("get %s on %s (put on %s): %d bytes that differ from the %d put (%v)", c, dst.name, src.name, len(got), len(data), err)
		}
		return nil
	}) {
		return nil
	}
	s.countBytes(opGet, int64(size))
	_ = os.Remove(dest)
	return os.Remove(path)
}

// writeTree writes a small source-like tree whose content depends on seed.
func writeTree(dir string, seed int64, files int) (int64, error) {
	var total int64
	for f := range files {
		b := randomBytes(4<<10+int(seed*7+int64(f)*997)%(60<<10), seed*100+int64(f))
		p := filepath.Join(dir, fmt.Sprintf("d%d", f%4), fmt.Sprintf("f%02d.dat", f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return 0, err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return 0, err
		}
		total += int64(len(b))
	}
	return total, nil
}

func (s *soak) getTree(i int) error {
	src, dst := s.pick(), s.pick()
	for dst == src {
		dst = s.pick(src)
	}
	tree := filepath.Join(s.work, fmt.Sprintf("tree-%d", i))
	n, err := writeTree(tree, int64(i), 24)
	if err != nil {
		return err
	}
	var c string
	if !s.attempt(opWsGet, func(ctx context.Context) (err error) { c, err = s.putCID(ctx, "ws add", src, tree); return err }) {
		return nil
	}
	dest := filepath.Join(s.work, fmt.Sprintf("tree-%d.got", i))
	if !s.attempt(opWsGet, func(ctx context.Context) error {
		_, err := s.ok(ctx, cliTimeout, "ws", "get", "--data", dst.dir, c, dest)
		return err
	}) {
		return nil
	}
	if diff := diffTrees(tree, dest); diff != "" {
		s.finding("ws get %s on %s (added on %s): %s", c, dst.name, src.name, diff)
	}
	s.countBytes(opWsGet, n)
	_ = os.RemoveAll(dest)
	return os.RemoveAll(tree)
}

// mergeTree: BASE and THEIRS added on one peer; another fetches BASE,
// edits a file THEIRS leaves alone, and merges BASE..THEIRS into it. The
// result must hold THEIRS's changes and the local edit, and no conflict.
func (s *soak) mergeTree(i int) error {
	src, dst := s.pick(), s.pick()
	for dst == src {
		dst = s.pick(src)
	}
	base := filepath.Join(s.work, fmt.Sprintf("merge-%d-base", i))
	theirs := filepath.Join(s.work, fmt.Sprintf("merge-%d-theirs", i))
	mine := filepath.Join(s.work, fmt.Sprintf("merge-%d-mine", i))
	if _, err := writeTree(base, int64(i), 12); err != nil {
		return err
	}
	if _, err := writeTree(theirs, int64(i), 12); err != nil {
		return err
	}
	// THEIRS changes one file, adds one and removes one; the local side
	// edits another.
	changed := randomBytes(20<<10, int64(i)+77)
	for _, e := range []error{
		os.WriteFile(filepath.Join(theirs, "d1", "f01.dat"), changed, 0o644),
		os.WriteFile(filepath.Join(theirs, "added.txt"), []byte("added by theirs\n"), 0o644),
		os.Remove(filepath.Join(theirs, "d2", "f02.dat")),
	} {
		if e != nil {
			return e
		}
	}
	var baseCID, theirsCID string
	if !s.attempt(opMerge, func(ctx context.Context) (err error) {
		if baseCID, err = s.putCID(ctx, "ws add", src, base); err != nil {
			return err
		}
		theirsCID, err = s.putCID(ctx, "ws add", src, theirs)
		return err
	}) {
		return nil
	}
	if !s.attempt(opMerge, func(ctx context.Context) error {
		_, err := s.ok(ctx, cliTimeout, "ws", "get", "--data", dst.dir, baseCID, mine)
		return err
	}) {
		return nil
	}
	local := []byte("edited locally\n")
	if err := os.WriteFile(filepath.Join(mine, "d3", "f03.dat"), local, 0o644); err != nil {
		return err
	}
	if !s.attempt(opMerge, func(ctx context.Context) error {
		_, err := s.ok(ctx, cliTimeout, "ws", "merge", "--data", dst.dir, baseCID, theirsCID, mine)
		return err
	}) {
		return nil
	}
	// What the merge must have made: THEIRS with the local edit.
	if err := os.WriteFile(filepath.Join(theirs, "d3", "f03.dat"), local, 0o644); err != nil {
		return err
	}
	if diff := diffTrees(theirs, mine); diff != "" {
		s.finding("ws merge on %s of trees added on %s: %s", dst.name, src.name, diff)
	}
	for _, d := range []string{base, theirs, mine} {
		_ = os.RemoveAll(d)
	}
	return nil
}

// diffTrees says how two trees of regular files differ, "" if they do not.
func diffTrees(want, got string) string {
	read := func(root string) map[string][]byte {
		files := map[string][]byte{}
		_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() {
				b, _ := os.ReadFile(p)
				files[strings.TrimPrefix(p, root+"/")] = b
			}
			return nil
		})
		return files
	}
	w, g := read(want), read(got)
	var diffs []string
	for name, b := range w {
		if gb, ok := g[name]; !ok {
			diffs = append(diffs, name+" missing")
		} else if !bytes.Equal(b, gb) {
			diffs = append(diffs, name+" differs")
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			diffs = append(diffs, name+" extra")
		}
	}
	return strings.Join(diffs, ", ")
}

func randomBytes(n int, seed int64) []byte {
	r := rand.New(rand.NewPCG(uint64(seed), 0x50a4))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// browserPage is what the browser sessions load: Chromium loads only
// http(s), so the soak serves it on loopback.
const browserPage = `<!doctype html><title>soak page</title><h1>soak</h1><form><input name=q aria-label="query"><button>go</button></form>`

// serveBrowserPage serves browserPage until ctx ends; the returned wait
// returns once the server has stopped.
func serveBrowserPage(ctx context.Context) (url string, wait func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("browser page: %w", err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(browserPage)) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		_ = srv.Close()
	}()
	return "http://" + ln.Addr().String() + "/", func() { <-stopped; <-done }, nil
}

// browserWorker opens a Chromium session on one peer from another, loads
// the page, snapshots it and closes it, now and then until load ends.
func (s *soak) browserWorker(load context.Context, url string) {
	for load.Err() == nil && s.ctx.Err() == nil {
		host := s.pick()
		from := s.pick(host)
		var session string
		s.attempt(opBrowser, func(ctx context.Context) error {
			if session != "" {
				// A session whose host was killed is gone; a new one is.
				_, _ = s.cli(ctx, cliTimeout, "browser", "close", "--data", from.dir, session)
			}
			out, err := s.ok(ctx, cliTimeout, "browser", "open", "--data", from.dir, "--peer", host.id)
			if err != nil {
				return err
			}
			session = strings.TrimSpace(string(out))
			if _, err := s.ok(ctx, cliTimeout, "browser", "navigate", "--data", from.dir, session, url); err != nil {
				return err
			}
			snap, err := s.ok(ctx, cliTimeout, "browser", "snapshot", "--data", from.dir, session)
			if err != nil {
				return err
			}
			if !bytes.Contains(snap, []byte("soak")) {
				return fmt.Errorf("snapshot of the page lacks its heading: %s", clip(string(snap), 200))
			}
			if _, err := s.ok(ctx, cliTimeout, "browser", "close", "--data", from.dir, session); err != nil {
				return err
			}
			session = ""
			return nil
		})
		select {
		case <-load.Done():
		case <-time.After(browserPause):
		}
	}
}
