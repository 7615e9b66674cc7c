package peercmds

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/cmd/internal/cli"
	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/buildinfo"
	"github.com/cortex-peer/cortex-peer/node/mcpserver"
)

func newMCPCmd(g *cli.Globals) *cobra.Command {
	var logLevel string
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: cli.PeerVerbShort("mcp"),
		Long: `mcp speaks the Model Context Protocol on stdin and stdout, so an AI agent
that spawns its tools (Claude Code, Cursor, the MCP inspector…) can use the
mesh: every tool calls the local API of the peer of --data (which must be
running: cortex-peer join). Logs go to stderr.

Tools: run_task, start_task, get_task, task_logs, cancel_task, list_tasks,
list_peers, workspace_add, workspace_get, workspace_diff, workspace_merge.
Output lines of a running task arrive as progress notifications; long output
is returned as head, tail and a reference that task_logs pages through.
Relative paths are resolved against the directory mcp was started in.

For agents that connect over HTTP instead, start the peer with
--mcp-listen 127.0.0.1:PORT (or [mcp] listen in config.toml).`,
		Example: `  claude mcp add cortex -- cortex-peer mcp
  cortex-peer mcp --data /srv/peer1`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cli.DialPeer(g)
			if err != nil {
				return err
			}
			defer c.Close()
			wd, err := os.Getwd()
			if err != nil {
				return err
			}
			log := node.NewLogger(cmd.ErrOrStderr(), logLevel, "text").With("component", "mcp")
			srv := mcpserver.New(c, mcpserver.Options{Version: buildinfo.Version, WorkDir: wd, Logger: log})
			return srv.Run(cmd.Context(), &mcpserver.StdioTransport{In: os.Stdin, Out: os.Stdout})
		},
	}
	cmd.Flags().StringVar(&logLevel, "log-level", slog.LevelWarn.String(), "debug, info, warn or error (logs go to stderr)")
	return cmd
}
