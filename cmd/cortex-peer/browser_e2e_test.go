package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestCLIBrowser drives a session with the binary: opened on one peer,
// driven from the other.
func TestCLIBrowser(t *testing.T) {
	if _, err := os.Stat("/usr/lib/chromium/chromium"); err != nil {
		t.Fatalf("Chromium is missing (%v): run `make deps`, which installs it", err)
	}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<html><head><title>Counter</title></head><body><p id="n">0</p>
<button onclick="document.getElementById('n').textContent++">Add one</button></body></html>`)
	}))
	defer web.Close()
	bin := testnet.BuildBinary(t)
	dir := t.TempDir()
	startTestnet(t, bin, dir, "2")
	p1, p2 := filepath.Join(dir, "peer1"), filepath.Join(dir, "peer2")

	r := run(t, bin, "browser", "open", "--data", p2)
	s := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.Contains(s, "@") {
		t.Fatalf("browser open: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, bin, "browser", "navigate", "--data", p1, s, web.URL); r.code != 0 || !strings.Contains(r.stdout, "Counter") {
		t.Fatalf("browser navigate: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	r = run(t, bin, "browser", "snapshot", "--data", p1, s)
	m := regexp.MustCompile(`button "Add one" \[ref=(e\d+)\]`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("browser snapshot: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, bin, "browser", "click", "--data", p1, s, m[1]); r.code != 0 {
		t.Fatalf("browser click: exit %d %s", r.code, r.stderr)
	}
	if r = run(t, bin, "browser", "eval", "--data", p2, s, `document.getElementById("n").textContent`); r.code != 0 || strings.TrimSpace(r.stdout) != `"1"` {
		t.Fatalf("browser eval: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	shot := filepath.Join(t.TempDir(), "shot.png")
	if r = run(t, bin, "browser", "screenshot", "--data", p1, s, "-o", shot); r.code != 0 {
		t.Fatalf("browser screenshot: exit %d %s", r.code, r.stderr)
	}
	if b, err := os.ReadFile(shot); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("screenshot -o: %v, not a PNG", err)
	}
	r = run(t, bin, "browser", "state", "save", "--json", "--data", p1, s)
	var st map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st["cid"] == "" {
		t.Fatalf("browser state save --json: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	r = run(t, bin, "browser", "ls", "--json", "--data", p2)
	if r.code != 0 || !strings.Contains(r.stdout, s) {
		t.Fatalf("browser ls: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r = run(t, bin, "browser", "click", "--data", p1, s); r.code != 2 {
		t.Fatalf("click with no ref: exit %d, want 2 (usage) %s", r.code, r.stderr)
	}
	if r = run(t, bin, "browser", "close", "--data", p1, s); r.code != 0 {
		t.Fatalf("browser close: exit %d %s", r.code, r.stderr)
	}
	if r = run(t, bin, "browser", "eval", "--data", p1, s, "1"); r.code == 0 || !strings.Contains(r.stderr, "not open") {
		t.Fatalf("eval on a closed session: exit %d %s", r.code, r.stderr)
	}
}
