package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cortex-peer/cortex-peer/bridges/cdp"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// Bounds on what a caller may ask.
const (
	maxSnapshotBudget = 1 << 20
	maxStateBytes     = 16 << 20
	maxNameBytes      = 64
	stateFetchStall   = 30 * time.Second
)

// Open starts a session where the request places it; client names the
// API client that asks, for the session's owner.
func (s *Service) Open(ctx context.Context, client string, req *apiv1.BrowserOpenRequest) (*apiv1.BrowserSession, error) {
	at, err := s.place(req.GetPeer(), req.GetLabels())
	if err != nil {
		return nil, err
	}
	if at == s.self {
		owner := s.self.String()
		if client != "" {
			owner += "/" + client
		}
		return s.openHere(ctx, owner, req)
	}
	resp := new(apiv1.BrowserSession)
	if err := s.call(ctx, at, "Open", client, req, resp); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.remote[resp.GetSession()] = at
	s.mu.Unlock()
	return resp, nil
}

// openHere opens a session on this peer's Chromium.
func (s *Service) openHere(ctx context.Context, owner string, req *apiv1.BrowserOpenRequest) (*apiv1.BrowserSession, error) {
	name := req.GetName()
	if len(name) > maxNameBytes || strings.ContainsAny(name, "/\\\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("browser open: name %q: at most %d bytes, no slashes: %w", name, maxNameBytes, errdefs.ErrInvalid)
	}
	var opts cdp.OpenOptions
	if s.cfg.PersistentProfiles && name != "" {
		opts.Profile = name
	}
	if c := req.GetState(); c != "" {
		st, err := s.loadState(ctx, c)
		if err != nil {
			return nil, err
		}
		opts.State = st
	}
	sess, err := s.bridge.Open(ctx, opts)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	info := &sessionInfo{name: name, owner: owner, state: req.GetState(), profile: opts.Profile, opened: now, used: now, downloads: map[string]string{}}
	s.mu.Lock()
	s.hosted[sess.ID] = info
	s.mu.Unlock()
	s.log.Info("browser session opened", "session", s.sessionID(sess.ID), "name", name, "owner", owner, "state", req.GetState())
	return s.describe(sess.ID, info), nil
}

// describe is a hosted session as the API shows it.
func (s *Service) describe(local string, info *sessionInfo) *apiv1.BrowserSession {
	return &apiv1.BrowserSession{
		Session: s.sessionID(local), Peer: s.self.String(), Name: info.name, Owner: info.owner,
		Url: info.url, Title: info.title, State: info.state,
		OpenedAt:  timestamppb.New(info.opened),
		ExpiresAt: timestamppb.New(info.used.Add(s.cfg.Bridge.IdleTTL)),
	}
}

// loadState fetches a saved state from the mesh.
func (s *Service) loadState(ctx context.Context, raw string) (*cdp.State, error) {
	root, err := cid.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("browser state %q: %v: %w", raw, err, errdefs.ErrInvalid)
	}
	if _, err := s.blocks.Fetch(ctx, root, stateFetchStall, nil); err != nil {
		return nil, fmt.Errorf("browser state %s: fetch: %w", root, err)
	}
	b, err := s.readAll(ctx, root, maxStateBytes)
	if err != nil {
		return nil, fmt.Errorf("browser state %s: %w", root, err)
	}
	var st cdp.State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("browser state %s: not a saved state: %v: %w", root, err, errdefs.ErrInvalid)
	}
	return &st, nil
}

// page reads where a session's page is, after an action.
func page(ctx context.Context, sess *cdp.Session, info *sessionInfo) *apiv1.BrowserPage {
	p := &apiv1.BrowserPage{Loaded: true}
	if v, err := sess.Evaluate(ctx, `[location.href, document.title]`); err == nil {
		var at []string
		if json.Unmarshal(v, &at) == nil && len(at) == 2 {
			p.Url, p.Title = at[0], at[1]
			info.url, info.title = at[0], at[1]
		}
	}
	p.Recovered = sess.Recovered()
	return p
}

// Navigate loads a URL the origin policy allows.
func (s *Service) Navigate(ctx context.Context, req *apiv1.BrowserNavigateRequest) (*apiv1.BrowserPage, error) {
	return route(ctx, s, "Navigate", req.GetSession(), req, new(apiv1.BrowserPage), func(ctx context.Context, id string) (*apiv1.BrowserPage, error) {
		if err := s.cfg.Origins.Check(req.GetUrl()); err != nil {
			s.log.Info("browser navigation refused", "session", req.GetSession(), "url", req.GetUrl(), "err", err)
			return nil, err
		}
		sess, info, err := s.session(id)
		if err != nil {
			return nil, err
		}
		res, err := sess.Navigate(ctx, req.GetUrl())
		if err != nil {
			return nil, err
		}
		info.url, info.title = res.URL, res.Title
		return &apiv1.BrowserPage{Url: res.URL, Title: res.Title, Loaded: res.Loaded, Recovered: sess.Recovered()}, nil
	})
}

// Snapshot renders the page's accessibility tree within the budget, and
// with full stores the whole tree as a DAG.
func (s *Service) Snapshot(ctx context.Context, req *apiv1.BrowserSnapshotRequest) (*apiv1.BrowserSnapshotResponse, error) {
	return route(ctx, s, "Snapshot", req.GetSession(), req, new(apiv1.BrowserSnapshotResponse), func(ctx context.Context, id string) (*apiv1.BrowserSnapshotResponse, error) {
		budget := int(req.GetBudget())
		if budget > maxSnapshotBudget {
			return nil, fmt.Errorf("snapshot: budget %d over the most, %d: %w", budget, maxSnapshotBudget, errdefs.ErrInvalid)
		}
		if budget == 0 {
			budget = s.cfg.Bridge.SnapshotBudget
		}
		sess, info, err := s.session(id)
		if err != nil {
			return nil, err
		}
		ask := budget
		if req.GetFull() {
			ask = 1 << 30 // every node; cut to the budget below
		}
		snap, err := sess.Snapshot(ctx, ask)
		if err != nil {
			return nil, err
		}
		info.url, info.title = snap.URL, snap.Title
		resp := &apiv1.BrowserSnapshotResponse{
			Page:       &apiv1.BrowserPage{Url: snap.URL, Title: snap.Title, Loaded: true, Recovered: sess.Recovered()},
			Generation: snap.Generation, Text: snap.Text, Refs: uint32(snap.Refs), Nodes: uint32(snap.Nodes), Truncated: snap.Truncated,
		}
		if req.GetFull() {
			if resp.Full, err = s.storeBytes(ctx, []byte(snap.Text), "snapshot.txt", "text/plain"); err != nil {
				return nil, err
			}
			resp.Text, resp.Truncated = cutLines(snap.Text, budget, resp.Full.GetCid())
		}
		return resp, nil
	})
}

// cutLines keeps the whole lines of text that fit in budget bytes and says
// what was left out and where the rest is.
func cutLines(text string, budget int, full string) (string, bool) {
	if len(text) <= budget {
		return text, false
	}
	cut := strings.LastIndexByte(text[:budget], '\n') + 1
	rest := strings.Count(text[cut:], "\n") + 1
	return text[:cut] + fmt.Sprintf("… %d more lines: the whole tree is %s\n", rest, full), true
}

// Click clicks the element a ref or a selector names.
func (s *Service) Click(ctx context.Context, req *apiv1.BrowserActRequest) (*apiv1.BrowserPage, error) {
	return route(ctx, s, "Click", req.GetSession(), req, new(apiv1.BrowserPage), func(ctx context.Context, id string) (*apiv1.BrowserPage, error) {
		sess, info, err := s.session(id)
		if err != nil {
			return nil, err
		}
		if err := sess.Click(ctx, req.GetRef(), req.GetSelector()); err != nil {
			return nil, err
		}
		return page(ctx, sess, info), nil
	})
}

// Type types text into the element a ref or a selector names.
func (s *Service) Type(ctx context.Context, req *apiv1.BrowserActRequest) (*apiv1.BrowserPage, error) {
	return route(ctx, s, "Type", req.GetSession(), req, new(apiv1.BrowserPage), func(ctx context.Context, id string) (*apiv1.BrowserPage, error) {
		sess, info, err := s.session(id)
		if err != nil {
			return nil, err
		}
		if err := sess.Type(ctx, req.GetRef(), req.GetSelector(), req.GetText(), req.GetSubmit()); err != nil {
			return nil, err
		}
		return page(ctx, sess, info), nil
	})
}

// Evaluate runs a JavaScript expression in the page.
func (s *Service) Evaluate(ctx context.Context, req *apiv1.BrowserEvaluateRequest) (*apiv1.BrowserEvaluateResponse, error) {
	return route(ctx, s, "Evaluate", req.GetSession(), req, new(apiv1.BrowserEvaluateResponse), func(ctx context.Context, id string) (*apiv1.BrowserEvaluateResponse, error) {
		sess, _, err := s.session(id)
		if err != nil {
			return nil, err
		}
		v, err := sess.Evaluate(ctx, req.GetExpression())
		if err != nil {
			return nil, err
		}
		return &apiv1.BrowserEvaluateResponse{Value: string(v), Recovered: sess.Recovered()}, nil
	})
}

// Screenshot stores a PNG of the page.
func (s *Service) Screenshot(ctx context.Context, req *apiv1.BrowserScreenshotRequest) (*apiv1.BrowserArtifact, error) {
	return route(ctx, s, "Screenshot", req.GetSession(), req, new(apiv1.BrowserArtifact), func(ctx context.Context, id string) (*apiv1.BrowserArtifact, error) {
		sess, _, err := s.session(id)
		if err != nil {
			return nil, err
		}
		png, err := sess.Screenshot(ctx, req.GetFullPage())
		if err != nil {
			return nil, err
		}
		a, err := s.storeBytes(ctx, png, "screenshot.png", "image/png")
		if err != nil {
			return nil, err
		}
		if len(png) <= s.cfg.InlineBytes {
			a.Inline = png
		}
		a.Recovered = sess.Recovered()
		return a, nil
	})
}

// PDF stores the page printed as PDF.
func (s *Service) PDF(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserArtifact, error) {
	return route(ctx, s, "PDF", req.GetSession(), req, new(apiv1.BrowserArtifact), func(ctx context.Context, id string) (*apiv1.BrowserArtifact, error) {
		sess, _, err := s.session(id)
		if err != nil {
			return nil, err
		}
		pdf, err := sess.PDF(ctx)
		if err != nil {
			return nil, err
		}
		a, err := s.storeBytes(ctx, pdf, "page.pdf", "application/pdf")
		if err != nil {
			return nil, err
		}
		a.Recovered = sess.Recovered()
		return a, nil
	})
}

// Upload puts a file into a file input. A path (on this peer, checked by
// the API against its allowed roots) is added to the block store first, so
// the hosting peer fetches it by CID.
func (s *Service) Upload(ctx context.Context, req *apiv1.BrowserUploadRequest) (*apiv1.BrowserPage, error) {
	if p := req.GetPath(); p != "" {
		a, err := s.storePath(ctx, p)
		if err != nil {
			return nil, err
		}
		if req.GetName() == "" {
			req.Name = filepath.Base(p)
		}
		req.Cid, req.Path = a.GetCid(), ""
	}
	return route(ctx, s, "Upload", req.GetSession(), req, new(apiv1.BrowserPage), func(ctx context.Context, id string) (*apiv1.BrowserPage, error) {
		name := req.GetName()
		if name == "" {
			name = "upload"
		}
		if name != filepath.Base(name) || name == "." || name == ".." || len(name) > 255 {
			return nil, fmt.Errorf("upload: file name %q: want a plain name: %w", name, errdefs.ErrInvalid)
		}
		root, err := cid.Decode(req.GetCid())
		if err != nil {
			return nil, fmt.Errorf("upload: cid %q: %v: %w", req.GetCid(), err, errdefs.ErrInvalid)
		}
		sess, info, err := s.session(id)
		if err != nil {
			return nil, err
		}
		if _, err := s.blocks.Fetch(ctx, root, stateFetchStall, nil); err != nil {
			return nil, fmt.Errorf("upload: fetch %s: %w", root, err)
		}
		dir := filepath.Join(sess.Dir(), "uploads")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		dest := filepath.Join(dir, name)
		if err := s.writeFile(ctx, root, dest); err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		if err := sess.Upload(ctx, req.GetRef(), req.GetSelector(), []string{dest}); err != nil {
			return nil, err
		}
		return page(ctx, sess, info), nil
	})
}

// Tabs lists the session's tabs.
func (s *Service) Tabs(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserTabsResponse, error) {
	return route(ctx, s, "Tabs", req.GetSession(), req, new(apiv1.BrowserTabsResponse), func(ctx context.Context, id string) (*apiv1.BrowserTabsResponse, error) {
		sess, _, err := s.session(id)
		if err != nil {
			return nil, err
		}
		tabs, err := sess.Tabs(ctx)
		if err != nil {
			return nil, err
		}
		resp := new(apiv1.BrowserTabsResponse)
		for _, t := range tabs {
			resp.Tabs = append(resp.Tabs, &apiv1.BrowserTab{Id: t.ID, Url: t.URL, Title: t.Title, Active: t.Active})
		}
		return resp, nil
	})
}

// Downloads lists the session's downloads; a finished one is added to the
// block store (streamed from disk) the first time it is listed.
func (s *Service) Downloads(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserDownloadsResponse, error) {
	return route(ctx, s, "Downloads", req.GetSession(), req, new(apiv1.BrowserDownloadsResponse), func(ctx context.Context, id string) (*apiv1.BrowserDownloadsResponse, error) {
		sess, info, err := s.session(id)
		if err != nil {
			return nil, err
		}
		resp := new(apiv1.BrowserDownloadsResponse)
		for _, d := range sess.Downloads() {
			out := &apiv1.BrowserDownload{Guid: d.GUID, Url: d.URL, Name: d.Name, State: d.State, Bytes: uint64(max(d.Bytes, 0)), Total: uint64(max(d.Total, 0))}
			if d.State == "completed" && d.Path != "" {
				s.mu.Lock()
				c, ok := info.downloads[d.GUID]
				s.mu.Unlock()
				if !ok {
					a, err := s.storePath(ctx, d.Path)
					if err != nil {
						return nil, fmt.Errorf("download %s: %w", d.Name, err)
					}
					c = a.GetCid()
					s.mu.Lock()
					info.downloads[d.GUID] = c
					s.mu.Unlock()
					s.log.Info("browser download stored", "session", req.GetSession(), "name", d.Name, "cid", c, "bytes", d.Bytes)
				}
				out.Cid = c
			}
			resp.Downloads = append(resp.Downloads, out)
		}
		return resp, nil
	})
}

// Console returns the page's last console messages.
func (s *Service) Console(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserConsoleResponse, error) {
	return route(ctx, s, "Console", req.GetSession(), req, new(apiv1.BrowserConsoleResponse), func(ctx context.Context, id string) (*apiv1.BrowserConsoleResponse, error) {
		sess, _, err := s.session(id)
		if err != nil {
			return nil, err
		}
		resp := new(apiv1.BrowserConsoleResponse)
		for _, m := range sess.Console() {
			resp.Messages = append(resp.Messages, &apiv1.BrowserConsoleMessage{Time: timestamppb.New(m.Time), Level: m.Level, Text: m.Text})
		}
		return resp, nil
	})
}

// Network returns the page's last requests.
func (s *Service) Network(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserNetworkResponse, error) {
	return route(ctx, s, "Network", req.GetSession(), req, new(apiv1.BrowserNetworkResponse), func(ctx context.Context, id string) (*apiv1.BrowserNetworkResponse, error) {
		sess, _, err := s.session(id)
		if err != nil {
			return nil, err
		}
		resp := new(apiv1.BrowserNetworkResponse)
		for _, n := range sess.Network() {
			resp.Requests = append(resp.Requests, &apiv1.BrowserRequestInfo{Method: n.Method, Url: n.URL, Status: n.Status, Type: n.Type, Error: n.Error})
		}
		return resp, nil
	})
}

// SaveState stores the session's cookies and localStorage as a DAG.
func (s *Service) SaveState(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserArtifact, error) {
	return route(ctx, s, "SaveState", req.GetSession(), req, new(apiv1.BrowserArtifact), func(ctx context.Context, id string) (*apiv1.BrowserArtifact, error) {
		sess, _, err := s.session(id)
		if err != nil {
			return nil, err
		}
		return s.saveState(ctx, sess)
	})
}

func (s *Service) saveState(ctx context.Context, sess *cdp.Session) (*apiv1.BrowserArtifact, error) {
	st, err := sess.State(ctx)
	if err != nil {
		return nil, fmt.Errorf("save state: %w", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("save state: %w", err)
	}
	a, err := s.storeBytes(ctx, b, "state.json", "application/json")
	if err != nil {
		return nil, err
	}
	a.Recovered = sess.Recovered()
	s.log.Info("browser state saved", "session", s.sessionID(sess.ID), "cid", a.GetCid(), "cookies", len(st.Cookies), "origins", len(st.Origins))
	return a, nil
}

// saveOnExpiry saves the state of a session whose lease ran out, before
// the bridge closes it.
func (s *Service) saveOnExpiry(sess *cdp.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.saveState(ctx, sess); err != nil {
		s.log.Warn("browser session expired; its state could not be saved", "session", s.sessionID(sess.ID), "err", err)
	}
	s.forget(sess.ID)
}

// List lists the sessions this peer hosts and those it opened on others.
func (s *Service) List(ctx context.Context, _ *apiv1.BrowserListRequest) (*apiv1.BrowserListResponse, error) {
	resp := s.listHere("")
	resp.Unreachable = map[string]string{}
	byPeer := map[peer.ID][]string{}
	for id, at := range s.remembered() {
		byPeer[at] = append(byPeer[at], id)
	}
	for at, ids := range byPeer {
		var there apiv1.BrowserListResponse
		if err := s.call(ctx, at, "List", "", &apiv1.BrowserListRequest{}, &there); err != nil {
			resp.Unreachable[at.String()] = err.Error()
			continue
		}
		alive := map[string]bool{}
		for _, x := range there.GetSessions() {
			alive[x.GetSession()] = true
			resp.Sessions = append(resp.Sessions, x)
		}
		s.mu.Lock()
		for _, id := range ids {
			if !alive[id] {
				delete(s.remote, id) // closed there, or its lease ran out
			}
		}
		s.mu.Unlock()
	}
	sort.Slice(resp.Sessions, func(i, j int) bool {
		return resp.Sessions[i].GetOpenedAt().AsTime().Before(resp.Sessions[j].GetOpenedAt().AsTime())
	})
	return resp, nil
}

// listHere lists the sessions hosted here; with owner, only those it
// opened.
func (s *Service) listHere(owner string) *apiv1.BrowserListResponse {
	open := map[string]bool{}
	for _, id := range s.bridge.Sessions() {
		open[id] = true
	}
	resp := new(apiv1.BrowserListResponse)
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, info := range s.hosted {
		if !open[id] {
			delete(s.hosted, id)
			continue
		}
		if owner != "" && info.owner != owner && !strings.HasPrefix(info.owner, owner+"/") {
			continue
		}
		resp.Sessions = append(resp.Sessions, s.describe(id, info))
	}
	return resp
}

// CloseSession closes a session.
func (s *Service) CloseSession(ctx context.Context, req *apiv1.BrowserSessionRequest) (*apiv1.BrowserCloseResponse, error) {
	resp, err := route(ctx, s, "Close", req.GetSession(), req, new(apiv1.BrowserCloseResponse), func(ctx context.Context, id string) (*apiv1.BrowserCloseResponse, error) {
		sess, _, err := s.session(id)
		if err != nil {
			return nil, err
		}
		err = sess.Close()
		s.forget(id)
		s.log.Info("browser session closed", "session", req.GetSession())
		return new(apiv1.BrowserCloseResponse), err
	})
	if err == nil {
		s.mu.Lock()
		delete(s.remote, req.GetSession())
		s.mu.Unlock()
	}
	return resp, err
}

// SaveAll saves the state (cookies, localStorage) of every session this
// peer hosts, as a drain does before the peer stops: each is stored as a
// pinned DAG whose CID the log and the returned map give, so a session can
// be reopened elsewhere with its state. It returns session id -> CID.
func (s *Service) SaveAll(ctx context.Context) map[string]string {
	saved := map[string]string{}
	for _, local := range s.bridge.Sessions() {
		sess, _, err := s.session(local)
		if err != nil {
			continue
		}
		a, err := s.saveState(ctx, sess)
		if err != nil {
			s.log.Warn("drain: browser session state not saved", "session", s.sessionID(local), "err", err)
			continue
		}
		saved[s.sessionID(local)] = a.GetCid()
	}
	return saved
}
