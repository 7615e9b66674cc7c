// Command cortex-peerd is the peer of a cortex mesh: it carries out the
// verbs that run the peer or a part of it (init, join, mesh-key, testnet,
// mcp), which users type as `cortex-peer VERB`, and every client verb too.
package main

import (
	"github.com/cortex-peer/cortex-peer/cmd/internal/cli"
	"github.com/cortex-peer/cortex-peer/cmd/internal/peercmds"
)

func main() { cli.Main(peercmds.Commands) }
