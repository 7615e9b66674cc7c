package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/release/releasekey"
)

func newReleaseCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Release keys for the mesh's signed self-update: keygen",
	}
	cmd.AddCommand(newReleaseKeygenCmd(g))
	return cmd
}

func newReleaseKeygenCmd(g *Globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out DIR",
		Short: "Create a release key pair: DIR/release.key (0600) and DIR/release.pub",
		Long: `keygen creates an ed25519 release key pair. release.key (mode 0600) signs
releases; keep it off the peers, like any signing key. release.pub is one line:
paste it into the [update] trusted_keys of every peer that should install the
releases it signs. An existing release.key is never replaced.`,
		Example: `  cortex-peer release keygen --out ~/cortex-release`,
		Args:    NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return Usage(fmt.Errorf("--out DIR is required"))
			}
			pub, err := releasekey.GenerateKeyFiles(out)
			if err != nil {
				return err
			}
			if g.JSON {
				return PrintJSON(cmd.OutOrStdout(), map[string]string{
					"private_key": filepath.Join(out, releasekey.PrivateKeyFile),
					"public_key":  filepath.Join(out, releasekey.PublicKeyFile),
					"key_id":      releasekey.KeyID(pub),
					"trusted_key": releasekey.FormatPublicKey(pub),
				})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (keep it secret) and %s\nkey id %s\n",
				filepath.Join(out, releasekey.PrivateKeyFile), filepath.Join(out, releasekey.PublicKeyFile), releasekey.KeyID(pub))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to write release.key and release.pub into (created 0700)")
	return cmd
}
