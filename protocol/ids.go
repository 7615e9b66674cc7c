package protocol

// Versions of the wire this build speaks. Every stream protocol id and pubsub
// topic carries its version; a peer advertises them in its heartbeat.
const (
	// HeartbeatTopic is the gossipsub topic of capability heartbeats.
	HeartbeatTopic = "/cortex/heartbeat/1.0.0"
	// DHTPrefix keeps the mesh's kad-DHT apart from any public DHT.
	DHTPrefix = "/cortex"
	// Rendezvous is the DHT key under which mesh members advertise themselves.
	Rendezvous = "/cortex/mesh/1.0.0"
	// BlocksProtocol streams the whole DAG of a root as a CAR: the bulk path
	// for a tree a peer lacks entirely (bitswap serves the deltas).
	BlocksProtocol = "/cortex/blocks/1.0.0"
	// LeavesProtocol streams the blocks asked for by CID, in order: how a
	// file's leaves come from several providers at once.
	LeavesProtocol = "/cortex/leaves/1.0.0"
	// TaskProtocol carries delegated tasks between a coordinator and an
	// executor: submit, cancel, query, and result delivery.
	TaskProtocol = "/cortex/task/1.0.0"
	// LogsProtocol returns ranges of a task's stored output by sequence
	// number: what fills the gaps of the live log topic.
	LogsProtocol = "/cortex/logs/1.0.0"
	// BrowserProtocol carries one call of the browser service to the peer
	// that hosts the session.
	BrowserProtocol = "/cortex/browser/1.0.0"
	// LSPProtocol carries one language-server call to the peer whose
	// server answers it.
	LSPProtocol = "/cortex/lsp/1.0.0"
	// ReleaseTopic carries signed release announcements, rollback reports
	// and equivocation proofs.
	ReleaseTopic = "/cortex/releases/1.0.0"
	// ReleaseProtocol answers with the signed releases a peer holds.
	ReleaseProtocol = "/cortex/releases/1.0.0"
	// LogTopicPrefix + task id is the gossip topic of a task's live output.
	LogTopicPrefix = "/cortex/logs/1.0.0/"
)

// Size caps. A message over its cap is rejected before it is decoded.
const (
	// MaxPubsubMessage bounds every gossipsub message on every topic.
	MaxPubsubMessage = 1 << 20
	// MaxHeartbeatSize bounds an encoded heartbeat.
	MaxHeartbeatSize = 16 << 10
	// MaxBlocksRequest bounds a request on BlocksProtocol (one CID).
	MaxBlocksRequest = 256
	// MaxLeavesRequest bounds the CIDs of one request on LeavesProtocol.
	MaxLeavesRequest = 1024
	// MaxTaskMessage bounds one message on TaskProtocol.
	MaxTaskMessage = 256 << 10
	// MaxLogChunkMessage bounds one encoded LogChunk (its data is at most
	// 256 KiB), on the log topic and on LogsProtocol.
	MaxLogChunkMessage = 320 << 10
	// MaxLogRangeRequest bounds a request on LogsProtocol.
	MaxLogRangeRequest = 1 << 10
	// MaxBrowserCall bounds a call on BrowserProtocol (files travel by
	// CID, never in a call).
	MaxBrowserCall = 256 << 10
	// MaxBrowserReply bounds a reply on BrowserProtocol: a snapshot's text,
	// an inline screenshot, a page's console.
	MaxBrowserReply = 8 << 20
	// MaxTaskTimeoutMs bounds a task's timeout in milliseconds, on the task
	// wire and the local API, so that it never overflows a time.Duration
	// (100 years).
	MaxTaskTimeoutMs = int64(100 * 365 * 24 * 3600 * 1000)
)

// Protocols lists the versioned wire protocols of this build, as advertised in
// heartbeats and shown by `cortex-peer version`.
func Protocols() []string {
	return []string{HeartbeatTopic, BlocksProtocol, LeavesProtocol, TaskProtocol, LogsProtocol, BrowserProtocol, LSPProtocol, ReleaseProtocol}
}
