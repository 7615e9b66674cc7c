package main

import (
	"fmt"
	"os"
	"text/tabwriter"
)

// printTable prints the medians side by side, the ratios that the goals
// of issue 17 are about, and the goals.
func printTable(o options, npos int, editFile string, figs map[string]samples, agree map[string]int, sh sharing, notes []string) {
	cli, warm, mls, cx := figs[tCLI], figs[tWarm], figs[tMLS], figs[tCX]
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Println()
	fmt.Fprintf(w, "lsp figures, medians (%d positions x %d rounds)\t%s\t%s\t%s\t%s\tcortex/warm\tmcp-ls/cortex\tgoal\n", npos, o.rounds, tCLI, tWarm, tMLS, tCX)
	cell := func(s samples, m string) (string, float64) {
		if len(s[m]) == 0 {
			return "n/a", 0
		}
		v := median(s[m])
		if v < 10 {
			return fmt.Sprintf("%.2f ms", v), v
		}
		return fmt.Sprintf("%.0f ms", v), v
	}
	ratio := func(a, b float64) string {
		if a == 0 || b == 0 {
			return ""
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	row := func(what, m, mlsM string, goal func(c, wv, mv float64) string) {
		cs, _ := cell(cli, m)
		ws, wv := cell(warm, m)
		ms_, mv := cell(mls, mlsM)
		if mlsM != m && mv > 0 {
			ms_ += " (by name)"
		}
		xs, xv := cell(cx, m)
		g := ""
		if goal != nil {
			g = goal(xv, wv, mv)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", what, cs, ws, ms_, xs, ratio(xv, wv), ratio(mv, xv), g)
	}
	within := func(xv, wv float64) string {
		if xv == 0 || wv == 0 {
			return "<= 1.5x warm gopls: n/a"
		}
		return "<= 1.5x warm gopls: " + met(xv <= 1.5*wv)
	}
	faster := func(xv, mv float64) string {
		if xv == 0 || mv == 0 {
			return ">= 5x faster than mcp-ls: n/a"
		}
		return ">= 5x faster than mcp-ls: " + met(mv >= 5*xv)
	}
	row("definition at FILE:LINE:COL (CLI: a process each)", mDef, mDefSymbol, func(xv, wv, mv float64) string { return within(xv, wv) + "; " + faster(xv, mv) })
	row("definition by symbol (pkg.Func), repeated", mDefSymbol, mDefSymbol, func(xv, _, mv float64) string { return faster(xv, mv) })
	row("  the first ask of each name at a root", mDefSymbolFirst, mDefSymbol, func(xv, _, mv float64) string { return faster(xv, mv) })
	row("hover at FILE:LINE:COL", mHover, mHover, func(xv, wv, mv float64) string { return within(xv, wv) + "; " + faster(xv, mv) })
	ps, _ := cell(cx, mPing)
	as, _ := cell(cx, mAPI)
	fmt.Fprintf(w, "  the way in: MCP ping / list_tasks (MCP + API)\t\t\t\t%s / %s\t\t\t\n", ps, as)
	row("cold: process start to first definition", mCold, mCold, nil)
	fmt.Fprintf(w, "definitions agreeing with the gopls CLI's\t%d of %d\t%d of %d\t%d of %d (file)\t%d of %d\t\t\t\n",
		npos, npos, agree[tWarm], len(warm[mDef]), agree[tMLS], len(mls[mDefSymbol]), agree[tCX], len(cx[mDef]))
	_, e := cell(cx, mEdit)
	es, _ := cell(cx, mEdit)
	fmt.Fprintf(w, "edit to diagnostic in %s (median of %d)\t\t\t\t%s\t\t\t< 500 ms: %s\n", editFile, len(cx[mEdit]), es, met(e > 0 && e < 500))
	rs, r := cell(cx, mRestart)
	_, cold := cell(cx, mCold)
	pct := 0.0
	if cold > 0 {
		pct = 100 * r / cold
	}
	fmt.Fprintf(w, "restart after SIGKILL to a ready definition\t\t\t\t%s (%.0f%% of cold)\t\t\t< 25%% of cold: %s\n", rs, pct, met(r > 0 && pct < 25))
	ss, _ := cell(cx, mShared)
	fmt.Fprintf(w, "%d MCP sessions, a definition each at once\t\t\t\t%s\t\t\t\n", sh.sessions, ss)
	fmt.Fprintf(w, "  servers for the workspace / gopls processes\t\t\t\t%d / %d\t\t\tone gopls for %d clients: %s\n", sh.servers, sh.gopls, sh.sessions, met(sh.servers == 1 && sh.gopls == 1))
	w.Flush()
	for _, n := range notes {
		fmt.Println("note:", n)
	}
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
