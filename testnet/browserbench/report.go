package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
)

const (
	pwName = "playwright-mcp"
	cxName = "cortex-peer"
)

// printTable prints the medians side by side, with the ratio
// playwright/cortex and the goals.
func printTable(runs int, figs map[string]samples, havePW, haveCX bool, idle *idleFigures, notes []string) {
	pw, cx := figs[pwName], figs[cxName]
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Println()
	fmt.Fprintf(w, "browser figures, medians of %d runs\t%s\t%s\tplaywright/cortex\tgoal\n", runs, cxName, pwName)
	type fmtFn func(float64) string
	msF := func(v float64) string { return fmt.Sprintf("%.1f ms", v) }
	bF := func(v float64) string { return fmt.Sprintf("%.0f B", v) }
	nF := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	cell := func(have bool, s samples, m string, f fmtFn, pick func([]float64) float64) (string, float64) {
		if !have || len(s[m]) == 0 {
			return "n/a", 0
		}
		v := pick(s[m])
		return f(v), v
	}
	// row prints one figure; goal, given both values, says what the
	// issue asks and whether it is met.
	row := func(what, m string, f fmtFn, pick func([]float64) float64, goal func(c, p float64) string) {
		cs, c := cell(haveCX, cx, m, f, pick)
		ps, p := cell(havePW, pw, m, f, pick)
		ratio, g := "", ""
		if c > 0 && p > 0 && m != mButtons {
			ratio = fmt.Sprintf("%.1fx", p/c)
		}
		if goal != nil && haveCX {
			g = goal(c, p)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", what, cs, ps, ratio, g)
	}
	first := func(v []float64) float64 { return v[0] }
	tenX := func(c, p float64) string {
		if p == 0 {
			return ">= 10x faster than playwright-mcp"
		}
		return ">= 10x faster than playwright-mcp: " + met(p >= 10*c)
	}
	perRun := len(warmRows) * runs
	row("cold start + navigate (process start to page loaded)", mCold, msF, median, nil)
	row("  first run (cortex: Chromium not yet running)", mCold, msF, first, nil)
	row("snapshot", mSnapMs, msF, median, nil)
	row("snapshot size (text the model gets)", mSnapBytes, bF, median, func(c, p float64) string {
		if p == 0 {
			return "<= playwright-mcp's"
		}
		return "<= playwright-mcp's: " + met(c <= p)
	})
	row(fmt.Sprintf("buttons of the %d rows with a ref", tableRows), mButtons, nF, minOf, func(c, _ float64) string {
		return fmt.Sprintf("all %d: %s", tableRows, met(c == tableRows))
	})
	if haveCX && len(cx[mTruncated]) > 0 {
		fmt.Fprintf(w, "  cortex snapshot truncated at its budget\t%d of %d runs\t\t\t\n", len(cx[mTruncated]), runs)
	}
	for _, name := range []string{cxName, pwName} {
		if rows := figs[name][mBySelector]; len(rows) > 0 {
			fmt.Fprintf(w, "  %s: clicks by CSS selector, no ref\t%d of %d\t\t\t\n", name, len(rows), perRun)
		}
	}
	row("type user + type password + click Log in", mLogin, msF, median, nil)
	row(fmt.Sprintf("warm click on a row button (median of %d)", perRun), mClick, msF, median, tenX)
	row("  text returned by a click", mClickText, bF, median, nil)
	row(fmt.Sprintf("evaluate, a counter read (median of %d)", evaluates*runs), mEval, msF, median, tenX)
	if idle != nil {
		opens := append(append([]float64{}, cx[mOpen][1:]...), idle.opens...)
		fmt.Fprintf(w, "open of a session, Chromium running (median of %d)\t%s\t\t\t< 300 ms: %s\n",
			len(opens), msF(median(opens)), met(median(opens) < 300))
		n := float64(idle.sessions)
		fmt.Fprintf(w, "idle memory per session (%d sessions, Chromium RSS / PSS)\t%.1f / %.1f MiB\t\t\treported\n",
			idle.sessions, float64(idle.after.rss-idle.before.rss)/1024/n, float64(idle.after.pss-idle.before.pss)/1024/n)
		fmt.Fprintf(w, "  peer's Chromium before / after (processes, RSS, PSS)\t%d, %.0f, %.0f MiB / %d, %.0f, %.0f MiB\t\t\t\n",
			idle.before.procs, mib(idle.before.rss), mib(idle.before.pss), idle.after.procs, mib(idle.after.rss), mib(idle.after.pss))
	}
	w.Flush()
	for _, n := range notes {
		fmt.Println("note:", n)
	}
	if !haveCX {
		fmt.Println("note: cortex-peer not measured: " + strings.TrimSpace(cxMissing))
	}
}

// cxMissing says why cortex-peer has no figures, when it has none.
const cxMissing = "this build's MCP server has no browser tools (or -no-cortex)"

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v[1:] {
		m = min(m, x)
	}
	return m
}

func mib(kb int64) float64 { return float64(kb) / 1024 }
