// Package peercmds holds the verbs that run the peer or a part of it: init,
// join, mesh-key, testnet and mcp. Only cortex-peerd links it; see package
// cli.
package peercmds

import (
	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/cmd/internal/cli"
)

// Commands returns the peer verbs, in the order of cli.PeerVerbs.
func Commands(g *cli.Globals) []*cobra.Command {
	return []*cobra.Command{
		newInitCmd(g),
		newJoinCmd(g),
		newMeshKeyCmd(g),
		newTestnetCmd(g),
		newMCPCmd(g),
	}
}
