// Command lspbench measures the language-server bridge of issue 17 and
// prints its figures side by side with the baselines, on the same module
// and the same positions:
//
//   - `gopls definition FILE:LINE:COL`, a cold gopls process each time;
//   - a gopls this program starts (`gopls serve`) and queries over its own
//     LSP connection once it has loaded the module: the reference;
//   - mcp-language-server (github.com/isaacphi/mcp-language-server, which
//     runs gopls) over MCP stdio with the go-sdk client;
//   - cortex-peer's `mcp` verb against a one-peer process testnet, over
//     MCP stdio with the same client.
//
// The module is a copy, in a temp dir, of a module from the module cache
// whose dependencies are all in the cache (quic-go by default: go-libp2p
// lacks some of its own). The positions are calls of a function defined
// in another file of the same package, found by parsing the module.
//
// Then, on cortex-peer alone: an edit that writes a type error into a
// file until lsp_diagnostics shows it; several MCP sessions at once and
// the gopls processes they share; the peer's gopls killed with SIGKILL
// and the next ready definition, against the first (cold) one.
//
// make bench-lsp builds what it needs and runs it:
//
//	go run ./testnet/lspbench -bin bin/cortex-peer -mcp-language-server .bench/mcp-language-server
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
	"github.com/cortex-peer/cortex-peer/testnet/quiet"
)

type options struct {
	bin, gopls, mls, module string
	positions, rounds       int
	clients, edits          int
	listTools               bool
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "a built cortex-peer (cortex-peerd beside it); empty builds one into the scratch dir")
	flag.StringVar(&o.gopls, "gopls", "", "the gopls binary (default $(go env GOPATH)/bin/gopls)")
	flag.StringVar(&o.mls, "mcp-language-server", ".bench/mcp-language-server", "the mcp-language-server binary; empty skips it")
	flag.StringVar(&o.module, "module", "github.com/quic-go/quic-go", "the module to copy from the module cache, at the version this repository's go.mod requires (path@version for another)")
	flag.IntVar(&o.positions, "positions", 8, "how many positions")
	flag.IntVar(&o.rounds, "rounds", 3, "how many times each warm query runs at each position")
	flag.IntVar(&o.clients, "clients", 3, "how many MCP sessions at once share the peer's gopls")
	flag.IntVar(&o.edits, "edits", 5, "how many edits to diagnostic")
	flag.BoolVar(&o.listTools, "list-tools", false, "print mcp-language-server's tools and their input schemas, and stop")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lspbench:", err)
		os.Exit(1)
	}
}

// samples are a figure's measurements, in ms unless said.
type samples map[string][]float64

func (s samples) add(m string, v float64) { s[m] = append(s[m], v) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func timed(f func() error) (float64, error) {
	t := time.Now()
	err := f()
	return ms(time.Since(t)), err
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// settle waits for the machine to be quiet before a measured phase.
func settle() { settleWithin(10 * time.Second) }

// settleWithin waits up to settleMax: after a cold start, gopls type-checks
// the whole module in the background for tens of seconds, and a warm
// figure is measured on a server that has finished.
func settleWithin(settleMax time.Duration) {
	if !quiet.Wait(settleMax) {
		fmt.Fprintf(os.Stderr, "  (the machine did not settle within %s)\n", settleMax)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// Figures, by tool.
const (
	tCLI  = "gopls CLI"
	tWarm = "warm gopls (LSP)"
	tMLS  = "mcp-language-server"
	tCX   = "cortex-peer"

	mDef       = "definition"
	mDefSymbol = "definition by symbol"
	// mDefSymbolFirst is cortex-peer's first ask of each name at a root:
	// the rounds of mDefSymbol find the name already resolved.
	mDefSymbolFirst = "definition by symbol, first ask"
	mHover          = "hover"
	mCold           = "cold"
	mEdit           = "edit to diagnostic"
	mRestart        = "restart to ready"
	mShared         = "shared definition"
	mPing           = "mcp ping"
	mAPI            = "list_tasks"
)

func run(ctx context.Context, o options) error {
	if o.positions < 1 || o.rounds < 1 || o.clients < 1 || o.edits < 1 {
		return errors.New("-positions, -rounds, -clients and -edits: want at least 1")
	}
	if o.gopls == "" {
		gopath, err := exec.Command("go", "env", "GOPATH").Output()
		if err != nil {
			return fmt.Errorf("go env GOPATH: %w", err)
		}
		o.gopls = filepath.Join(strings.TrimSpace(string(gopath)), "bin", "gopls")
	}
	if _, err := os.Stat(o.gopls); err != nil {
		return fmt.Errorf("gopls: %w (make deps installs it)", err)
	}
	if o.mls != "" {
		abs, err := filepath.Abs(o.mls)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("mcp-language-server: %w (make bench-lsp builds it)", err)
		}
		o.mls = abs
	}
	notes := []string{"load average at the start: " + benchkit.LoadAvg()}

	scratch, err := os.MkdirTemp("", "lspbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	mod, modVersion, files, err := copyModule(o.module, filepath.Join(scratch, "module"))
	if err != nil {
		return err
	}
	ver, _ := exec.Command(o.gopls, "version").Output()
	goplsVersion, _, _ := strings.Cut(strings.TrimSpace(string(ver)), "\n")
	notes = append(notes, fmt.Sprintf("module %s (%d Go files, copied from the module cache into %s); %s", modVersion, files, mod, goplsVersion))

	if o.listTools {
		m := &mlsDriver{bin: o.mls, gopls: o.gopls, dir: mod}
		if err := m.start(ctx); err != nil {
			return err
		}
		defer m.stop()
		tools, err := m.srv.Tools(ctx)
		if err != nil {
			return err
		}
		for _, t := range tools {
			schema, _ := json.Marshal(t.InputSchema)
			fmt.Println(t.Name + " " + string(schema))
		}
		return nil
	}

	pos, err := findPositions(mod, o.positions)
	if err != nil {
		return err
	}
	for _, p := range pos {
		logf("position %s: %s, defined in %s", p, p.symbol, p.def)
	}

	notes = append(notes, "every tool asks at each position once before its timed rounds (the files open on its gopls); the reference's gopls published no diagnostics for 2 s before its rounds, and for both the machine was quiet (under 10% CPU busy for 250 ms) before them")
	figs := map[string]samples{tCLI: {}, tWarm: {}, tMLS: {}, tCX: {}}
	// want is each position's definition by gopls's CLI: what every tool
	// must answer.
	want := map[position]string{}
	agree := map[string]int{}

	// 1. gopls definition, a cold process each time.
	settle()
	for _, p := range pos {
		var loc string
		t, err := timed(func() (err error) { loc, err = cliDefinition(ctx, o.gopls, mod, p); return err })
		if err != nil {
			return err
		}
		want[p] = loc
		figs[tCLI].add(mDef, t)
		logf("%s: definition %s -> %s in %.0f ms", tCLI, p, loc, t)
	}

	// 2. The reference: a warm gopls over its own connection.
	settle()
	if err := measureWarmGopls(ctx, o, mod, pos, want, figs[tWarm], agree); err != nil {
		return fmt.Errorf("%s: %w", tWarm, err)
	}

	// 3. mcp-language-server.
	if o.mls != "" {
		settle()
		m := &mlsDriver{bin: o.mls, gopls: o.gopls, dir: mod}
		note, err := m.measure(ctx, pos, o.rounds, figs[tMLS], agree)
		m.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", tMLS, err)
		}
		notes = append(notes, note)
	}

	// 4. cortex-peer.
	settle()
	bin := o.bin
	if bin == "" {
		if bin, err = testnet.Build(scratch); err != nil {
			return err
		}
	}
	pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: 1, Dir: filepath.Join(scratch, "peers")})
	if err != nil {
		return err
	}
	defer pn.Stop()
	cx := &cortex{bin: bin, data: pn.Peers[0].DataDir, peerPid: pn.Peers[0].Pid(), ws: mod}
	cxNotes, err := cx.measure(ctx, o, pos, want, figs[tCX], agree)
	cx.stop()
	if err != nil {
		return fmt.Errorf("%s: %w", tCX, err)
	}
	notes = append(notes, cxNotes...)
	notes = append(notes, "load average at the end: "+benchkit.LoadAvg())
	printTable(o, len(pos), pos[0].def, figs, agree, cx.shared, notes)
	return nil
}

// copyModule copies a module from the module cache into dst, writable,
// and says its path@version and how many Go files it has.
func copyModule(module, dst string) (dir, modVersion string, files int, err error) {
	args := []string{"list", "-m", "-json", module}
	if strings.Contains(module, "@") {
		args = []string{"mod", "download", "-json", module}
	}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		return "", "", 0, fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	var m struct{ Path, Version, Dir string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		return "", "", 0, fmt.Errorf("module %s: not in the module cache (go mod download it): %v", module, err)
	}
	if m.Path == "" {
		m.Path, _, _ = strings.Cut(module, "@")
	}
	if err := os.CopyFS(dst, os.DirFS(m.Dir)); err != nil {
		return "", "", 0, fmt.Errorf("copy %s: %w", m.Dir, err)
	}
	err = filepath.WalkDir(dst, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".go") {
			files++
		}
		return err
	})
	return dst, m.Path + "@" + m.Version, files, err
}

// cliLocation is a location as gopls's CLI prints it: FILE:LINE:COL and
// the end of the range, -COL or -LINE:COL.
var cliLocation = regexp.MustCompile(`^(.+):(\d+):(\d+)(?:-\d+(?::\d+)?)?$`)

// cliDefinition runs `gopls definition` at p and returns the location it
// prints, as file:line:col relative to dir.
func cliDefinition(ctx context.Context, gopls, dir string, p position) (string, error) {
	cmd := exec.CommandContext(ctx, gopls, "definition", filepath.Join(dir, p.file)+fmt.Sprintf(":%d:%d", p.line, p.col))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gopls definition %s: %w: %s", p, err, benchkit.Clip(string(out), 300))
	}
	// /dir/file.go:12:6-10: defined here as …
	loc, _, ok := strings.Cut(string(out), ": defined here")
	if !ok {
		return "", fmt.Errorf("gopls definition %s: unexpected output %q", p, benchkit.Clip(string(out), 300))
	}
	m := cliLocation.FindStringSubmatch(loc)
	if m == nil {
		return "", fmt.Errorf("gopls definition %s: unexpected location %q", p, loc)
	}
	rel, err := filepath.Rel(dir, m[1])
	if err != nil {
		return "", err
	}
	return rel + ":" + m[2] + ":" + m[3], nil
}

func measureWarmGopls(ctx context.Context, o options, mod string, pos []position, want map[position]string, s samples, agree map[string]int) error {
	var c *goplsConn
	cold, err := timed(func() (err error) {
		if c, err = startGopls(ctx, o.gopls, mod); err != nil {
			return err
		}
		// gopls answers once it has loaded the workspace.
		_, err = c.definition(ctx, pos[0])
		return err
	})
	if err != nil {
		return err
	}
	defer c.close()
	s.add(mCold, cold)
	// As an editor does: the files open, each position asked once before
	// the rounds that are timed (gopls keeps the packages of open files
	// type-checked; others it checks again on each query).
	for _, p := range pos {
		if err := c.open(p.file); err != nil {
			return err
		}
	}
	for _, p := range pos {
		if _, err := c.definition(ctx, p); err != nil {
			return err
		}
		if _, err := c.hover(ctx, p); err != nil {
			return err
		}
	}
	qctx, cancel := context.WithTimeout(ctx, readyTimeout)
	c.diagnosticsQuiet(qctx, diagnosticsQuietFor)
	cancel()
	settle()
	for range o.rounds {
		for _, p := range pos {
			var loc string
			t, err := timed(func() (err error) { loc, err = c.definition(ctx, p); return err })
			if err != nil {
				return err
			}
			s.add(mDef, t)
			if loc == want[p] {
				agree[tWarm]++
			}
			if t, err = timed(func() error { _, err := c.hover(ctx, p); return err }); err != nil {
				return err
			}
			s.add(mHover, t)
		}
	}
	logf("%s: start to first answer %.0f ms, definition %.2f ms, hover %.2f ms", tWarm, cold, median(s[mDef]), median(s[mHover]))
	return nil
}
