package node

import (
	"log/slog"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/node/apiserver"
	"github.com/cortex-peer/cortex-peer/node/mcpserver"
)

// mcpHTTP is the peer's MCP endpoint: the MCP server over the peer's own
// local API, reached through its socket like any client, so the tools see
// exactly what `cortex-peer mcp` sees.
type mcpHTTP struct {
	*mcpserver.HTTPServer
	client *apiclient.Client
}

func newMCPHTTP(cfg Config, log *slog.Logger) (*mcpHTTP, error) {
	apiToken, err := apiserver.ReadToken(cfg.API.TokenFile)
	if err != nil {
		return nil, err
	}
	token, err := apiserver.ReadToken(cfg.MCPTokenFile)
	if err != nil {
		return nil, err
	}
	client := apiclient.New(cfg.Dir.Root, cfg.API.Socket, string(apiToken))
	srv := mcpserver.New(client, mcpserver.Options{Version: cfg.Version, Logger: log})
	h, err := mcpserver.ListenHTTP(srv, cfg.MCPListen, token, cfg.MCPTokenFile)
	if err != nil {
		client.Close()
		return nil, err
	}
	return &mcpHTTP{HTTPServer: h, client: client}, nil
}

// Close stops listening and drops idle API connections. Safe to call twice.
func (m *mcpHTTP) Close() error {
	err := m.HTTPServer.Close()
	m.client.Close()
	return err
}
