// Command cortex-peer talks to the peer of a cortex mesh that runs on this
// machine, and starts one.
//
// Every client verb finds its peer through --data DIR (default
// $CORTEX_PEER_DATA, else ~/.cortex-peer) and accepts --json. The verbs that
// run the peer itself (init, join, mesh-key, testnet, mcp) are carried out
// by cortex-peerd, installed beside this binary; see package cli for why.
package main

import "github.com/cortex-peer/cortex-peer/cmd/internal/cli"

func main() { cli.Main(cli.Forwarders) }
