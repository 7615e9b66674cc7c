// Package bridges will hold the long-lived sub-workers that stay alive on a
// peer across tasks: bridges/cdp (a headless Chromium driven over the Chrome
// DevTools Protocol) and bridges/lsp (language servers over stdio).
//
// bridges must not import p2p or node.
package bridges
