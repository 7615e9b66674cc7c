//lint:file-ignore SA1019 logging notifications are what clients show today; the SDK keeps them through a year-long deprecation window.

package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// API is the part of a peer's local API the tools use; node/apiclient.Client
// implements it.
type API interface {
	Run(ctx context.Context, req *apiv1.RunRequest, onEvent func(*apiv1.RunEvent)) (*apiv1.TaskResult, error)
	ListTasks(ctx context.Context) ([]*apiv1.TaskInfo, error)
	GetTask(ctx context.Context, id string) (*apiv1.TaskInfo, error)
	CancelTask(ctx context.Context, id string) error
	Cancel(ctx context.Context, id string) (*apiv1.CancelTaskResponse, error)
	LogsFrom(ctx context.Context, id, stream string, from uint64, follow bool, fn func(*apiv1.OutputChunk)) error
	Peers(ctx context.Context, includeExpired bool) ([]*apiv1.PeerInfo, error)
	Drain(ctx context.Context, deadline time.Duration, stay bool, fn func(*apiv1.DrainEvent)) (*apiv1.DrainEvent, error)
	Eligible(ctx context.Context) (bool, error)
	WorkspaceAdd(ctx context.Context, dir string, noIndex bool, progress func(*apiv1.Progress)) (*apiv1.AddResult, error)
	WorkspaceGet(ctx context.Context, root, dest string, stall time.Duration, allowEscapingLinks bool, progress func(*apiv1.Progress)) (*apiv1.GetResult, error)
	WorkspaceDiff(ctx context.Context, from, to string, stall time.Duration) ([]*apiv1.Change, error)
	WorkspaceVerify(ctx context.Context, root string, progress func(*apiv1.Progress)) (*apiv1.VerifyResult, error)
	WorkspaceMerge(ctx context.Context, base, theirs, dir string) (*apiv1.MergeResponse, error)
	Browser() apiv1connect.BrowserServiceClient
	LSP() apiv1connect.LSPServiceClient
	ArtifactPut(ctx context.Context, path string, progress func(*apiv1.Progress)) (*apiv1.ArtifactPutResult, error)
	ArtifactGet(ctx context.Context, root, dest string, force bool, stall time.Duration, progress func(*apiv1.Progress)) (*apiv1.ArtifactGetResult, error)
	ArtifactRead(ctx context.Context, root string, off, n uint64, stall time.Duration, w io.Writer) (uint64, error)
	ArtifactUnpin(ctx context.Context, root string) error
	UpdateStatus(ctx context.Context) (*apiv1.UpdateStatus, error)
	UpdateRollback(ctx context.Context) (*apiv1.UpdateRollbackResponse, error)
}

// Options configure a Server.
type Options struct {
	// Version is reported to clients as the server's version.
	Version string
	// WorkDir resolves relative paths given to tools (stdio: the directory
	// the agent started `cortex-peer mcp` in). Empty refuses relative paths,
	// as the HTTP server does: its working directory means nothing to a client.
	WorkDir string
	// InlineBytes is the most output of one stream a result carries whole
	// (default DefaultInlineBytes).
	InlineBytes int
	// TempDir is where a workspace given as a CID is fetched to (default
	// the system's temporary directory).
	TempDir string
	Logger  *slog.Logger
}

// Server is the MCP server of one peer.
type Server struct {
	api  API
	opts Options
	log  *slog.Logger
	mcp  *mcp.Server
}

// New builds the server and registers every tool.
func New(api API, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.InlineBytes <= 0 {
		opts.InlineBytes = DefaultInlineBytes
	}
	s := &Server{api: api, opts: opts, log: opts.Logger}
	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "cortex-peer", Title: "cortex-peer mesh", Version: opts.Version}, &mcp.ServerOptions{
		Instructions: instructions,
		Logger:       opts.Logger,
	})
	s.addTools()
	s.addBrowserTools()
	s.addArtifactTools()
	s.addLSPTools()
	s.addUpdateTools()
	return s
}

const instructions = `cortex-peer runs commands in sandboxed containers on the peers of a private mesh and moves directories between them by content.
Use run_task for short work (its output arrives as progress notifications and the call returns the exit code); use start_task then get_task/task_logs for long work.
Long output is never returned whole: a result carries its head, tail, size and a ref to page through with task_logs.
Files of any size move by CID: artifact_put one (or a directory), artifact_get it into a path on any peer, artifact_read a byte range of it.
For code, the lsp_ tools ask a warm language server of a workspace: definitions, references, hover, diagnostics, rename and format as proposals.
For the web, browser_open a session (it stays alive on its peer, logged in, across calls), then browser_navigate, browser_snapshot (elements with refs), browser_click/browser_type by ref, browser_evaluate; browser_close when done.
Errors start with a stable code: invalid_argument, not_found, unavailable, permission_denied, resource_exhausted, stale_ref, cancelled, internal.`

// MCP is the underlying go-sdk server, for transports this package does not wrap.
func (s *Server) MCP() *mcp.Server { return s.mcp }

// Run serves one session on t (for instance &mcp.StdioTransport{}) until the
// client leaves or ctx ends.
func (s *Server) Run(ctx context.Context, t mcp.Transport) error {
	err := s.mcp.Run(ctx, t)
	if err != nil && ctx.Err() != nil {
		return nil // asked to stop
	}
	return err
}

// absPath resolves a path argument against Options.WorkDir.
func (s *Server) absPath(name, p string) (string, error) {
	if p == "" {
		return "", invalid("%s is required", name)
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p), nil
	}
	if s.opts.WorkDir == "" {
		return "", invalid("%s %q: give an absolute path on the peer's machine", name, p)
	}
	return filepath.Join(s.opts.WorkDir, p), nil
}

// notifier sends a call's progress and log notifications; it does nothing
// for a client that asked for neither.
type notifier struct {
	req   *mcp.CallToolRequest
	token any
	n     float64
	log   *slog.Logger
	// failed stops notifying once the client is gone, so one broken
	// session does not log a line per chunk.
	failed bool
}

func newNotifier(req *mcp.CallToolRequest, log *slog.Logger) *notifier {
	return &notifier{req: req, token: req.Params.GetProgressToken(), log: log}
}

// line reports one line of a task's output: a progress notification whose
// message is the line (when the call has a progress token) and a log
// notification (when the client set a log level).
func (n *notifier) line(ctx context.Context, taskID, stream string, ch *apiv1.OutputChunk, line []byte) {
	if n.failed || n.req.Session == nil {
		return
	}
	n.n++
	msg := text(line)
	meta := mcp.Meta{"task_id": taskID, "stream": stream, "seq": ch.GetSeq(), "time": ch.GetTime().AsTime().Format(time.RFC3339Nano)}
	if n.token != nil {
		err := n.req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{Meta: meta, ProgressToken: n.token, Progress: n.n, Message: msg})
		if n.check(err) {
			return
		}
	}
	level := mcp.LoggingLevel("info")
	if stream == "stderr" {
		level = "warning"
	}
	err := n.req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: level, Logger: "task/" + taskID, Data: map[string]any{"stream": stream, "seq": ch.GetSeq(), "line": msg}})
	n.check(err)
}

// status reports a phase (importing, fetching…) as a progress notification.
func (n *notifier) status(ctx context.Context, msg string) {
	if n.failed || n.token == nil || n.req.Session == nil {
		return
	}
	n.n++
	n.check(n.req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: n.token, Progress: n.n, Message: msg}))
}

func (n *notifier) check(err error) bool {
	if err == nil {
		return false
	}
	if !errors.Is(err, context.Canceled) {
		n.log.Debug("notification not sent; not sending more for this call", "err", err)
	}
	n.failed = true
	return true
}

// errNoTask is returned when an event stream ends without naming its task.
var errNoTask = fmt.Errorf("the peer did not say which task it started: %w", errdefs.ErrUnavailable)
