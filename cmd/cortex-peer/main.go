// Command cortex-peer runs a peer of a cortex mesh and talks to it.
//
// Every client verb finds its peer through --data DIR (default
// $CORTEX_PEER_DATA, else ~/.cortex-peer) and accepts --json.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError marks errors in how the command was called.
type usageError struct{ error }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	root.SetContext(ctx)
	err := root.Execute()
	if err == nil {
		os.Exit(exitOK)
	}
	var es exitStatus
	if errors.As(err, &es) {
		os.Exit(es.code) // the task's own status; run has said what there was to say
	}
	fmt.Fprintf(os.Stderr, "cortex-peer: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(os.Stderr, "Run 'cortex-peer --help' for usage.")
		os.Exit(exitUsage)
	}
	os.Exit(exitError)
}

// globals are the flags every verb shares.
type globals struct {
	data string
	json bool
}

func newRootCmd() *cobra.Command {
	g := &globals{}
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
	root.PersistentFlags().StringVar(&g.data, "data", "", "data directory of the peer (default $CORTEX_PEER_DATA, else ~/.cortex-peer)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print machine-readable JSON")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newInitCmd(g),
		newJoinCmd(g),
		newIDCmd(g),
		newPeersCmd(g),
		newStatusCmd(g),
		newVersionCmd(g),
		newMeshKeyCmd(g),
		newTestnetCmd(g),
		newWsCmd(g),
		newDagCmd(g),
		newRunCmd(g),
		newImageCmd(g),
		newTasksCmd(g),
		newLogsCmd(g),
		newCancelCmd(g),
		newResultCmd(g),
		newMCPCmd(g),
	)
	return root
}

// noArgs refuses positional arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}
