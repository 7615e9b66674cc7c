package mcpserver

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Path is where the streamable HTTP endpoint is served.
const Path = "/mcp"

// Bounds on the HTTP server.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpMaxHeaderBytes    = 64 << 10
	httpShutdownTimeout   = 5 * time.Second
	// httpSessionTimeout closes sessions no request has touched for this
	// long, so clients that vanish do not keep state forever.
	httpSessionTimeout = 30 * time.Minute
)

// CheckListenAddr refuses an address that is not host:port on a loopback
// host: the endpoint runs tasks on the mesh and must not be reachable from
// another machine.
func CheckListenAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("MCP listen address %q: want host:port such as 127.0.0.1:7777: %w", addr, errdefs.ErrInvalid)
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("MCP listen address %q: only loopback addresses (127.0.0.1, [::1], localhost) are allowed; reach the peer from elsewhere over ssh: %w", addr, errdefs.ErrInvalid)
	}
	return nil
}

// isLoopbackHost reports whether a host name or IP (without port) is
// loopback. Only "localhost" itself is trusted by name; nothing is resolved.
func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// HTTPServer serves the MCP server as streamable HTTP on a loopback
// listener, behind the bearer token and the Host and Origin checks.
type HTTPServer struct {
	srv     *Server
	ln      net.Listener
	handler http.Handler

	closeOnce sync.Once
}

// ListenHTTP listens on addr (loopback only) and prepares the endpoint; token
// is what every request must send as "Authorization: Bearer TOKEN", and
// tokenFile is named in the refusal so a user knows where to find it.
func ListenHTTP(srv *Server, addr string, token []byte, tokenFile string) (*HTTPServer, error) {
	if err := CheckListenAddr(addr); err != nil {
		return nil, err
	}
	if len(token) == 0 {
		return nil, fmt.Errorf("MCP HTTP token is empty: %w", errdefs.ErrInvalid)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("MCP listen on %s: %w", addr, err)
	}
	h := &HTTPServer{srv: srv, ln: ln}
	h.handler = h.Handler(token, tokenFile)
	return h, nil
}

// Addr is the address the endpoint listens on.
func (h *HTTPServer) Addr() net.Addr { return h.ln.Addr() }

// URL is the endpoint's URL.
func (h *HTTPServer) URL() string { return "http://" + h.ln.Addr().String() + Path }

// Handler is the guarded endpoint, for tests and for serving on another
// listener: only Path is served, and only to requests that pass guard.
func (h *HTTPServer) Handler(token []byte, tokenFile string) http.Handler {
	streamable := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return h.srv.mcp }, &mcp.StreamableHTTPOptions{
		Logger:         h.srv.log,
		SessionTimeout: httpSessionTimeout,
	})
	mux := http.NewServeMux()
	mux.Handle(Path, checkBody(streamable))
	_, port, _ := net.SplitHostPort(h.ln.Addr().String())
	return guard(mux, port, token, tokenFile)
}

// guard refuses, before anything else runs: a Host that is not a loopback
// name (DNS rebinding), an Origin that is not this endpoint on a loopback
// name (a web page in the user's browser), and a missing or wrong bearer
// token. It never sets CORS headers, so browsers keep cross-origin pages out.
func guard(next http.Handler, port string, token []byte, tokenFile string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackAuthority(r.Host, port) {
			http.Error(w, fmt.Sprintf("forbidden: Host %q is not this loopback endpoint (DNS rebinding protection)", r.Host), http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !loopbackOrigin(o, port) {
			http.Error(w, fmt.Sprintf("forbidden: Origin %q is not allowed; only local clients may call this endpoint", o), http.StatusForbidden)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cortex-peer"`)
			http.Error(w, fmt.Sprintf("unauthorized: missing or wrong token: send \"Authorization: Bearer TOKEN\" with the token stored in %s", tokenFile), http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkBody answers a POST whose body is not one JSON-RPC message the SDK
// can take (not JSON, a batch, not a request or notification) with a
// JSON-RPC error object, as stdio does, rather than the SDK's plain text:
// a client reads whatever comes back as JSON-RPC.
func checkBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxStdioLine+1))
		r.Body.Close()
		if err != nil {
			http.Error(w, fmt.Sprintf("read request: %v", err), http.StatusBadRequest)
			return
		}
		code, why, id := int64(0), "", jsonrpc.ID{}
		if len(body) > maxStdioLine {
			code, why = jsonrpc.CodeInvalidRequest, fmt.Sprintf("invalid request: message over %d bytes", maxStdioLine)
		} else if msg := bytes.TrimSpace(body); len(msg) == 0 {
			code, why = jsonrpc.CodeInvalidRequest, "invalid request: the body is empty"
		} else {
			code, why, id = check(msg)
		}
		if code != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_ = writeError(w, id, code, why)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// loopbackAuthority accepts host[:port] when host is loopback and the port,
// if given, is the endpoint's.
func loopbackAuthority(hostport, port string) bool {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		host, p = hostport, ""
	}
	return isLoopbackHost(host) && (p == "" || p == port)
}

func loopbackOrigin(origin, port string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	return isLoopbackHost(u.Hostname()) && u.Port() == port
}

// Serve serves until ctx ends, then closes every session and gives in-flight
// calls httpShutdownTimeout to end.
func (h *HTTPServer) Serve(ctx context.Context) error {
	hs := &http.Server{
		Handler:           h.handler,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(h.ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
			return nil
		}
		return fmt.Errorf("MCP HTTP server: %w", err)
	case <-ctx.Done():
		// Open GET streams would hold Shutdown until its timeout.
		for ss := range h.srv.mcp.Sessions() {
			_ = ss.Close()
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpShutdownTimeout)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
		<-errc
		return nil
	}
}

// Close closes the listener (ending Serve). Safe to call twice.
func (h *HTTPServer) Close() error {
	var err error
	h.closeOnce.Do(func() {
		if err = h.ln.Close(); errors.Is(err, net.ErrClosed) {
			err = nil
		}
	})
	return err
}
