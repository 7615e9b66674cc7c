package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/node/release/releasekey"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

func newReleaseCmd(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Sign and publish releases for the mesh's signed self-update: keygen, publish",
	}
	cmd.AddCommand(newReleaseKeygenCmd(g), newReleasePublishCmd(g))
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

// Defaults of release publish.
const (
	defaultReleaseExpiry  = 30 * 24 * time.Hour
	defaultReleaseRollout = "100%"
	// hashProgressEvery is how often hashing the binary shows progress.
	hashProgressEvery = 8 << 20
)

func newReleasePublishCmd(g *Globals) *cobra.Command {
	var (
		keyFile, binary, version, platform, rollout string
		expires                                     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "publish --key release.key --binary PATH --version V",
		Short: "Sign a release of the peer's binary and announce it to the mesh",
		Long: `publish signs a release of cortex-peerd and announces it to the mesh through
the peer of --data, which must be running.

The key stays on this machine: publish reads release.key (made by 'release
keygen'), signs a manifest here (version, platform, the binary's CID, length
and SHA-256, when it was published and when it expires, the rollout) and
sends the peer only the signed manifest. The binary is put on this peer (as
'cortex-peer put' does, pinned) and this peer serves it over the mesh.

Peers that trust the key (its release.pub line in their config's [update]
trusted_keys) fetch the binary over the mesh, verify it against the signed
hash and install it; a peer that does not trust the key ignores the release.
--rollout limits the release to that share of the peers: publishing the same
version again with a larger --rollout widens it (up to 100%, the default).
'cortex-peer update status' on any peer shows what it saw and did.`,
		Example: `  cortex-peer release publish --key ~/cortex-release/release.key --binary bin/cortex-peerd --version 1.4.0 --rollout 20%
  cortex-peer release publish --key ~/cortex-release/release.key --binary bin/cortex-peerd --version 1.4.0`,
		Args: NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case keyFile == "":
				return Usage(fmt.Errorf("--key release.key is required (make one with 'cortex-peer release keygen')"))
			case binary == "":
				return Usage(fmt.Errorf("--binary PATH is required: the cortex-peerd to release"))
			case version == "":
				return Usage(fmt.Errorf("--version is required: the release's semantic version, like 1.4.0"))
			case !releasekey.ValidVersion(version):
				return Usage(fmt.Errorf("--version %q is not a semantic version (like 1.4.0)", version))
			case expires <= 0:
				return Usage(fmt.Errorf("--expires %v: want a positive duration, like 720h", expires))
			}
			share, err := parseRollout(rollout)
			if err != nil {
				return Usage(err)
			}
			if platform == "" {
				platform = runtime.GOOS + "/" + runtime.GOARCH
			}
			key, err := releasekey.LoadPrivateKey(keyFile)
			if err != nil {
				return err
			}
			path, err := filepath.Abs(binary)
			if err != nil {
				return err
			}
			p := newProgress(g, cmd.ErrOrStderr())
			sum, length, err := hashBinary(path, p.update)
			p.done()
			if err != nil {
				return err
			}
			m := releasekey.Manifest{
				Version: version, Platform: platform, Binary: "(put next)", Length: length, SHA256: sum,
				Published: time.Now().UTC(), Rollout: share,
			}
			m.Expires = m.Published.Add(expires)
			// Refuse a bad manifest before the binary is put.
			if err := m.Check(); err != nil {
				return Usage(err)
			}
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				p := newProgress(g, cmd.ErrOrStderr())
				put, err := c.ArtifactPut(ctx, path, p.update)
				p.done()
				if err != nil {
					return err
				}
				if put.GetDirectory() || int64(put.GetBytes()) != length {
					return fmt.Errorf("put %s: the peer stored %d bytes, the binary hashed %d: did it change? Publish again", path, put.GetBytes(), length)
				}
				m.Binary = put.GetCid()
				m.Published = time.Now().UTC().Truncate(time.Second)
				m.Expires = m.Published.Add(expires)
				signed, err := releasekey.Sign(m, key)
				if err != nil {
					return err
				}
				envelope, err := signed.Encode()
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(ctx, apiTimeout)
				defer cancel()
				res, err := c.UpdatePublish(ctx, envelope)
				if err != nil {
					return fmt.Errorf("%w (the binary stays pinned on this peer as %s: publish again, or 'cortex-peer unpin %s')", err, m.Binary, m.Binary)
				}
				if g.JSON {
					return printProtoJSON(cmd.OutOrStdout(), res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "published %s (%s, %s, rollout %s, key %s) to %d peers\n",
					res.GetVersion(), res.GetBinary(), formatBytes(uint64(res.GetLength())), formatRollout(res.GetRollout()), shortKeyID(res.GetKeyId()), res.GetPeers())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "the release key that signs (release.key, mode 0600; it never leaves this machine)")
	cmd.Flags().StringVar(&binary, "binary", "", "the cortex-peerd binary to release")
	cmd.Flags().StringVar(&version, "version", "", "the release's semantic version, like 1.4.0")
	cmd.Flags().DurationVar(&expires, "expires", defaultReleaseExpiry, "how long peers act on the release after it is published")
	cmd.Flags().StringVar(&rollout, "rollout", defaultReleaseRollout, "the share of peers that install it: 20% or 0.2 (publish again with more to widen it)")
	cmd.Flags().StringVar(&platform, "platform", "", "GOOS/GOARCH the binary runs on (default: this machine's, "+runtime.GOOS+"/"+runtime.GOARCH+")")
	return cmd
}

// parseRollout reads a rollout as a percentage ("20%") or a fraction
// ("0.2", "1"), in (0, 1].
func parseRollout(s string) (float64, error) {
	t := strings.TrimSpace(s)
	pct, isPct := strings.CutSuffix(t, "%")
	v, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("--rollout %q: want a percentage (20%%) or a fraction (0.2)", s)
	}
	if isPct {
		v /= 100
	}
	if v <= 0 || v > 1 {
		hint := ""
		if !isPct && v > 1 && v <= 100 {
			hint = fmt.Sprintf(" (did you mean %s%%?)", t)
		}
		return 0, fmt.Errorf("--rollout %q: want more than 0 and at most 100%% (1)%s", s, hint)
	}
	return v, nil
}

// formatRollout is a rollout as a percentage.
func formatRollout(r float64) string {
	return strconv.FormatFloat(r*100, 'f', -1, 64) + "%"
}

// shortKeyID is a key id's first characters.
func shortKeyID(id string) string {
	if len(id) > 8 {
		return id[:8] + "…"
	}
	return id
}

// hashBinary reads the file at path once and returns its hex SHA-256 and
// its length. It refuses what no release may carry: a file that is not
// regular, an empty one, one over releasekey.MaxBinarySize.
func hashBinary(path string, progress func(*apiv1.Progress)) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("--binary: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, fmt.Errorf("--binary: %w", err)
	}
	switch {
	case !st.Mode().IsRegular():
		return "", 0, fmt.Errorf("--binary %s is not a regular file: give the cortex-peerd binary", path)
	case st.Size() == 0:
		return "", 0, fmt.Errorf("--binary %s is empty: give the cortex-peerd binary", path)
	case st.Size() > releasekey.MaxBinarySize:
		return "", 0, fmt.Errorf("--binary %s is %s, over the %s a release may be", path, formatBytes(uint64(st.Size())), formatBytes(releasekey.MaxBinarySize))
	}
	h := sha256.New()
	total := uint64(st.Size())
	// One byte past the cap: a file that grew while read is still refused.
	r := io.LimitReader(f, releasekey.MaxBinarySize+1)
	buf := make([]byte, 1<<20)
	var n, shown uint64
	for {
		k, err := r.Read(buf)
		h.Write(buf[:k])
		n += uint64(k)
		if progress != nil && n-shown >= hashProgressEvery {
			shown = n
			progress(&apiv1.Progress{Phase: "hashing", Bytes: n, TotalBytes: max(total, n)})
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", 0, fmt.Errorf("--binary %s: %w", path, err)
		}
	}
	switch {
	case n == 0:
		return "", 0, fmt.Errorf("--binary %s is empty: give the cortex-peerd binary", path)
	case n > releasekey.MaxBinarySize:
		return "", 0, fmt.Errorf("--binary %s is over the %s a release may be", path, formatBytes(releasekey.MaxBinarySize))
	}
	return hex.EncodeToString(h.Sum(nil)), int64(n), nil
}
