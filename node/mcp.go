package node

import (
	"fmt"
	"os"
	"strings"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/node/mcpserver"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// mcpHTTP is the peer's MCP endpoint: the MCP server over the peer's own
// local API, reached through its socket like any client, so the tools see
// exactly what `cortex-peer mcp` sees.
type mcpHTTP struct {
	*mcpserver.HTTPServer
	client *apiclient.Client
}

func newMCPHTTP(n *Node) (*mcpHTTP, error) {
	cfg := n.cfg
	apiToken, err := readToken(cfg.APITokenFile)
	if err != nil {
		return nil, err
	}
	token, err := readToken(cfg.MCPTokenFile)
	if err != nil {
		return nil, err
	}
	client := apiclient.New(cfg.Dir.Root, cfg.APISocket, string(apiToken))
	srv := mcpserver.New(client, mcpserver.Options{Version: cfg.Version, Logger: n.log.With("component", "mcp")})
	h, err := mcpserver.ListenHTTP(srv, cfg.MCPListen, token, cfg.MCPTokenFile)
	if err != nil {
		client.Close()
		return nil, err
	}
	return &mcpHTTP{HTTPServer: h, client: client}, nil
}

// readToken reads a bearer token file: its content, trimmed, not empty.
func readToken(p string) ([]byte, error) {
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

// Close stops listening and drops idle API connections. Safe to call twice.
func (m *mcpHTTP) Close() error {
	err := m.HTTPServer.Close()
	m.client.Close()
	return err
}

// MCPURL is the URL of the peer's MCP HTTP endpoint, or "" when it serves none.
func (n *Node) MCPURL() string {
	if n.mcp == nil {
		return ""
	}
	return n.mcp.URL()
}
