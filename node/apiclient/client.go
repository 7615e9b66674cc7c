// Package apiclient connects to a running peer's local API through its data
// dir: it finds the socket and the token the config names and returns typed
// clients. The CLI and testnet use it. It must stay light: the CLI links it,
// and nothing of the peer itself (see locate).
package apiclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/cortex-peer/cortex-peer/node/datadir/locate"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// baseURL is a placeholder host: every request goes to the unix socket.
const baseURL = "http://cortex-peer"

// Client talks to one peer's local API.
type Client struct {
	dir    string
	socket string
	hc     *http.Client
	peer   apiv1connect.PeerServiceClient
	ws     apiv1connect.WorkspaceServiceClient
	task   apiv1connect.TaskServiceClient
	image  apiv1connect.ImageServiceClient
	brows  apiv1connect.BrowserServiceClient
	lsp    apiv1connect.LSPServiceClient
	arts   apiv1connect.ArtifactServiceClient
	upd    apiv1connect.UpdateServiceClient
}

// Dial prepares a client for the peer whose data dir is root. It does not
// connect yet; the first call reports a peer that is not running.
func Dial(root string) (*Client, error) {
	ep, err := locate.FindAPI(root)
	if err != nil {
		return nil, err
	}
	return New(root, ep.Socket, ep.Token), nil
}

// New returns a client for the API at socket with token; root is named in
// error messages.
func New(root, socket, token string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}
	hc := &http.Client{Transport: tr}
	opts := []connect.ClientOption{connect.WithInterceptors(auth{token: token})}
	c := &Client{
		dir:    root,
		socket: socket,
		hc:     hc,
		peer:   apiv1connect.NewPeerServiceClient(hc, baseURL, opts...),
		ws:     apiv1connect.NewWorkspaceServiceClient(hc, baseURL, opts...),
		task:   apiv1connect.NewTaskServiceClient(hc, baseURL, opts...),
		image:  apiv1connect.NewImageServiceClient(hc, baseURL, opts...),
		arts:   apiv1connect.NewArtifactServiceClient(hc, baseURL, opts...),
		upd:    apiv1connect.NewUpdateServiceClient(hc, baseURL, opts...),
	}
	c.brows = apiv1connect.NewBrowserServiceClient(hc, baseURL, append(opts, connect.WithInterceptors(wrapErrors{c, "browser"}))...)
	c.lsp = apiv1connect.NewLSPServiceClient(hc, baseURL, append(opts, connect.WithInterceptors(wrapErrors{c, "lsp"}))...)
	return c
}

// Browser is the peer's browser service. Its errors are classified as
// every other call's (errors.Is with errdefs) and name the call.
func (c *Client) Browser() apiv1connect.BrowserServiceClient { return c.brows }

// LSP is the peer's language-server service, with classified errors.
func (c *Client) LSP() apiv1connect.LSPServiceClient { return c.lsp }

// wrapErrors turns the wire errors of unary calls into classified ones,
// named "<service> <method>".
type wrapErrors struct {
	c       *Client
	service string
}

func (w wrapErrors) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil {
			name := req.Spec().Procedure
			if i := strings.LastIndexByte(name, '/'); i >= 0 {
				name = name[i+1:]
			}
			return nil, w.c.wrap(w.service+" "+strings.ToLower(name), err)
		}
		return resp, nil
	}
}

func (w wrapErrors) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (w wrapErrors) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Identity returns the peer's id and addresses.
func (c *Client) Identity(ctx context.Context) (*apiv1.IdentityResponse, error) {
	resp, err := c.peer.Identity(ctx, connect.NewRequest(&apiv1.IdentityRequest{}))
	if err != nil {
		return nil, c.wrap("identity", err)
	}
	return resp.Msg, nil
}

// Peers returns the mesh as the peer sees it.
func (c *Client) Peers(ctx context.Context, includeExpired bool) ([]*apiv1.PeerInfo, error) {
	resp, err := c.peer.Peers(ctx, connect.NewRequest(&apiv1.PeersRequest{IncludeExpired: includeExpired}))
	if err != nil {
		return nil, c.wrap("peers", err)
	}
	return resp.Msg.GetPeers(), nil
}

// Status returns the peer's status.
func (c *Client) Status(ctx context.Context) (*apiv1.StatusResponse, error) {
	resp, err := c.peer.Status(ctx, connect.NewRequest(&apiv1.StatusRequest{}))
	if err != nil {
		return nil, c.wrap("status", err)
	}
	return resp.Msg, nil
}

// wrap turns a transport or wire error into one the user can act on.
func (c *Client) wrap(call string, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("%s: no peer is running on %s (start one with `cortex-peer join --data %s`): %w", call, c.dir, c.dir, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", call, protocol.FromConnectError(err))
}

// auth adds the bearer token to every request.
type auth struct{ token string }

func (a auth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+a.token)
		return next(ctx, req)
	}
}

func (a auth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+a.token)
		return conn
	}
}

func (a auth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Drain drains the peer (deadline 0: its configured one); fn sees every
// progress event. It returns the last event (Done set). Unless stay, the
// peer stops after it.
func (c *Client) Drain(ctx context.Context, deadline time.Duration, stay bool, fn func(*apiv1.DrainEvent)) (*apiv1.DrainEvent, error) {
	stream, err := c.peer.Drain(ctx, connect.NewRequest(&apiv1.DrainRequest{DeadlineMs: deadline.Milliseconds(), Stay: stay}))
	if err != nil {
		return nil, c.wrap("drain", err)
	}
	defer stream.Close()
	var last *apiv1.DrainEvent
	for stream.Receive() {
		last = stream.Msg()
		if fn != nil {
			fn(last)
		}
	}
	if err := stream.Err(); err != nil {
		return last, c.wrap("drain", err)
	}
	if last == nil || !last.GetDone() {
		return last, c.wrap("drain", fmt.Errorf("the peer ended the drain without its last event"))
	}
	return last, nil
}

// Eligible undoes a drain that stayed; it reports whether the peer was
// draining.
func (c *Client) Eligible(ctx context.Context) (bool, error) {
	resp, err := c.peer.Eligible(ctx, connect.NewRequest(&apiv1.EligibleRequest{}))
	if err != nil {
		return false, c.wrap("eligible", err)
	}
	return resp.Msg.GetWasDraining(), nil
}
