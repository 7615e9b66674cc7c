package node

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// Bounds on the local API's HTTP server.
const (
	apiReadHeaderTimeout = 10 * time.Second
	apiMaxHeaderBytes    = 64 << 10
	apiMaxRequestBytes   = 4 << 20
	apiShutdownTimeout   = 5 * time.Second
)

// apiServer serves the local API on a unix socket.
type apiServer struct {
	socket  string
	handler http.Handler

	// ln is the listener made by newAPIServer, so that a socket that cannot
	// be created fails the peer's start; later restarts listen anew.
	ln net.Listener
}

func newAPIServer(n *Node, socket, tokenFile string) (*apiServer, error) {
	token, err := readToken(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("API %w (run `cortex-peer init` to create it)", err)
	}
	// No gzip: the socket is local, and compressing task output and CAR
	// streams cost more CPU than all the rest of the path.
	handlerOpts := []connect.HandlerOption{
		connect.WithReadMaxBytes(apiMaxRequestBytes),
		connect.WithInterceptors(errorCodes{}),
		connect.WithCompression("gzip", nil, nil),
	}
	mux := http.NewServeMux()
	path, handler := apiv1connect.NewPeerServiceHandler(&peerService{n: n},
		handlerOpts...,
	)
	mux.Handle(path, handler)
	path, handler = apiv1connect.NewWorkspaceServiceHandler(&workspaceService{n: n},
		handlerOpts...,
	)
	mux.Handle(path, handler)
	path, handler = apiv1connect.NewTaskServiceHandler(&taskService{n: n},
		handlerOpts...,
	)
	mux.Handle(path, handler)
	path, handler = apiv1connect.NewImageServiceHandler(&imageService{n: n},
		handlerOpts...,
	)
	mux.Handle(path, handler)
	s := &apiServer{socket: socket, handler: authenticate(mux, token, tokenFile)}
	if s.ln, err = listenSocket(socket); err != nil {
		return nil, err
	}
	return s, nil
}

// listenSocket listens on the unix socket with mode 0600. The data dir lock
// is held, so a socket file found there is stale and removed.
func listenSocket(socket string) (net.Listener, error) {
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale API socket %s: %w", socket, err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("listen on API socket %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict API socket %s: %w", socket, err)
	}
	return ln, nil
}

// Serve serves until ctx ends; in-flight calls get apiShutdownTimeout to end.
func (s *apiServer) Serve(ctx context.Context) error {
	ln := s.ln
	s.ln = nil
	if ln == nil {
		var err error
		if ln, err = listenSocket(s.socket); err != nil {
			return err
		}
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // gRPC clients speak h2c on the socket
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: apiReadHeaderTimeout,
		MaxHeaderBytes:    apiMaxHeaderBytes,
		Protocols:         protocols,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("API server: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), apiShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		<-errc
		return nil
	}
}

// Close releases a listener that Serve never took. Safe to call twice.
func (s *apiServer) Close() error {
	if s.ln == nil {
		return nil
	}
	err := s.ln.Close()
	s.ln = nil
	return err
}

// authenticate refuses any request without the right bearer token, with an
// Unauthenticated error that says where the token lives.
func authenticate(next http.Handler, token []byte, tokenFile string) http.Handler {
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), token) != 1 {
			err := connect.NewError(connect.CodeUnauthenticated,
				fmt.Errorf("missing or wrong API token: send the header \"Authorization: Bearer TOKEN\" with the token stored in %s", tokenFile))
			if errw.IsSupported(r) {
				_ = errw.Write(w, r, err)
				return
			}
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// errorCodes maps every error a handler returns to its wire code.
type errorCodes struct{}

func (errorCodes) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		return resp, protocol.ToConnectError(err)
	}
}

func (errorCodes) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (errorCodes) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return protocol.ToConnectError(next(ctx, conn))
	}
}

// peerService implements the PeerService of the local API.
type peerService struct {
	n *Node
}

var _ apiv1connect.PeerServiceHandler = (*peerService)(nil)

func (p *peerService) Identity(context.Context, *connect.Request[apiv1.IdentityRequest]) (*connect.Response[apiv1.IdentityResponse], error) {
	return connect.NewResponse(&apiv1.IdentityResponse{
		Id:    p.n.host.ID().String(),
		Addrs: p.n.host.FullAddrs(),
	}), nil
}

func (p *peerService) Peers(_ context.Context, req *connect.Request[apiv1.PeersRequest]) (*connect.Response[apiv1.PeersResponse], error) {
	entries := p.n.book.List(time.Now(), req.Msg.GetIncludeExpired())
	out := &apiv1.PeersResponse{Peers: make([]*apiv1.PeerInfo, 0, len(entries))}
	for _, e := range entries {
		out.Peers = append(out.Peers, p.peerInfo(e))
	}
	return connect.NewResponse(out), nil
}

func (p *peerService) peerInfo(e p2p.PeerEntry) *apiv1.PeerInfo {
	addrs := make([]string, len(e.Addrs))
	for i, a := range e.Addrs {
		addrs[i] = a.String()
	}
	h := e.Heartbeat
	return &apiv1.PeerInfo{
		Id:           e.ID.String(),
		Addrs:        addrs,
		Labels:       h.Labels,
		Version:      h.Version,
		Protocols:    h.Protocols,
		Capabilities: capabilitiesToAPI(h.Capabilities),
		Capacity:     capacityToAPI(h.Capacity),
		LastSeen:     timestamppb.New(e.LastSeen),
		Connected:    p.n.host.IsConnected(e.ID),
		Expired:      e.Expired,
		Images:       h.Images,
	}
}

func (p *peerService) Status(context.Context, *connect.Request[apiv1.StatusRequest]) (*connect.Response[apiv1.StatusResponse], error) {
	n := p.n
	listen := make([]string, 0)
	for _, a := range n.host.ListenAddrs() {
		listen = append(listen, a.String())
	}
	return connect.NewResponse(&apiv1.StatusResponse{
		Id:             n.host.ID().String(),
		Version:        n.cfg.Version,
		StartedAt:      timestamppb.New(n.started),
		DataDir:        n.cfg.Dir.Root,
		ListenAddrs:    listen,
		ConnectedPeers: uint32(len(n.host.Connected())),
		KnownPeers:     uint32(len(n.book.List(time.Now(), false))),
		Labels:         n.cfg.Labels,
		Capabilities:   capabilitiesToAPI(n.prober.Capabilities()),
		Capacity:       capacityToAPI(capacity(n.runningTasks())),
		Protocols:      protocol.Protocols(),
		StoreBytes:     n.store.Size(),
		PrivateNetwork: n.host.PrivateNetwork(),
		AllowlistSize:  uint32(n.host.AllowlistSize()),
	}), nil
}

func capabilitiesToAPI(c protocol.Capabilities) *apiv1.Capabilities {
	return &apiv1.Capabilities{Containerd: c.Containerd, Gvisor: c.GVisor, Chromium: c.Chromium, Gopls: c.Gopls}
}

func capacityToAPI(c protocol.Capacity) *apiv1.Capacity {
	return &apiv1.Capacity{
		Cpus:                 c.CPUs,
		MemoryTotalBytes:     c.MemoryTotalBytes,
		MemoryAvailableBytes: c.MemoryAvailableBytes,
		RunningTasks:         c.RunningTasks,
	}
}
