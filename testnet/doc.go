// Package testnet starts N real peers on loopback for tests, benchmarks and
// `cortex-peer testnet`, at two levels: in one process (New, fast, for most
// integration tests) and as separate processes of the real binary
// (StartProcesses, for end-to-end tests and the CLI). Peers share a fresh
// mesh key, listen on 127.0.0.1 port 0, bootstrap to the first peer and run
// without mDNS.
package testnet
