// Package node is the composition root: it builds every subsystem of one
// peer in order (data dir lock, store, libp2p host, heartbeats, local API),
// hands each its dependencies through its constructor, runs the long-lived
// ones under a supervisor, and serves the local API on the data dir's unix
// socket. cmd/cortex-peer and testnet use it; nothing else does.
package node
