//lint:file-ignore SA1019 the tests check the logging notifications the server still sends.

package mcpserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/node/datadir"
	"github.com/cortex-peer/cortex-peer/node/mcpserver"
	"github.com/cortex-peer/cortex-peer/testnet"
)

func TestMain(m *testing.M) { testnet.VerifyNoLeaks(m) }

// env is a 3-peer testnet whose first peer serves MCP over HTTP.
type env struct {
	tn    *testnet.Net
	api   *apiclient.Client
	url   string
	token string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	tn := testnet.New(t, 3, testnet.WithConfig(func(i int, cfg *node.Config) {
		if i == 0 {
			cfg.MCPListen = "127.0.0.1:0"
		}
	}))
	if err := tn.WaitMesh(testnet.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := apiclient.Dial(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	d, fc, err := datadir.Load(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := d.Token(fc)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{tn: tn, api: c, url: tn.Peers[0].Node.MCPURL(), token: tok}
	if e.url == "" {
		t.Fatal("peer 1 serves no MCP endpoint")
	}
	return e
}

// notes records the notifications a client receives.
type notes struct {
	mu       sync.Mutex
	progress []*mcp.ProgressNotificationParams
	at       []time.Time
	logs     []*mcp.LoggingMessageParams
	onLine   func(p *mcp.ProgressNotificationParams)
}

func (n *notes) lines() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, p := range n.progress {
		if _, ok := p.Meta["seq"]; ok {
			out = append(out, p.Message)
		}
	}
	return out
}

func (n *notes) options() *mcp.ClientOptions {
	return &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			now := time.Now()
			n.mu.Lock()
			n.progress = append(n.progress, r.Params)
			n.at = append(n.at, now)
			f := n.onLine
			n.mu.Unlock()
			if f != nil {
				f(r.Params)
			}
		},
		LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
			n.mu.Lock()
			n.logs = append(n.logs, r.Params)
			n.mu.Unlock()
		},
	}
}

// bearer adds the token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// connect returns a client session over the named transport: "stdio" is the
// server on a pair of pipes as `cortex-peer mcp` serves stdin and stdout,
// "http" is the peer's streamable HTTP endpoint.
func (e *env) connect(t testing.TB, transport string, n *notes) *mcp.ClientSession {
	t.Helper()
	if n == nil {
		n = &notes{}
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "cortex-test", Version: "1"}, n.options())
	var ct mcp.Transport
	switch transport {
	case "stdio":
		srv := mcpserver.New(e.api, mcpserver.Options{Version: "test", WorkDir: t.TempDir()})
		cr, sw := io.Pipe()
		sr, cw := io.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx, &mcpserver.StdioTransport{In: sr, Out: sw}) }()
		t.Cleanup(func() {
			cancel()
			cw.Close()
			<-done
		})
		ct = &mcp.IOTransport{Reader: cr, Writer: cw}
	case "http":
		hc := &http.Client{Transport: bearer{e.token, http.DefaultTransport}}
		t.Cleanup(hc.CloseIdleConnections)
		ct = &mcp.StreamableClientTransport{Endpoint: e.url, HTTPClient: hc, DisableStandaloneSSE: true}
	}
	cs, err := client.Connect(testnet.Context(t, 10*time.Second), ct, nil)
	if err != nil {
		t.Fatalf("connect over %s: %v", transport, err)
	}
	t.Cleanup(func() { cs.Close() })
	if err := cs.SetLoggingLevel(testnet.Context(t, 5*time.Second), &mcp.SetLoggingLevelParams{Level: "info"}); err != nil {
		t.Fatal(err)
	}
	return cs
}

func call(t testing.TB, ctx context.Context, cs *mcp.ClientSession, tool string, args any, progressToken any) (*mcp.CallToolResult, error) {
	t.Helper()
	p := &mcp.CallToolParams{Name: tool, Arguments: args}
	if progressToken != nil {
		p.SetProgressToken(progressToken)
	}
	return cs.CallTool(ctx, p)
}

// decode calls tool, fails on any error, and decodes its structured result.
func decode[T any](t testing.TB, cs *mcp.ClientSession, tool string, args any) T {
	t.Helper()
	res, err := call(t, testnet.Context(t, 2*time.Minute), cs, tool, args, nil)
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	if res.IsError {
		t.Fatalf("%s: tool error %s", tool, textOf(res))
	}
	var out T
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: decode %s: %v", tool, b, err)
	}
	return out
}

func textOf(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

var transports = []string{"stdio", "http"}

var wantTools = []string{"artifact_get", "artifact_put", "artifact_read", "artifact_unpin", "browser_click", "browser_close", "browser_console", "browser_downloads", "browser_evaluate",
	"browser_list", "browser_navigate", "browser_network", "browser_open", "browser_pdf", "browser_screenshot",
	"browser_snapshot", "browser_state_save", "browser_tabs", "browser_type", "browser_upload",
	"cancel_task", "get_task", "list_peers", "list_tasks",
	"lsp_definition", "lsp_diagnostics", "lsp_format", "lsp_hover", "lsp_references", "lsp_rename", "lsp_servers",
	"lsp_symbols", "lsp_verify", "peer_drain", "peer_eligible", "run_task", "start_task",
	"task_logs", "update_rollback", "update_status", "workspace_add", "workspace_diff", "workspace_get", "workspace_merge", "workspace_verify"}

// TestMCP drives every tool over both transports against one 3-peer testnet
// with real containerd.
func TestMCP(t *testing.T) {
	e := newEnv(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Run("ListTools", func(t *testing.T) { testListTools(t, e, tr) })
			t.Run("RunStreamsOutput", func(t *testing.T) { testRunStreams(t, e, tr) })
			t.Run("Cancel", func(t *testing.T) { testCancel(t, e, tr) })
			t.Run("LargeLogPaged", func(t *testing.T) { testLargeLog(t, e, tr) })
			t.Run("Errors", func(t *testing.T) { testErrors(t, e, tr) })
			t.Run("MissingProgram", func(t *testing.T) { testMissingProgram(t, e, tr) })
			t.Run("DetachedAndPeers", func(t *testing.T) { testDetached(t, e, tr) })
			t.Run("Workspaces", func(t *testing.T) { testWorkspaces(t, e, tr) })
			t.Run("Artifacts", func(t *testing.T) { testArtifacts(t, e, tr) })
		})
	}
}

func testListTools(t *testing.T, e *env, tr string) {
	cs := e.connect(t, tr, nil)
	res, err := cs.ListTools(testnet.Context(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
		if tool.Description == "" || tool.InputSchema == nil {
			t.Errorf("tool %s has no description or input schema", tool.Name)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, wantTools) {
		t.Fatalf("tools %v, want %v", names, wantTools)
	}
}

// Output lines arrive as notifications while the task runs, before the call
// returns, in order.
func testRunStreams(t *testing.T, e *env, tr string) {
	n := &notes{}
	var returned atomic.Bool
	var firstEarly atomic.Bool
	n.onLine = func(p *mcp.ProgressNotificationParams) {
		if p.Message == "first" && !returned.Load() {
			firstEarly.Store(true)
		}
	}
	cs := e.connect(t, tr, n)
	res, err := call(t, testnet.Context(t, time.Minute), cs, "run_task", map[string]any{
		"command": []string{"sh", "-c", "echo first; sleep 1; echo second; echo oops >&2; exit 3"},
		"peer":    e.tn.Peers[1].Node.ID().String(),
	}, "tok-"+tr)
	returned.Store(true)
	if err != nil || res.IsError {
		t.Fatalf("run_task: %v %s", err, textOf(res))
	}
	if !firstEarly.Load() {
		t.Fatal("the first line was not notified before the call returned")
	}
	if got := n.lines(); !slices.Equal(got, []string{"first", "second", "oops"}) && !slices.Equal(got, []string{"first", "oops", "second"}) {
		t.Fatalf("line notifications %q", got)
	}
	var out mcpserver.RunOutput
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.ExitCode != 3 || out.Stdout.Text != "first\nsecond\n" || out.Stderr.Text != "oops\n" || out.Executor != e.tn.Peers[1].Node.ID().String() || out.TaskID == "" {
		t.Fatalf("result %s", b)
	}
	n.mu.Lock()
	logs := len(n.logs)
	n.mu.Unlock()
	// Over stdio the go-sdk client negotiates the sessionless protocol,
	// where a log level travels in each request's _meta, not in
	// logging/setLevel; progress notifications are the channel that counts.
	if tr == "http" && logs < 3 {
		t.Fatalf("%d log notifications, want one per line", logs)
	}
}

// Cancelling the call from the client kills the task.
func testCancel(t *testing.T, e *env, tr string) {
	n := &notes{}
	started := make(chan string, 1)
	n.onLine = func(p *mcp.ProgressNotificationParams) {
		if p.Message == "started" {
			select {
			case started <- fmt.Sprint(p.Meta["task_id"]):
			default:
			}
		}
	}
	cs := e.connect(t, tr, n)
	ctx, cancel := context.WithCancel(testnet.Context(t, time.Minute))
	errc := make(chan error, 1)
	go func() {
		_, err := call(t, ctx, cs, "run_task", map[string]any{"command": []string{"sh", "-c", "echo started; sleep 60"}}, 1)
		errc <- err
	}()
	var id string
	select {
	case id = <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("no output from the task")
	}
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("a cancelled call returned no error")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := e.api.GetTask(testnet.Context(t, 10*time.Second), id)
		if err != nil {
			t.Fatal(err)
		}
		if r := info.GetResult(); r != nil {
			if !r.GetCancelled() {
				t.Fatalf("task ended but not cancelled: %+v", info)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s still %s 30 s after the call was cancelled", id, info.GetState())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Output over the threshold comes back as head, tail and a reference;
// task_logs pages through all of it.
func testLargeLog(t *testing.T, e *env, tr string) {
	cs := e.connect(t, tr, nil)
	const lines = 20000
	out := decode[mcpserver.RunOutput](t, cs, "run_task", map[string]any{
		"command": []string{"sh", "-c", fmt.Sprintf("i=1; while [ $i -le %d ]; do echo \"line $i\"; i=$((i+1)); done", lines)},
	})
	var want strings.Builder
	for i := 1; i <= lines; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	so := out.Stdout
	if !so.Truncated || so.Ref == nil || so.Text != "" || so.Bytes != uint64(want.Len()) || so.Lines != lines {
		t.Fatalf("stdout %+v", so)
	}
	if !strings.HasPrefix(want.String(), so.Head) || !strings.HasSuffix(want.String(), so.Tail) || len(so.Head) == 0 || len(so.Tail) == 0 || len(so.Head)+len(so.Tail) > 16<<10 {
		t.Fatalf("head %d bytes, tail %d bytes do not match the output", len(so.Head), len(so.Tail))
	}
	var got strings.Builder
	from, off, pages := so.Ref.FromSeq, 0, 0
	for {
		page := decode[mcpserver.LogsOutput](t, cs, "task_logs", map[string]any{"task_id": so.Ref.TaskID, "stream": so.Ref.Stream, "from_seq": from, "from_offset": off, "max_bytes": 32 << 10})
		pages++
		if page.Bytes > 32<<10 {
			t.Fatalf("page of %d bytes", page.Bytes)
		}
		for _, c := range page.Chunks {
			got.WriteString(c.Data)
		}
		if !page.HasMore {
			break
		}
		from, off = page.NextSeq, page.NextOffset
	}
	if got.String() != want.String() {
		t.Fatalf("paged %d bytes in %d pages, want %d bytes", got.Len(), pages, want.Len())
	}
	if pages < 2 {
		t.Fatalf("%d pages", pages)
	}
	tail := decode[mcpserver.LogsOutput](t, cs, "task_logs", map[string]any{"task_id": so.Ref.TaskID, "tail": 1})
	if len(tail.Chunks) != 1 || !strings.HasSuffix(tail.Chunks[0].Data, fmt.Sprintf("line %d\n", lines)) || tail.Chunks[0].Seq != so.Ref.ToSeq || tail.Bytes > 16<<10 {
		t.Fatalf("tail %+v", tail)
	}
}

// Errors are tool errors with a stable code, and the session goes on.
func testErrors(t *testing.T, e *env, tr string) {
	cs := e.connect(t, tr, nil)
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	linked := filepath.Join(t.TempDir(), "etc") // inside the temp dir, leading to /etc
	if err := os.Symlink("/etc", linked); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll("/etc/cortex-mcp-test") }) // only if a check failed
	cases := []struct {
		tool string
		args map[string]any
		code string
	}{
		{"get_task", map[string]any{"task_id": "no-such-task"}, "not_found:"},
		{"get_task", map[string]any{"task_id": "Not A Task!"}, "invalid_argument:"},
		{"run_task", map[string]any{"command": []string{}}, "invalid_argument:"},
		{"run_task", map[string]any{"command": []string{"true"}, "timeout": "soon"}, "invalid_argument:"},
		{"run_task", map[string]any{"command": []string{"true"}, "image": "cortex/no-such-image:1"}, ""},
		{"task_logs", map[string]any{"task_id": "x", "stream": "stdin"}, "invalid_argument:"},
		{"workspace_add", map[string]any{"path": missing}, "not_found:"},
		{"run_task", map[string]any{"command": []string{"true"}, "workspace": missing}, "not_found:"},
		// Paths outside the peer's [api] allowed_roots (its user's home and
		// the temp dir by default) are refused by the API the tools call.
		{"workspace_add", map[string]any{"path": "/no/such/dir"}, "permission_denied:"},
		{"run_task", map[string]any{"command": []string{"true"}, "workspace": "/etc"}, "permission_denied:"},
		{"workspace_merge", map[string]any{"base": "bafkqaaa", "theirs": "bafkqaaa", "path": "/etc"}, "permission_denied:"},
		{"workspace_get", map[string]any{"cid": "bafkqaaa", "path": "/etc/cortex-mcp-test"}, "permission_denied:"},
		{"workspace_get", map[string]any{"cid": "bafkqaaa", "path": filepath.Join(linked, "cortex-mcp-test")}, "permission_denied:"},
		{"workspace_diff", map[string]any{"from": "notacid", "to": "notacid"}, "invalid_argument:"},
		{"cancel_task", map[string]any{"task_id": "no-such-task"}, "not_found:"},
		{"run_task", map[string]any{"comand": []string{"true"}}, ""}, // schema violation
	}
	for _, c := range cases {
		res, err := call(t, testnet.Context(t, time.Minute), cs, c.tool, c.args, nil)
		if err != nil {
			t.Fatalf("%s %v: protocol error %v, want a tool error", c.tool, c.args, err)
		}
		msg := textOf(res)
		if !res.IsError || !strings.HasPrefix(msg, c.code) {
			t.Errorf("%s %v: IsError=%v %q, want code %q", c.tool, c.args, res.IsError, msg, c.code)
		}
	}
	if _, err := cs.ListTools(testnet.Context(t, 10*time.Second), nil); err != nil {
		t.Fatalf("session broken after errors: %v", err)
	}
}

// A program the image lacks ends the task with 127 and a plain message on
// stderr, as in a shell, not as a tool error full of runc's internals.
func testMissingProgram(t *testing.T, e *env, tr string) {
	cs := e.connect(t, tr, nil)
	run := decode[mcpserver.RunOutput](t, cs, "run_task", map[string]any{"command": []string{"nosuchcmd"}})
	if run.ExitCode != 127 || !strings.Contains(run.Stderr.Text, "executable file not found: nosuchcmd") || run.Error != "" {
		t.Fatalf("run_task nosuchcmd: %+v", run)
	}
}

// start_task returns at once; get_task, list_tasks and cancel_task follow it.
func testDetached(t *testing.T, e *env, tr string) {
	cs := e.connect(t, tr, nil)
	peers := decode[mcpserver.ListPeersOutput](t, cs, "list_peers", map[string]any{})
	if len(peers.Peers) != 2 { // the others; this peer is a candidate too
		t.Fatalf("list_peers: %+v", peers)
	}
	st := decode[mcpserver.StartOutput](t, cs, "start_task", map[string]any{"command": []string{"sh", "-c", "echo hi; sleep 60"}, "labels": map[string]string{"testnet": "peer3"}})
	if st.TaskID == "" || st.Executor != e.tn.Peers[2].Node.ID().String() {
		t.Fatalf("start_task %+v", st)
	}
	list := decode[mcpserver.ListTasksOutput](t, cs, "list_tasks", map[string]any{"limit": 5})
	if len(list.Tasks) == 0 || list.Tasks[0].TaskID != st.TaskID {
		t.Fatalf("list_tasks: newest is not %s: %+v", st.TaskID, list.Tasks)
	}
	// Cancel it once it has written (a task cancelled while its process is
	// being started ends failed, not cancelled).
	deadline := time.Now().Add(30 * time.Second)
	for len(decode[mcpserver.LogsOutput](t, cs, "task_logs", map[string]any{"task_id": st.TaskID}).Chunks) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("task never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	decode[mcpserver.CancelOutput](t, cs, "cancel_task", map[string]any{"task_id": st.TaskID})
	for {
		info := decode[mcpserver.TaskInfo](t, cs, "get_task", map[string]any{"task_id": st.TaskID})
		if info.Result != nil {
			if !info.Result.Cancelled {
				t.Fatalf("get_task %+v", info)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task still %s", info.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A workspace goes in by path or by CID; its change comes back as a root
// that workspace_diff, workspace_get and workspace_merge use.
func testWorkspaces(t *testing.T, e *env, tr string) {
	cs := e.connect(t, tr, nil)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	add := decode[mcpserver.AddOutput](t, cs, "workspace_add", map[string]any{"path": dir})
	if add.CID == "" || add.Files != 1 {
		t.Fatalf("workspace_add %+v", add)
	}
	run := decode[mcpserver.RunOutput](t, cs, "run_task", map[string]any{
		"command": []string{"sh", "-c", "cat a.txt; echo b > b.txt"}, "workspace": add.CID,
	})
	if run.ExitCode != 0 || run.Stdout.Text != "a\n" || run.ResultRoot == "" || run.BaseRoot != add.CID {
		t.Fatalf("run_task on a CID: %+v", run)
	}
	diff := decode[mcpserver.DiffOutput](t, cs, "workspace_diff", map[string]any{"from": add.CID, "to": run.ResultRoot})
	if len(diff.Changes) != 1 || diff.Changes[0].Path != "b.txt" || diff.Changes[0].Kind != "added" {
		t.Fatalf("workspace_diff %+v", diff)
	}
	dest := filepath.Join(t.TempDir(), "copy")
	got := decode[mcpserver.GetOutput](t, cs, "workspace_get", map[string]any{"cid": run.ResultRoot, "path": dest})
	if b, _ := os.ReadFile(filepath.Join(dest, "b.txt")); string(b) != "b\n" || got.Files != 2 {
		t.Fatalf("workspace_get %+v, b.txt %q", got, b)
	}
	merge := decode[mcpserver.MergeOutput](t, cs, "workspace_merge", map[string]any{"base": add.CID, "theirs": run.ResultRoot, "path": dir})
	if b, _ := os.ReadFile(filepath.Join(dir, "b.txt")); string(b) != "b\n" || !slices.Equal(merge.Report.Applied, []string{"b.txt"}) {
		t.Fatalf("workspace_merge %+v, b.txt %q", merge, b)
	}
	// An artifact comes back by CID, readable with artifact_read.
	art := decode[mcpserver.RunOutput](t, cs, "run_task", map[string]any{
		"command": []string{"sh", "-c", "mkdir -p dist && echo built > dist/app"}, "workspace": add.CID, "artifacts": []string{"dist/app"},
	})
	if len(art.Artifacts) != 1 || art.Artifacts[0].Path != "dist/app" || art.Artifacts[0].CID == "" {
		t.Fatalf("run_task artifacts: %+v", art)
	}
	if res, err := call(t, testnet.Context(t, 30*time.Second), cs, "artifact_read", map[string]any{"cid": art.Artifacts[0].CID}, nil); err != nil || textOf(res) != "built\n" {
		t.Fatalf("artifact_read of a task's artifact: %v %q", err, textOf(res))
	}
	// By path, the change merges straight back.
	run = decode[mcpserver.RunOutput](t, cs, "run_task", map[string]any{"command": []string{"sh", "-c", "echo c > c.txt"}, "workspace": dir})
	if b, _ := os.ReadFile(filepath.Join(dir, "c.txt")); string(b) != "c\n" || run.Merge == nil {
		t.Fatalf("run_task on a path: %+v, c.txt %q", run, b)
	}
}

// A file put is read back by range (text, paged), an image comes back as
// an image, and artifact_get writes it to a path.
func testArtifacts(t *testing.T, e *env, tr string) {
	cs := e.connect(t, tr, nil)
	dir := t.TempDir()
	text := strings.Repeat("héllo, artifact\n", 10000) // 160 KB, multibyte runes
	if err := os.WriteFile(filepath.Join(dir, "log.txt"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	put := decode[mcpserver.ArtifactPutOutput](t, cs, "artifact_put", map[string]any{"path": filepath.Join(dir, "log.txt")})
	if put.CID == "" || put.Bytes != uint64(len(text)) {
		t.Fatalf("artifact_put %+v", put)
	}
	var read strings.Builder
	offset := uint64(0)
	for pages := 0; ; pages++ {
		res, err := call(t, testnet.Context(t, 30*time.Second), cs, "artifact_read", map[string]any{"cid": put.CID, "offset": offset}, nil)
		if err != nil || res.IsError {
			t.Fatalf("artifact_read at %d: %v %s", offset, err, textOf(res))
		}
		var out mcpserver.ArtifactReadOutput
		if b, _ := json.Marshal(res.StructuredContent); json.Unmarshal(b, &out) != nil || out.Kind != "text" || out.Size != uint64(len(text)) {
			t.Fatalf("artifact_read at %d: %+v", offset, res.StructuredContent)
		}
		read.WriteString(textOf(res))
		if out.NextOffset == 0 {
			break
		}
		offset = out.NextOffset
		if pages > 10 {
			t.Fatal("artifact_read pages on forever")
		}
	}
	if read.String() != text {
		t.Fatalf("artifact_read paged back %d bytes, want the %d put", read.Len(), len(text))
	}
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 100)...)
	if err := os.WriteFile(filepath.Join(dir, "shot.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	img := decode[mcpserver.ArtifactPutOutput](t, cs, "artifact_put", map[string]any{"path": filepath.Join(dir, "shot.png")})
	res, err := call(t, testnet.Context(t, 30*time.Second), cs, "artifact_read", map[string]any{"cid": img.CID}, nil)
	if err != nil || len(res.Content) != 1 {
		t.Fatalf("artifact_read of a PNG: %v", err)
	}
	if ic, ok := res.Content[0].(*mcp.ImageContent); !ok || ic.MIMEType != "image/png" {
		t.Fatalf("artifact_read of a PNG: %T", res.Content[0])
	}
	dest := filepath.Join(t.TempDir(), "log.txt")
	got := decode[mcpserver.ArtifactGetOutput](t, cs, "artifact_get", map[string]any{"cid": put.CID, "path": dest})
	if b, _ := os.ReadFile(dest); string(b) != text || got.Bytes != uint64(len(text)) {
		t.Fatalf("artifact_get %+v", got)
	}
	if v := decode[mcpserver.VerifyOutput](t, cs, "workspace_verify", map[string]any{"cid": put.CID}); !v.OK || v.Blocks == 0 {
		t.Fatalf("workspace_verify %+v", v)
	}
	if un := decode[mcpserver.ArtifactUnpinOutput](t, cs, "artifact_unpin", map[string]any{"cid": put.CID}); !un.Unpinned {
		t.Fatalf("artifact_unpin %+v", un)
	}
	if res, err := call(t, testnet.Context(t, 30*time.Second), cs, "artifact_unpin", map[string]any{"cid": put.CID}, nil); err == nil && !res.IsError {
		t.Fatal("a second artifact_unpin of the same CID succeeded")
	} else if res != nil && !strings.Contains(textOf(res), "not_found") {
		t.Fatalf("a second artifact_unpin: %s", textOf(res))
	}
}

// peer_drain with stay makes the peer ineligible (the mesh sees it
// draining) and peer_eligible undoes it.
func TestMCPDrain(t *testing.T) {
	e := newEnv(t)
	cs := e.connect(t, "stdio", nil)
	d := decode[mcpserver.DrainOutput](t, cs, "peer_drain", map[string]any{"stay": true, "deadline": "5s"})
	if d.Completed != 0 || d.Returned != 0 || d.Stopping {
		t.Fatalf("peer_drain of an idle peer with stay: %+v", d)
	}
	other, err := apiclient.Dial(e.tn.Peers[1].Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	testnet.Eventually(t, "peer 2 to see peer 1 draining", 15*time.Second, func() bool {
		ps, err := other.Peers(t.Context(), false)
		if err != nil {
			return false
		}
		for _, p := range ps {
			if p.GetId() == e.tn.Peers[0].Node.ID().String() {
				return p.GetDraining()
			}
		}
		return false
	})
	if el := decode[mcpserver.EligibleOutput](t, cs, "peer_eligible", map[string]any{}); !el.WasDraining {
		t.Fatalf("peer_eligible after a drain: %+v", el)
	}
	if el := decode[mcpserver.EligibleOutput](t, cs, "peer_eligible", map[string]any{}); el.WasDraining {
		t.Fatalf("peer_eligible twice: %+v", el)
	}
}
