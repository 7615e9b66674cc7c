// Package cli is the command line of cortex-peer: the root command, the
// flags every verb shares, and the client verbs, which talk to a running peer
// through its local API. It is linked into both binaries:
//
//   - cortex-peer, the command users type. It links this package and the API
//     client only, so that a command starts in about 3 ms instead of 12: Go
//     initializes every package of a binary before main, and the peer's
//     (libp2p, containerd, badger, gRPC) took 9 ms of every command.
//   - cortex-peerd, the peer itself, which adds the verbs that run it
//     (PeerVerbs). cortex-peer hands those to cortex-peerd by exec.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes of every verb.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// UsageError marks errors in how the command was called.
type UsageError struct{ error }

// Usage wraps err as a usage error: the exit code is 2 and the user is
// pointed at --help.
func Usage(err error) error { return UsageError{err} }

// Main runs the command line with the client verbs and those verbs builds,
// and exits.
func Main(verbs func(*Globals) []*cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	g := &Globals{}
	root := NewRoot(g, verbs(g)...)
	root.SetContext(ctx)
	err := root.Execute()
	stop()
	if err == nil {
		os.Exit(ExitOK)
	}
	var es exitStatus
	if errors.As(err, &es) {
		os.Exit(es.code) // the task's own status; run has said what there was to say
	}
	fmt.Fprintf(os.Stderr, "cortex-peer: %v\n", err)
	var ue UsageError
	if errors.As(err, &ue) {
		fmt.Fprintln(os.Stderr, "Run 'cortex-peer --help' for usage.")
		os.Exit(ExitUsage)
	}
	os.Exit(ExitError)
}

// Globals are the flags every verb shares.
type Globals struct {
	Data string // --data: the peer's data dir
	JSON bool   // --json: machine-readable output
}

// NewRoot returns the root command with every client verb and extra.
func NewRoot(g *Globals, extra ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:   "cortex-peer",
		Short: "A peer of a cortex mesh: delegate work to the machines of your team",
		Long: `cortex-peer runs one peer of a private peer-to-peer mesh and talks to it.

Start with:
  cortex-peer init                 # identity, config and a new mesh key in ~/.cortex-peer
  cortex-peer join                 # run the peer in the foreground
  cortex-peer peers                # the mesh, with capabilities

Every client verb finds its peer through --data DIR (default $CORTEX_PEER_DATA,
else ~/.cortex-peer) and prints JSON with --json.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.Data, "data", "", "data directory of the peer (default $CORTEX_PEER_DATA, else ~/.cortex-peer)")
	root.PersistentFlags().BoolVar(&g.JSON, "json", false, "print machine-readable JSON")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return UsageError{err} })
	root.AddCommand(
		newIDCmd(g),
		newPeersCmd(g),
		newStatusCmd(g),
		newVersionCmd(g),
		newWsCmd(g),
		newDagCmd(g),
		newPutCmd(g),
		newGetCmd(g),
		newCatCmd(g),
		newUnpinCmd(g),
		newRunCmd(g),
		newImageCmd(g),
		newTasksCmd(g),
		newLogsCmd(g),
		newCancelCmd(g),
		newResultCmd(g),
		newBrowserCmd(g),
		newLSPCmd(g),
		newDrainCmd(g),
		newEligibleCmd(g),
		newServiceCmd(g),
		newReleaseCmd(g),
		newUpdateCmd(g),
	)
	root.AddCommand(extra...)
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every command group (ws, dag, image…)
// answer an unknown subcommand with a usage error: cobra shows a group's
// help and exits 0 for `ws frob`, which a script takes for success.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if cmd.HasParent() && cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return Usage(fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath()))
		}
	}
}

// NoArgs refuses positional arguments with a usage error.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return UsageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}
