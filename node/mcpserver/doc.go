// Package mcpserver exposes a peer's local API to an AI agent as Model
// Context Protocol tools (github.com/modelcontextprotocol/go-sdk): running,
// watching and cancelling tasks, listing peers, and moving workspaces.
//
// It has one job, so it knows the peer only through the API interface (which
// node/apiclient.Client satisfies): the same server serves stdio
// (`cortex-peer mcp`, dialling the API socket) and streamable HTTP (served by
// the peer on a loopback address, behind a bearer token and Host and Origin
// checks). It must not import node or any lower layer.
//
// Tool results never flood the agent's context: output over a threshold is
// returned as its head and tail, its size, and a reference that task_logs
// pages through. Errors are tool errors whose text starts with a stable code
// ("not_found: …", "invalid_argument: …").
package mcpserver
