package mcpserver

import (
	"context"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// SessionInput names a browser session.
type SessionInput struct {
	Session string `json:"session" jsonschema:"the session id browser_open returned (ID@PEER)"`
}

// BrowserOpenInput is browser_open's input.
type BrowserOpenInput struct {
	Name   string            `json:"name,omitempty" jsonschema:"a name for the session; with persistent profiles on the hosting peer, its profile"`
	Peer   string            `json:"peer,omitempty" jsonschema:"open it on this peer (an id from list_peers)"`
	Labels map[string]string `json:"labels,omitempty" jsonschema:"open it on a peer with Chromium and these labels"`
	State  string            `json:"state,omitempty" jsonschema:"a CID from browser_state_save: restores cookies and localStorage"`
}

// BrowserSession is one session.
type BrowserSession struct {
	Session   string `json:"session"`
	Peer      string `json:"peer"`
	Name      string `json:"name,omitempty"`
	Owner     string `json:"owner,omitempty"`
	URL       string `json:"url,omitempty"`
	Title     string `json:"title,omitempty"`
	ExpiresAt string `json:"expires_at,omitempty" jsonschema:"when its lease ends unless it is used (each call renews it)"`
}

func sessionOut(s *apiv1.BrowserSession) BrowserSession {
	return BrowserSession{Session: s.GetSession(), Peer: s.GetPeer(), Name: s.GetName(), Owner: s.GetOwner(), URL: s.GetUrl(), Title: s.GetTitle(),
		ExpiresAt: s.GetExpiresAt().AsTime().Format(time.RFC3339)}
}

// BrowserNavigateInput is browser_navigate's input.
type BrowserNavigateInput struct {
	Session string `json:"session" jsonschema:"the session id"`
	URL     string `json:"url" jsonschema:"an absolute http or https URL"`
}

// BrowserPage says where the page is after a call.
type BrowserPage struct {
	URL       string `json:"url"`
	Title     string `json:"title"`
	Loaded    bool   `json:"loaded" jsonschema:"false: still loading when the navigate timeout ended; what loaded is there"`
	Recovered bool   `json:"recovered,omitempty" jsonschema:"the tab had crashed or Chromium had died: it was reopened at its last URL with its last state"`
}

func pageOut(p *apiv1.BrowserPage) BrowserPage {
	return BrowserPage{URL: p.GetUrl(), Title: p.GetTitle(), Loaded: p.GetLoaded(), Recovered: p.GetRecovered()}
}

// BrowserSnapshotInput is browser_snapshot's input.
type BrowserSnapshotInput struct {
	Session string `json:"session" jsonschema:"the session id"`
	Full    bool   `json:"full,omitempty" jsonschema:"also store the whole tree past the budget and return its CID"`
	Budget  uint32 `json:"budget,omitempty" jsonschema:"bytes of text (default 32768, about 8000 tokens)"`
}

// BrowserSnapshot is browser_snapshot's structured result; its text is the
// tool's text content.
type BrowserSnapshot struct {
	URL        string `json:"url"`
	Title      string `json:"title"`
	Generation uint64 `json:"generation"`
	Refs       uint32 `json:"refs"`
	Truncated  bool   `json:"truncated"`
	FullCID    string `json:"full_cid,omitempty"`
	Recovered  bool   `json:"recovered,omitempty"`
}

// BrowserActInput names an element and what to type into it.
type BrowserActInput struct {
	Session  string `json:"session" jsonschema:"the session id"`
	Ref      string `json:"ref,omitempty" jsonschema:"a ref of the last snapshot, e.g. e7"`
	Selector string `json:"selector,omitempty" jsonschema:"a CSS selector, instead of a ref"`
}

// BrowserTypeInput is browser_type's input.
type BrowserTypeInput struct {
	BrowserActInput
	Text   string `json:"text" jsonschema:"the text to put in the field"`
	Submit bool   `json:"submit,omitempty" jsonschema:"press Enter after it"`
}

// BrowserEvaluateInput is browser_evaluate's input.
type BrowserEvaluateInput struct {
	Session    string `json:"session" jsonschema:"the session id"`
	Expression string `json:"expression" jsonschema:"a JavaScript expression; a promise is awaited"`
}

// BrowserScreenshotInput is browser_screenshot's input.
type BrowserScreenshotInput struct {
	Session  string `json:"session" jsonschema:"the session id"`
	FullPage bool   `json:"full_page,omitempty" jsonschema:"the whole page, not the viewport"`
}

// BrowserUploadInput is browser_upload's input.
type BrowserUploadInput struct {
	BrowserActInput
	Path string `json:"path,omitempty" jsonschema:"a file on the peer's machine"`
	CID  string `json:"cid,omitempty" jsonschema:"or a file of the mesh by CID"`
	Name string `json:"name,omitempty" jsonschema:"the file's name as the page sees it"`
}

// BrowserArtifact is a file the bridge stored as a DAG.
type BrowserArtifact struct {
	CID       string `json:"cid" jsonschema:"fetch it from any peer with workspace_get"`
	Size      uint64 `json:"size"`
	MediaType string `json:"media_type,omitempty"`
	Peer      string `json:"peer"`
	Recovered bool   `json:"recovered,omitempty"`
}

func artifactOut(a *apiv1.BrowserArtifact) BrowserArtifact {
	return BrowserArtifact{CID: a.GetCid(), Size: a.GetSize(), MediaType: a.GetMediaType(), Peer: a.GetPeer(), Recovered: a.GetRecovered()}
}

// BrowserList is what the listing tools return.
type BrowserList struct {
	Sessions    []BrowserSession  `json:"sessions,omitempty"`
	Tabs        []BrowserTab      `json:"tabs,omitempty"`
	Downloads   []BrowserDownload `json:"downloads,omitempty"`
	Console     []BrowserConsole  `json:"console,omitempty"`
	Network     []BrowserRequest  `json:"network,omitempty"`
	Unreachable map[string]string `json:"unreachable,omitempty"`
}

// BrowserTab is one tab.
type BrowserTab struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Title  string `json:"title"`
	Active bool   `json:"active"`
}

// BrowserDownload is one download.
type BrowserDownload struct {
	Name  string `json:"name"`
	URL   string `json:"url"`
	State string `json:"state"`
	Bytes uint64 `json:"bytes"`
	CID   string `json:"cid,omitempty"`
}

// BrowserConsole is one console message.
type BrowserConsole struct {
	Time  string `json:"time"`
	Level string `json:"level"`
	Text  string `json:"text"`
}

// BrowserRequest is one request of the page.
type BrowserRequest struct {
	Method string `json:"method,omitempty"`
	URL    string `json:"url"`
	Status int64  `json:"status,omitempty"`
	Type   string `json:"type,omitempty"`
	Error  string `json:"error,omitempty"`
}

// ClosedOutput is browser_close's result.
type ClosedOutput struct {
	Closed bool `json:"closed"`
}

// browserAPI calls the peer's browser service, as a tool error on failure.
func browserAPI[T any](ctx context.Context, _ *Server, session string, needSession bool, call func(context.Context) (*connect.Response[T], error)) (*T, error) {
	if needSession && session == "" {
		return nil, invalid("session is required (from browser_open)")
	}
	resp, err := call(ctx)
	if err != nil {
		return nil, toolError(err)
	}
	return resp.Msg, nil
}

func (s *Server) addBrowserTools() {
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:  "browser_open",
		Title: "Open a browser session",
		Description: `Open a headless Chromium session (its own cookies, storage and cache) that lives on a peer until browser_close or 30 idle minutes, whatever happens to this client. Returns its session id, which every other browser_ tool takes, from any peer.
peer or labels place it on another peer (default: this one); state restores a browser_state_save CID (a login moves between peers).`,
		Annotations: &mcp.ToolAnnotations{OpenWorldHint: new(true)},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in BrowserOpenInput) (*mcp.CallToolResult, BrowserSession, error) {
		m, err := browserAPI(ctx, s, "", false, func(ctx context.Context) (*connect.Response[apiv1.BrowserSession], error) {
			return s.api.Browser().Open(ctx, connect.NewRequest(&apiv1.BrowserOpenRequest{Name: in.Name, Peer: in.Peer, Labels: in.Labels, State: in.State}))
		})
		if err != nil {
			return nil, BrowserSession{}, err
		}
		return nil, sessionOut(m), nil
	})
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "browser_navigate",
		Title:       "Load a URL in a session",
		Description: `Load an http(s) URL and wait for it to load (at most the peer's navigate timeout, 30 s; then it returns with what loaded, loaded: false). Then call browser_snapshot to see the page.`,
		Annotations: &mcp.ToolAnnotations{OpenWorldHint: new(true)},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in BrowserNavigateInput) (*mcp.CallToolResult, BrowserPage, error) {
		m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserPage], error) {
			return s.api.Browser().Navigate(ctx, connect.NewRequest(&apiv1.BrowserNavigateRequest{Session: in.Session, Url: in.URL}))
		})
		if err != nil {
			return nil, BrowserPage{}, err
		}
		return nil, pageOut(m), nil
	})
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:  "browser_snapshot",
		Title: "Read the page as an accessibility tree with refs",
		Description: `Return the page as text, one element a line (role "name"), with [ref=eN] on every element you can click or type into; pass a ref to browser_click or browser_type.
It stays within a budget (32 KiB, about 8000 tokens) and says what it left out; full: true also stores the whole tree and returns its CID. A ref from an older snapshot fails with stale_ref: take a new snapshot.`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in BrowserSnapshotInput) (*mcp.CallToolResult, BrowserSnapshot, error) {
		m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserSnapshotResponse], error) {
			return s.api.Browser().Snapshot(ctx, connect.NewRequest(&apiv1.BrowserSnapshotRequest{Session: in.Session, Full: in.Full, Budget: in.Budget}))
		})
		if err != nil {
			return nil, BrowserSnapshot{}, err
		}
		out := BrowserSnapshot{URL: m.GetPage().GetUrl(), Title: m.GetPage().GetTitle(), Generation: m.GetGeneration(), Refs: m.GetRefs(),
			Truncated: m.GetTruncated(), FullCID: m.GetFull().GetCid(), Recovered: m.GetPage().GetRecovered()}
		var head strings.Builder
		fmt.Fprintf(&head, "# %s — %s\n", out.URL, out.Title)
		if out.Recovered {
			head.WriteString("# recovered: the tab was gone and was reopened at its last URL\n")
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: head.String() + m.GetText()}}}, out, nil
	})
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "browser_click",
		Title:       "Click an element",
		Description: `Click the element a ref of the last browser_snapshot (or a CSS selector) names. Returns where the page is afterwards.`,
		Annotations: &mcp.ToolAnnotations{OpenWorldHint: new(true)},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in BrowserActInput) (*mcp.CallToolResult, BrowserPage, error) {
		m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserPage], error) {
			return s.api.Browser().Click(ctx, connect.NewRequest(&apiv1.BrowserActRequest{Session: in.Session, Ref: in.Ref, Selector: in.Selector}))
		})
		if err != nil {
			return nil, BrowserPage{}, err
		}
		return nil, pageOut(m), nil
	})
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "browser_type",
		Title:       "Type into a field",
		Description: `Put text into the field a ref (or a CSS selector) names, as typing would (input and change events); submit: true presses Enter after it.`,
		Annotations: &mcp.ToolAnnotations{OpenWorldHint: new(true)},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in BrowserTypeInput) (*mcp.CallToolResult, BrowserPage, error) {
		m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserPage], error) {
			return s.api.Browser().Type(ctx, connect.NewRequest(&apiv1.BrowserActRequest{Session: in.Session, Ref: in.Ref, Selector: in.Selector, Text: in.Text, Submit: in.Submit}))
		})
		if err != nil {
			return nil, BrowserPage{}, err
		}
		return nil, pageOut(m), nil
	})
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "browser_evaluate",
		Title:       "Run JavaScript in the page",
		Description: `Evaluate a JavaScript expression in the page (a promise is awaited) and return its value as JSON.`,
		Annotations: &mcp.ToolAnnotations{OpenWorldHint: new(true)},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in BrowserEvaluateInput) (*mcp.CallToolResult, map[string]any, error) {
		m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserEvaluateResponse], error) {
			return s.api.Browser().Evaluate(ctx, connect.NewRequest(&apiv1.BrowserEvaluateRequest{Session: in.Session, Expression: in.Expression}))
		})
		if err != nil {
			return nil, nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: m.GetValue()}}}, map[string]any{"value": m.GetValue(), "recovered": m.GetRecovered()}, nil
	})
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "browser_screenshot",
		Title:       "Take a screenshot",
		Description: `Take a PNG of the viewport (full_page: the whole page). It is stored as a DAG on the hosting peer and returned by CID and size, and as an image when it is small (up to 256 KiB).`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in BrowserScreenshotInput) (*mcp.CallToolResult, BrowserArtifact, error) {
		m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserArtifact], error) {
			return s.api.Browser().Screenshot(ctx, connect.NewRequest(&apiv1.BrowserScreenshotRequest{Session: in.Session, FullPage: in.FullPage}))
		})
		if err != nil {
			return nil, BrowserArtifact{}, err
		}
		res := &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("screenshot %s (%d bytes, PNG)", m.GetCid(), m.GetSize())}}}
		if m.GetInline() != nil {
			res.Content = append(res.Content, &mcp.ImageContent{Data: m.GetInline(), MIMEType: "image/png"})
		}
		return res, artifactOut(m), nil
	})
	s.addArtifactTool("browser_pdf", "Print the page as PDF", `Print the page as PDF, stored as a DAG on the hosting peer; returns its CID and size.`,
		func(ctx context.Context, in SessionInput) (*connect.Response[apiv1.BrowserArtifact], error) {
			return s.api.Browser().PDF(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: in.Session}))
		})
	s.addArtifactTool("browser_state_save", "Save a session's login state", `Store the session's cookies and localStorage as a DAG and return its CID; browser_open with state: CID restores them on any peer. It holds credentials.`,
		func(ctx context.Context, in SessionInput) (*connect.Response[apiv1.BrowserArtifact], error) {
			return s.api.Browser().SaveState(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: in.Session}))
		})
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "browser_upload",
		Title:       "Put a file into a file input",
		Description: `Put a file (a path on the peer's machine, or a CID of the mesh) into the file input a ref (or a CSS selector) names.`,
		Annotations: &mcp.ToolAnnotations{OpenWorldHint: new(true)},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in BrowserUploadInput) (*mcp.CallToolResult, BrowserPage, error) {
		r := &apiv1.BrowserUploadRequest{Session: in.Session, Ref: in.Ref, Selector: in.Selector, Cid: in.CID, Name: in.Name}
		if in.Path != "" {
			p, err := s.absPath("path", in.Path)
			if err != nil {
				return nil, BrowserPage{}, err
			}
			r.Path = p
		}
		m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserPage], error) {
			return s.api.Browser().Upload(ctx, connect.NewRequest(r))
		})
		if err != nil {
			return nil, BrowserPage{}, err
		}
		return nil, pageOut(m), nil
	})
	s.addListingTool("browser_tabs", "List a session's tabs", `List the session's tabs (popups and window.open included).`,
		func(ctx context.Context, in SessionInput) (BrowserList, error) {
			m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserTabsResponse], error) {
				return s.api.Browser().Tabs(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: in.Session}))
			})
			var out BrowserList
			for _, t := range m.GetTabs() {
				out.Tabs = append(out.Tabs, BrowserTab{ID: t.GetId(), URL: t.GetUrl(), Title: t.GetTitle(), Active: t.GetActive()})
			}
			return out, err
		})
	s.addListingTool("browser_downloads", "List a session's downloads", `List the session's downloads with their state; a finished one is stored as a DAG and carries its CID (fetch it with workspace_get).`,
		func(ctx context.Context, in SessionInput) (BrowserList, error) {
			m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserDownloadsResponse], error) {
				return s.api.Browser().Downloads(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: in.Session}))
			})
			var out BrowserList
			for _, d := range m.GetDownloads() {
				out.Downloads = append(out.Downloads, BrowserDownload{Name: d.GetName(), URL: d.GetUrl(), State: d.GetState(), Bytes: d.GetBytes(), CID: d.GetCid()})
			}
			return out, err
		})
	s.addListingTool("browser_console", "Read the page's console", `Return the page's last console messages and uncaught exceptions (at most 1000).`,
		func(ctx context.Context, in SessionInput) (BrowserList, error) {
			m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserConsoleResponse], error) {
				return s.api.Browser().Console(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: in.Session}))
			})
			var out BrowserList
			for _, c := range m.GetMessages() {
				out.Console = append(out.Console, BrowserConsole{Time: c.GetTime().AsTime().Format(time.RFC3339Nano), Level: c.GetLevel(), Text: c.GetText()})
			}
			return out, err
		})
	s.addListingTool("browser_network", "Read the page's requests", `Return the page's last requests (at most 1000) with method, status, type or the error that ended them.`,
		func(ctx context.Context, in SessionInput) (BrowserList, error) {
			m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserNetworkResponse], error) {
				return s.api.Browser().Network(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: in.Session}))
			})
			var out BrowserList
			for _, n := range m.GetRequests() {
				out.Network = append(out.Network, BrowserRequest{Method: n.GetMethod(), URL: n.GetUrl(), Status: n.GetStatus(), Type: n.GetType(), Error: n.GetError()})
			}
			return out, err
		})
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "browser_list",
		Title:       "List browser sessions",
		Description: `List the sessions this peer hosts and those it opened on other peers, with their URL and when their lease ends.`,
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, BrowserList, error) {
		m, err := browserAPI(ctx, s, "", false, func(ctx context.Context) (*connect.Response[apiv1.BrowserListResponse], error) {
			return s.api.Browser().List(ctx, connect.NewRequest(&apiv1.BrowserListRequest{}))
		})
		if err != nil {
			return nil, BrowserList{}, err
		}
		out := BrowserList{Sessions: []BrowserSession{}, Unreachable: m.GetUnreachable()}
		for _, x := range m.GetSessions() {
			out.Sessions = append(out.Sessions, sessionOut(x))
		}
		return nil, out, nil
	})
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "browser_close",
		Title:       "Close a browser session",
		Description: `Close a session and its Chromium context. Save its state first (browser_state_save) to reopen it logged in.`,
		Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: true},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in SessionInput) (*mcp.CallToolResult, ClosedOutput, error) {
		_, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserCloseResponse], error) {
			return s.api.Browser().Close(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: in.Session}))
		})
		if err != nil {
			return nil, ClosedOutput{}, err
		}
		return nil, ClosedOutput{Closed: true}, nil
	})
}

func (s *Server) addArtifactTool(name, title, desc string, call func(context.Context, SessionInput) (*connect.Response[apiv1.BrowserArtifact], error)) {
	mcp.AddTool(s.mcp, &mcp.Tool{Name: name, Title: title, Description: desc},
		func(ctx context.Context, _ *mcp.CallToolRequest, in SessionInput) (*mcp.CallToolResult, BrowserArtifact, error) {
			m, err := browserAPI(ctx, s, in.Session, true, func(ctx context.Context) (*connect.Response[apiv1.BrowserArtifact], error) { return call(ctx, in) })
			if err != nil {
				return nil, BrowserArtifact{}, err
			}
			return nil, artifactOut(m), nil
		})
}

func (s *Server) addListingTool(name, title, desc string, list func(context.Context, SessionInput) (BrowserList, error)) {
	mcp.AddTool(s.mcp, &mcp.Tool{Name: name, Title: title, Description: desc, Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, _ *mcp.CallToolRequest, in SessionInput) (*mcp.CallToolResult, BrowserList, error) {
			out, err := list(ctx, in)
			if err != nil {
				return nil, BrowserList{}, err
			}
			return nil, out, nil
		})
}
