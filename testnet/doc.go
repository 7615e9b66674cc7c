// Package testnet starts N real peers on loopback for tests, benchmarks and
// `cortex-peer testnet`, at two levels: in one process (New, fast, for most
// integration tests) and as separate processes of the real binary
// (StartProcesses, for end-to-end tests and the CLI). Peers share a fresh
// mesh key, listen on 127.0.0.1 port 0, bootstrap to the first peer and run
// without mDNS. A process testnet reports each end of a peer (OnExit) and
// restarts peers with their identity (RestartPeer, RestartDead), also on
// request through a socket in its dir (ServeControl, RequestRestart).
package testnet
