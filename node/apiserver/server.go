// Package apiserver serves the local API (gRPC and JSON over connect) on
// the data dir's unix socket, behind a bearer token. Each service is a thin
// adapter: it checks and converts the API's messages (the one place that
// does) and calls a capability through the small interfaces below. It must
// not import node.
package apiserver

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

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
)

// Bounds on the local API's HTTP server.
const (
	apiReadHeaderTimeout = 10 * time.Second
	apiMaxHeaderBytes    = 64 << 10
	apiMaxRequestBytes   = 4 << 20
	apiShutdownTimeout   = 5 * time.Second
)

// Config configures the local API.
type Config struct {
	// Socket is the unix socket the API listens on (mode 0600); TokenFile
	// holds the bearer token every call must carry.
	Socket    string
	TokenFile string
	// AllowedRoots are the directories whose files a caller may have the
	// API read or write (see Roots); none refuses every path. ConfigFile is
	// where they are set, named when a path is refused.
	AllowedRoots []string
	ConfigFile   string
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Socket == "" || c.TokenFile == "" {
		return fmt.Errorf("API config: socket and token file are required: %w", errdefs.ErrInvalid)
	}
	return nil
}

// Services are the capabilities the API exposes.
type Services struct {
	Peer       Peer
	Workspaces Workspaces
	Tasks      Tasks
	Images     Images
	Browser    Browser
	LSP        LSP
	Artifacts  Artifacts
	// Updates may be nil: the UpdateService then answers Unimplemented.
	Updates Updates
}

// Server serves the local API on a unix socket.
type Server struct {
	socket  string
	handler http.Handler

	// ln is the listener made by New, so that a socket that cannot
	// be created fails the peer's start; later restarts listen anew.
	ln net.Listener
}

// New reads the token and listens on the socket, so that a socket that
// cannot be created fails the peer's start; Serve serves.
func New(cfg Config, svc Services) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	socket, tokenFile := cfg.Socket, cfg.TokenFile
	roots, err := NewRoots(cfg.AllowedRoots, cfg.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("API: %w", err)
	}
	token, err := ReadToken(tokenFile)
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
	path, handler := apiv1connect.NewPeerServiceHandler(&peerService{p: svc.Peer},
		handlerOpts...,
	)
	mux.Handle(path, handler)
	path, handler = apiv1connect.NewWorkspaceServiceHandler(&workspaceService{ws: svc.Workspaces, roots: roots},
		handlerOpts...,
	)
	mux.Handle(path, handler)
	path, handler = apiv1connect.NewArtifactServiceHandler(&artifactService{a: svc.Artifacts, roots: roots}, handlerOpts...)
	mux.Handle(path, handler)
	path, handler = apiv1connect.NewUpdateServiceHandler(&updateService{u: svc.Updates}, handlerOpts...)
	mux.Handle(path, handler)
	path, handler = apiv1connect.NewTaskServiceHandler(&taskService{t: svc.Tasks, roots: roots},
		handlerOpts...,
	)
	mux.Handle(path, handler)
	path, handler = apiv1connect.NewImageServiceHandler(&imageService{im: svc.Images, roots: roots},
		handlerOpts...,
	)
	mux.Handle(path, handler)
	path, handler = apiv1connect.NewBrowserServiceHandler(&browserService{b: svc.Browser, roots: roots},
		handlerOpts...,
	)
	mux.Handle(path, handler)
	path, handler = apiv1connect.NewLSPServiceHandler(&lspService{l: svc.LSP, roots: roots},
		handlerOpts...,
	)
	mux.Handle(path, handler)
	s := &Server{socket: socket, handler: authenticate(mux, token, tokenFile)}
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
func (s *Server) Serve(ctx context.Context) error {
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
func (s *Server) Close() error {
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

// ReadToken reads a bearer token file: its content, trimmed, not empty.
func ReadToken(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	tok := []byte(strings.TrimSpace(string(b)))
	if len(tok) == 0 {
		return nil, fmt.Errorf("token file %s is empty: %w", p, errdefs.ErrInvalid)
	}
	return tok, nil
}
