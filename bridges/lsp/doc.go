// Package lsp keeps language servers alive on a peer: one server per
// workspace root and language, started on first use, shared by every caller
// of that workspace, shut down when idle and started again (with backoff)
// after it died. gopls is built in; other servers come from configuration.
//
// Callers speak in the package's own small types (Position, Location,
// Diagnostic, ...), 1-based lines and columns as editors show them; the
// Language Server Protocol (JSON-RPC 2.0 over the server's stdio, with
// go.lsp.dev/jsonrpc2 as the wire) stays inside the package. A server still
// loading its workspace answers Stamp{State: "warming"}, never an empty
// answer that means "not ready".
//
// Servers never run as root: when the peer is root they run as an
// unprivileged uid (Config.UID) with a scrubbed environment, Go modules
// read-only from a module cache of their own, and Pdeathsig so that they die
// with the peer.
//
// lsp imports protocol/errdefs and go.lsp.dev/jsonrpc2, no other package
// of the project and no other package imports the LSP library. It must not
// import libp2p, the API, protocol/gen or anything under node: the mesh
// glue (routing calls to the peer holding a server, the workspace view
// synced from the DAG) lives in node.
package lsp
