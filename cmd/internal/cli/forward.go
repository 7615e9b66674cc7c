package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// PeerBinary is the peer's own binary, installed beside cortex-peer.
const PeerBinary = "cortex-peerd"

// PeerVerbs are the verbs that run the peer or a part of it, with their
// one-line help. They are built into cortex-peerd; cortex-peer forwards them
// there (Forwarders), so both binaries list the same verbs.
var PeerVerbs = []struct{ Name, Short string }{
	{"init", "Create a peer: identity, config file, API token and mesh key"},
	{"join", "Run the peer in the foreground until SIGINT or SIGTERM (which drain it first)"},
	{"mesh-key", "Print the mesh key, to copy to a machine that should join this mesh"},
	{"testnet", "Start N real peers on 127.0.0.1 as separate processes, until SIGINT or SIGTERM"},
	{"mcp", "Serve MCP on stdin/stdout for an AI agent, bound to the local peer"},
}

// PeerVerbShort returns the one-line help of a peer verb.
func PeerVerbShort(name string) string {
	for _, v := range PeerVerbs {
		if v.Name == name {
			return v.Short
		}
	}
	panic("cli: no peer verb " + name)
}

// Forwarders returns a command for each peer verb that replaces this
// process with cortex-peerd, given the same arguments: flags, help, signals,
// stdio and the exit status are then the peer's own.
func Forwarders(*Globals) []*cobra.Command {
	cmds := make([]*cobra.Command, 0, len(PeerVerbs))
	for _, v := range PeerVerbs {
		cmd := &cobra.Command{
			Use:                v.Name,
			Short:              v.Short,
			DisableFlagParsing: true,
			RunE: func(*cobra.Command, []string) error {
				return execPeer(v.Name, os.Args[1:])
			},
			// Shell completion asks cortex-peerd, which knows the verb's flags.
			ValidArgsFunction: func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
				if err := execPeer(v.Name, os.Args[1:]); err != nil {
					cobra.CompDebugln(err.Error(), true)
				}
				return nil, cobra.ShellCompDirectiveError
			},
		}
		cmd.SetHelpFunc(func(c *cobra.Command, _ []string) {
			if err := execPeer(v.Name, []string{v.Name, "--help"}); err != nil {
				fmt.Fprintf(c.ErrOrStderr(), "cortex-peer: %v\n", err)
			}
		})
		cmds = append(cmds, cmd)
	}
	return cmds
}

// execPeer replaces this process with cortex-peerd running args. It returns
// only on failure.
func execPeer(verb string, args []string) error {
	bin, err := findPeerBinary()
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	argv := append([]string{"cortex-peer"}, args...)
	if err := syscall.Exec(bin, argv, os.Environ()); err != nil {
		return fmt.Errorf("%s: start %s: %w", verb, bin, err)
	}
	return nil // not reached
}

// findPeerBinary looks beside this binary first, so that a build and its
// peer always go together, then on $PATH.
func findPeerBinary() (string, error) {
	exe, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(exe), PeerBinary)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath(PeerBinary); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s, the peer's binary, is neither beside %s nor on $PATH (`make build` puts both in bin/): %w", PeerBinary, exe, errdefs.ErrNotFound)
}
