// Package node is the composition root of a peer, and only that: it reads
// the config, builds each capability in order with explicit arguments
// (store, host, block exchange, task runner, delegation, heartbeats, local
// API, MCP), starts the long-lived ones under a supervisor, and closes them
// in reverse. Every capability lives in its own package under node/ and
// never imports this one; docs/architecture.md draws the map.
// cmd/cortex-peerd and testnet use it; nothing else does.
package node
