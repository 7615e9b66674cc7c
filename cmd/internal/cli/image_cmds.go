package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

func newImageCmd(g *Globals) *cobra.Command {
	img := &cobra.Command{
		Use:   "image",
		Short: "Container images for tasks: import, pull, ls, rm",
		Long: `Images live in the peer's containerd namespace (tasks.namespace in the config,
"cortex" by default). "make deps" imports the test image cortex/busybox:test,
built from Debian's busybox-static.`,
	}
	img.AddCommand(newImageImportCmd(g), newImagePullCmd(g), newImageLsCmd(g), newImageRmCmd(g))
	return img
}

func imageJSON(im *apiv1.Image) map[string]any {
	out := map[string]any{"name": im.GetName(), "digest": im.GetDigest(), "size": im.GetSize()}
	if im.GetCreated() != nil {
		out["created"] = im.GetCreated().AsTime().Format(time.RFC3339)
	}
	return out
}

func printImages(cmd *cobra.Command, g *Globals, ims []*apiv1.Image) error {
	if g.JSON {
		list := make([]map[string]any, len(ims))
		for i, im := range ims {
			list[i] = imageJSON(im)
		}
		return PrintJSON(cmd.OutOrStdout(), list)
	}
	tw := newTable(cmd.OutOrStdout())
	fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE")
	for _, im := range ims {
		d := im.GetDigest()
		if len(d) > 19 {
			d = d[:19]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", im.GetName(), d, formatBytes(im.GetSize()))
	}
	return tw.Flush()
}

func newImageImportCmd(g *Globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import TARBALL",
		Short: "Import an OCI or docker-archive tarball (as ctr image import names it)",
		Long: `import reads an OCI image layout tarball or a "docker save" archive (gzip and
zstd too) and unpacks it for tasks. Images are named as ctr names them: the
index's io.containerd.image.name annotation, else its
org.opencontainers.image.ref.name, else the archive's repo tags; --name names
an image the archive leaves unnamed. A malformed archive leaves nothing behind.`,
		Example: "  cortex-peer image import busybox.tar",
		Args:    exactArgs(1, "one tarball"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				ims, err := c.ImageImport(ctx, p, name)
				if err != nil {
					return err
				}
				return printImages(cmd, g, ims)
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name for an image the archive does not name")
	return cmd
}

func newImagePullCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from its registry",
		Long: `pull fetches REF (e.g. docker.io/library/alpine:3.20, or alpine:3.20) from its
registry and unpacks it. Credentials come from the docker config file
($DOCKER_CONFIG/config.json, else ~/.docker/config.json) of the user the peer
runs as.`,
		Example: "  cortex-peer image pull docker.io/library/alpine:3.20",
		Args:    exactArgs(1, "one image reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				p := newProgress(g, cmd.ErrOrStderr())
				im, err := c.ImagePull(ctx, args[0], p.update)
				p.done()
				if err != nil {
					return err
				}
				return printImages(cmd, g, []*apiv1.Image{im})
			})
		},
	}
}

func newImageLsCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Short:   "List the images this peer holds",
		Args:    NoArgs,
		Example: "  cortex-peer image ls --json",
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				ims, err := c.ImageList(ctx)
				if err != nil {
					return err
				}
				return printImages(cmd, g, ims)
			})
		},
	}
}

func newImageRmCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Short:   "Remove images by name",
		Example: "  cortex-peer image rm docker.io/library/alpine:3.20",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return UsageError{fmt.Errorf("image rm takes one or more image names")}
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				for _, name := range args {
					if err := c.ImageRemove(ctx, name); err != nil {
						return err
					}
					if !g.JSON {
						fmt.Fprintln(cmd.OutOrStdout(), name)
					}
				}
				return nil
			})
		},
	}
}
