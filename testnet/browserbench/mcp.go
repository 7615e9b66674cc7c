package main

import (
	"regexp"
	"strings"
	"time"
)

// callTimeout bounds one tool call, the cold start and navigation included.
const callTimeout = 2 * time.Minute

// refLine matches an element with a ref in either tool's snapshot text:
// `- button "Log in" [ref=e7]` (playwright-mcp, YAML) or
// `button "Log in" [ref=e7]` (cortex-peer), attributes between the name
// and the ref allowed.
var refLine = regexp.MustCompile(`(?m)^[\s-]*([a-z]+) "((?:[^"\\]|\\.)*)"[^\n]*?\[ref=([A-Za-z0-9_-]+)\]`)

// element is one element of a snapshot, or, when the snapshot gave it no
// ref, a CSS selector for it.
type element struct{ role, name, ref, selector string }

// refs lists the elements with a ref of a snapshot's text, by role and
// name ("button/Log in").
func refs(text string) map[string]element {
	m := map[string]element{}
	for _, g := range refLine.FindAllStringSubmatch(text, -1) {
		e := element{role: g[1], name: strings.ReplaceAll(g[2], `\"`, `"`), ref: g[3]}
		key := e.role + "/" + e.name
		if _, ok := m[key]; !ok {
			m[key] = e
		}
	}
	return m
}
