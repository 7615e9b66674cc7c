// Command browserbench drives the browser scenario of issue 16 through
// two MCP servers over stdio, the same way with the go-sdk client, and
// prints the medians side by side: the baseline @playwright/mcp (one
// server process and one Chromium per run) and cortex-peer's `mcp` verb
// against a running peer, whose Chromium outlives the runs.
//
// The scenario, on a page this program serves (a login form and a table
// of 300 rows with a button each), each step timed: cold start and
// navigate, snapshot, type user + type password + click "Log in", five
// clicks on row buttons by the snapshot's refs, five evaluates. Then, on
// the peer alone: the open of a session when Chromium already runs, and
// the memory of five idle sessions.
//
// make bench-browser installs the baseline and runs it:
//
//	go run ./testnet/browserbench -bin bin/cortex-peer -playwright .bench/playwright-mcp/node_modules/@playwright/mcp/cli.js
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cortex-peer/cortex-peer/testnet"
	"github.com/cortex-peer/cortex-peer/testnet/benchkit"
)

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 5, "how many times the whole scenario runs, for each tool")
	flag.StringVar(&o.playwright, "playwright", ".bench/playwright-mcp/node_modules/@playwright/mcp/cli.js", "path to @playwright/mcp's cli.js; empty skips the baseline")
	flag.StringVar(&o.chromium, "chromium", "/usr/bin/chromium", "the Chromium playwright-mcp runs (--executable-path)")
	flag.StringVar(&o.bin, "bin", "", "a built cortex-peer (cortex-peerd beside it); empty builds one into the scratch dir")
	flag.BoolVar(&o.noCortex, "no-cortex", false, "skip cortex-peer (measure the baseline alone)")
	flag.StringVar(&o.dump, "dump", "", "write each tool's first snapshot into this directory, to compare them")
	flag.BoolVar(&o.listTools, "list-tools", false, "print playwright-mcp's tools and their input schemas, and stop")
	flag.Parse()
	// Ctrl-C ends the run through its error path, which stops what it
	// started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "browserbench:", err)
		os.Exit(1)
	}
}

type options struct {
	runs                      int
	playwright, chromium, bin string
	dump                      string
	noCortex, listTools       bool
}

// Figures of the scenario, per tool: each a list of samples, medians
// printed.
const (
	mCold      = "cold"
	mSnapMs    = "snapshot ms"
	mSnapBytes = "snapshot bytes"
	mLogin     = "login"
	mClick     = "click"
	mClickText = "click bytes"
	mEval      = "evaluate"
	mButtons   = "buttons"
	mOpen      = "open"
	// mBySelector: the rows clicked by selector, their button having no
	// ref in the snapshot.
	mBySelector = "by selector"
	// mTruncated: a sample for each snapshot the tool says it cut.
	mTruncated = "truncated"
)

// evaluates is how many evaluates a run times.
const evaluates = 5

// warmRows are the rows whose buttons are clicked, top to bottom.
var warmRows = []int{3, 75, 150, 225, 300}

const (
	user, password = "alice", "secret"
	counterExpr    = `Number(document.getElementById("count").textContent)`
	loggedInExpr   = `document.getElementById("welcome").textContent === "Welcome, alice" && document.cookie.includes("session=alice")`
)

type samples map[string][]float64

func (s samples) add(m string, v float64) { s[m] = append(s[m], v) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func timed(f func() error) (float64, error) {
	t := time.Now()
	err := f()
	return ms(time.Since(t)), err
}

// scenario runs the scenario once through d, adding its figures to s.
// onSnapshot, if set, gets the text of the snapshot.
func scenario(ctx context.Context, d driver, url string, s samples, onLoaded func(), onSnapshot func(string)) (err error) {
	defer func() {
		if serr := d.stop(ctx); err == nil && serr != nil {
			err = fmt.Errorf("stop: %w", serr)
		}
	}()
	cold, err := timed(func() error {
		if err := d.start(ctx); err != nil {
			return err
		}
		return d.navigate(ctx, url)
	})
	if err != nil {
		return err
	}
	s.add(mCold, cold)
	if onLoaded != nil {
		onLoaded()
	}

	var text, trunc string
	t, err := timed(func() (err error) { text, trunc, err = d.snapshot(ctx); return err })
	if err != nil {
		return err
	}
	s.add(mSnapMs, t)
	s.add(mSnapBytes, float64(len(text)))
	if onSnapshot != nil {
		onSnapshot(text)
	}
	els := refs(text)
	buttons := 0
	for i := 1; i <= tableRows; i++ {
		if _, ok := els["button/Buy item "+strconv.Itoa(i)]; ok {
			buttons++
		}
	}
	s.add(mButtons, float64(buttons))
	if trunc == "true" {
		s.add(mTruncated, 1)
	}

	find := func(key string) (element, error) {
		e, ok := els[key]
		if !ok {
			return e, fmt.Errorf("no ref for %s in the snapshot (%d bytes)", key, len(text))
		}
		return e, nil
	}
	userBox, err := find("textbox/User")
	if err != nil {
		return err
	}
	passBox, err := find("textbox/Password")
	if err != nil {
		return err
	}
	loginButton, err := find("button/Log in")
	if err != nil {
		return err
	}
	t, err = timed(func() error {
		if err := d.typeText(ctx, userBox, user); err != nil {
			return err
		}
		if err := d.typeText(ctx, passBox, password); err != nil {
			return err
		}
		_, err := d.click(ctx, loginButton)
		return err
	})
	if err != nil {
		return err
	}
	s.add(mLogin, t)
	if v, err := d.evaluate(ctx, loggedInExpr); err != nil || v != "true" {
		return fmt.Errorf("after the login: want the welcome and the cookie, evaluate says %q (%v)", v, err)
	}

	for _, row := range warmRows {
		e, err := find("button/Buy item " + strconv.Itoa(row))
		if err != nil {
			// A snapshot cut at its budget: the click still happens, and is
			// timed, by selector; the buttons row says what was missing.
			e = element{role: "button", name: "Buy item " + strconv.Itoa(row), selector: fmt.Sprintf("tbody tr:nth-child(%d) button", row)}
			s.add(mBySelector, float64(row))
		}
		var n int
		t, err := timed(func() (err error) { n, err = d.click(ctx, e); return err })
		if err != nil {
			return err
		}
		s.add(mClick, t)
		s.add(mClickText, float64(n))
	}
	for range evaluates {
		var v string
		t, err := timed(func() (err error) { v, err = d.evaluate(ctx, counterExpr); return err })
		if err != nil {
			return err
		}
		if v != strconv.Itoa(len(warmRows)) {
			return fmt.Errorf("counter: want %d after the clicks, evaluate says %q", len(warmRows), v)
		}
		s.add(mEval, t)
	}
	return nil
}

func run(ctx context.Context, o options) error {
	if o.runs < 1 {
		return errors.New("-runs: want at least 1")
	}
	notes := []string{"load average at the start: " + benchkit.LoadAvg()}
	url, stopPage, err := servePage()
	if err != nil {
		return err
	}
	defer stopPage()

	var pw *playwright
	if o.playwright != "" {
		node, err := exec.LookPath("node")
		if err != nil {
			return fmt.Errorf("playwright-mcp needs node: %w", err)
		}
		cli, err := filepath.Abs(o.playwright) // the server runs in its own dir
		if err != nil {
			return err
		}
		if _, err := os.Stat(cli); err != nil {
			return fmt.Errorf("playwright-mcp: %w (make bench-browser installs it)", err)
		}
		dir, err := os.MkdirTemp("", "browserbench-playwright-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		pw = &playwright{node: node, cli: cli, chromium: o.chromium, dir: dir}
		// playwright-mcp turns Chromium's sandbox on, which Chromium
		// refuses to start under as root ("Chromium sandboxing failed!").
		if os.Getuid() == 0 {
			pw.extraArgs = []string{"--no-sandbox"}
		}
		notes = append(notes, "playwright-mcp "+packageVersion(cli)+", run as: node "+strings.Join(pw.args(), " "))
	}

	if o.listTools {
		if pw == nil {
			return errors.New("-list-tools: no -playwright")
		}
		return pw.listTools(ctx)
	}

	var cx *cortex
	var peerPid int
	if !o.noCortex {
		scratch, err := os.MkdirTemp("", "browserbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(scratch)
		bin := o.bin
		if bin == "" {
			if bin, err = testnet.Build(scratch); err != nil {
				return err
			}
		}
		pn, err := testnet.StartProcesses(ctx, testnet.ProcessOptions{Binary: bin, N: 1, Dir: scratch + "/peers"})
		if err != nil {
			return err
		}
		defer pn.Stop()
		peerPid = pn.Peers[0].Pid()
		cx = &cortex{bin: bin, data: pn.Peers[0].DataDir}
		if ok, err := cx.hasBrowserTools(ctx); err != nil {
			return err
		} else if !ok {
			fmt.Fprintln(os.Stderr, "cortex-peer: this build's MCP server has no browser_open: measuring the baseline alone")
			cx = nil
		}
	}

	figs := map[string]samples{}
	var drivers []driver
	if pw != nil {
		drivers = append(drivers, pw)
	}
	if cx != nil {
		drivers = append(drivers, cx)
	}
	if len(drivers) == 0 {
		return errors.New("nothing to measure")
	}
	for _, d := range drivers {
		figs[d.name()] = samples{}
	}
	for i := 1; i <= o.runs; i++ {
		for _, d := range drivers {
			settle()
			s := figs[d.name()]
			var onLoaded func()
			var onSnapshot func(string)
			if i == 1 {
				onLoaded = func() { notes = append(notes, sandboxNote(d, peerPid)) }
				if o.dump != "" {
					onSnapshot = func(text string) { dumpSnapshot(o.dump, d.name(), text) }
				}
			}
			if err := scenario(ctx, d, url, s, onLoaded, onSnapshot); err != nil {
				return fmt.Errorf("%s, run %d: %w", d.name(), i, err)
			}
			if c, ok := d.(*cortex); ok {
				s.add(mOpen, ms(c.opened))
			}
			fmt.Fprintf(os.Stderr, "run %d %-15s cold %6.0f ms  snapshot %6.1f ms %6.0f B  login %6.1f ms  click %6.1f ms  evaluate %6.1f ms\n",
				i, d.name(), last(s[mCold], 1), last(s[mSnapMs], 1), last(s[mSnapBytes], 1), last(s[mLogin], 1), last(s[mClick], len(warmRows)), last(s[mEval], evaluates))
		}
	}

	if pw != nil && pw.fileSnapshots {
		notes = append(notes, "playwright-mcp's click result links to the page's new snapshot in a file of its workspace (written on every action) rather than carrying it")
	}
	var idle *idleFigures
	if cx != nil {
		settle()
		if idle, err = cx.idleSessions(ctx, peerPid, 5); err != nil {
			return fmt.Errorf("cortex-peer, idle sessions: %w", err)
		}
	}
	notes = append(notes, "load average at the end: "+benchkit.LoadAvg())
	printTable(o.runs, figs, pw != nil, cx != nil, idle, notes)
	return nil
}

// last is the median of the last n samples of v: this run's.
func last(v []float64, n int) float64 {
	return median(v[max(0, len(v)-n):])
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

// sandboxNote says how the tool's Chromium runs: its uid and whether its
// command line turns the sandbox off.
func sandboxNote(d driver, peerPid int) string {
	root := peerPid
	if p, ok := d.(*playwright); ok {
		root = p.srv.PID()
	}
	uids, noSandbox := map[string]bool{}, false
	for _, pid := range benchkit.Descendants(root) {
		dir := "/proc/" + strconv.Itoa(pid)
		if comm, _ := os.ReadFile(dir + "/comm"); !strings.HasPrefix(string(comm), "chrom") {
			continue
		}
		cl, _ := os.ReadFile(dir + "/cmdline")
		noSandbox = noSandbox || strings.Contains(string(cl), "--no-sandbox")
		uids[statusField(dir+"/status", "Uid:")] = true
	}
	sb := "sandbox on"
	if noSandbox {
		sb = "--no-sandbox"
	}
	added := "none added by browserbench"
	if p, ok := d.(*playwright); ok && len(p.extraArgs) > 0 {
		added = "browserbench added " + strings.Join(p.extraArgs, " ") + ": as root Chromium refuses its sandbox"
	}
	return fmt.Sprintf("%s's Chromium: uid %s, %s (%s)", d.name(), strings.Join(slices.Sorted(maps.Keys(uids)), ","), sb, added)
}

func dumpSnapshot(dir, name, text string) {
	path := filepath.Join(dir, name+".snapshot.txt")
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.WriteFile(path, []byte(text), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dump snapshot:", err)
	}
}

// packageVersion is the version in the package.json beside an npm
// package's file.
func packageVersion(file string) string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "package.json"))
	var pkg struct {
		Version string `json:"version"`
	}
	if err != nil || json.Unmarshal(b, &pkg) != nil || pkg.Version == "" {
		return "(version unknown)"
	}
	return pkg.Version
}
