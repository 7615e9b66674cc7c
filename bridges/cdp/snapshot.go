package cdp

import (
	"fmt"
	"strings"

	"github.com/chromedp/cdproto/accessibility"
)

// interactive are the roles a model acts on: each gets a ref.
var interactive = map[string]bool{
	"button": true, "link": true, "textbox": true, "searchbox": true, "checkbox": true,
	"radio": true, "combobox": true, "listbox": true, "option": true, "menuitem": true,
	"menuitemcheckbox": true, "menuitemradio": true, "tab": true, "switch": true,
	"slider": true, "spinbutton": true, "treeitem": true,
}

// folded are roles that say nothing by themselves: their children take
// their place, one level up.
var folded = map[string]bool{
	"generic": true, "none": true, "presentation": true,
	"LineBreak": true, "group": true, "Section": true, "LabelText": true,
}

// hidden are roles never written, nor their subtrees: an InlineTextBox is
// a run of glyphs of the text above it, which says it already.
var hidden = map[string]bool{"InlineTextBox": true}

// rendered is a snapshot's text and what it holds.
type rendered struct {
	text      string
	lines     int // lines in the whole tree, written or not
	truncated bool
}

// render writes the accessibility tree as indented lines, `role "name"`,
// with `[ref=eN]` on interactive nodes, ignored nodes and empty wrappers
// folded away and text that only repeats its parent's name left out. Past
// budget bytes it stops writing and says how many lines it left out.
func render(nodes []*accessibility.Node, budget int, refFor func(refTarget) string) rendered {
	byID := make(map[accessibility.NodeID]*accessibility.Node, len(nodes))
	for _, n := range nodes {
		byID[n.NodeID] = n
	}
	var root *accessibility.Node
	for _, n := range nodes {
		if n.ParentID == "" {
			root = n
			break
		}
	}
	var b strings.Builder
	var r rendered
	seen := make(map[accessibility.NodeID]bool, len(nodes))
	var walk func(n *accessibility.Node, depth int, parentName string)
	walk = func(n *accessibility.Node, depth int, parentName string) {
		if n == nil || seen[n.NodeID] || depth > 256 {
			return // a cycle or a tree too deep to be a page: stop there
		}
		seen[n.NodeID] = true
		role, name := valueText(n.Role), strings.TrimSpace(valueText(n.Name))
		if hidden[role] {
			return
		}
		show := !n.Ignored && role != "" && !(folded[role] && name == "")
		if role == "StaticText" && (name == "" || name == parentName) {
			show = false // the parent's name says it already
		}
		if show && !interactive[role] && name != "" && echoedBy(n, name, byID) {
			show = false // a cell around a button of the same name: the button says it
		}
		childDepth := depth
		if show {
			r.lines++
			line := formatNode(n, role, name, depth, refFor)
			if !r.truncated && b.Len()+len(line) <= budget {
				b.WriteString(line)
			} else {
				r.truncated = true
			}
			childDepth = depth + 1
			parentName = name
		}
		for _, id := range n.ChildIDs {
			walk(byID[id], childDepth, parentName)
		}
	}
	walk(root, 0, "")
	if r.truncated {
		fmt.Fprintf(&b, "… the page has %d lines in all; this snapshot stops at %d bytes (ask for the full snapshot)\n", r.lines, budget)
	}
	r.text = b.String()
	return r
}

// echoedBy says whether the only child of n that shows is an interactive
// node with n's name.
func echoedBy(n *accessibility.Node, name string, byID map[accessibility.NodeID]*accessibility.Node) bool {
	var only *accessibility.Node
	for _, id := range n.ChildIDs {
		c := byID[id]
		if c == nil || c.Ignored || hidden[valueText(c.Role)] {
			continue
		}
		if only != nil {
			return false
		}
		only = c
	}
	return only != nil && interactive[valueText(only.Role)] && strings.TrimSpace(valueText(only.Name)) == name
}

// formatNode is one line of a snapshot.
func formatNode(n *accessibility.Node, role, name string, depth int, refFor func(refTarget) string) string {
	var b strings.Builder
	b.WriteString(strings.Repeat("  ", depth))
	b.WriteString("- ")
	if role == "StaticText" {
		role = "text"
	}
	b.WriteString(role)
	if name != "" {
		fmt.Fprintf(&b, " %q", clip(name, 200))
	}
	if v := strings.TrimSpace(valueText(n.Value)); v != "" && v != name {
		fmt.Fprintf(&b, " value=%q", clip(v, 200))
	}
	for _, p := range n.Properties {
		switch p.Name {
		case "checked", "selected", "expanded", "pressed":
			if t := valueText(p.Value); t == "true" {
				b.WriteString(" " + string(p.Name))
			}
		case "disabled":
			if valueText(p.Value) == "true" {
				b.WriteString(" disabled")
			}
		case "level":
			fmt.Fprintf(&b, " level=%s", valueText(p.Value))
		}
	}
	if interactive[role] && n.BackendDOMNodeID != 0 {
		fmt.Fprintf(&b, " [ref=%s]", refFor(refTarget{node: n.BackendDOMNodeID, role: role, name: name}))
	}
	b.WriteByte('\n')
	return b.String()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
