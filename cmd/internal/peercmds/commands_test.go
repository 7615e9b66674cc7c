package peercmds

import (
	"testing"

	"github.com/cortex-peer/cortex-peer/cmd/internal/cli"
)

// cortex-peer forwards exactly the verbs of cli.PeerVerbs; a verb added here
// and not there would be missing from the command users type.
func TestCommandsMatchPeerVerbs(t *testing.T) {
	cmds := Commands(&cli.Globals{})
	if len(cmds) != len(cli.PeerVerbs) {
		t.Fatalf("%d commands, %d peer verbs", len(cmds), len(cli.PeerVerbs))
	}
	for i, c := range cmds {
		if v := cli.PeerVerbs[i]; c.Name() != v.Name || c.Short != v.Short {
			t.Errorf("command %d is %s (%q), peer verb is %s (%q)", i, c.Name(), c.Short, v.Name, v.Short)
		}
	}
}
