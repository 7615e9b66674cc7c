package images

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// maxDockerConfigSize bounds the docker config file read into memory.
const maxDockerConfigSize = 4 << 20

// DockerConfig holds the registry credentials of a docker config file
// (config.json): its "auths" entries, with a base64 "auth" of
// "user:password", or "username" and "password", or an "identitytoken".
// Credential helpers ("credsStore", "credHelpers") are not run; Helper says
// which one a host would use, so the caller can tell the user.
type DockerConfig struct {
	path    string
	auths   map[string]dockerAuth // by canonical host
	store   string
	helpers map[string]string // by canonical host
}

type dockerAuth struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// DefaultDockerConfigPath is where docker keeps its config:
// $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
func DefaultDockerConfigPath() string {
	if dir := os.Getenv("DOCKER_CONFIG"); dir != "" {
		return filepath.Join(dir, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}

// LoadDockerConfig reads the docker config file at path. A missing file (or
// an empty path) is an empty config: pulls are anonymous. A malformed one
// wraps ErrInvalid.
func LoadDockerConfig(path string) (*DockerConfig, error) {
	c := &DockerConfig{path: path, auths: map[string]dockerAuth{}, helpers: map[string]string{}}
	if path == "" {
		return c, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	p, err := io.ReadAll(io.LimitReader(f, maxDockerConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	if len(p) > maxDockerConfigSize {
		return nil, fmt.Errorf("docker config %s is over %d bytes: %w", path, maxDockerConfigSize, errdefs.ErrInvalid)
	}
	var raw struct {
		Auths       map[string]dockerAuth `json:"auths"`
		CredsStore  string                `json:"credsStore"`
		CredHelpers map[string]string     `json:"credHelpers"`
	}
	if err := json.Unmarshal(p, &raw); err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, withKind(errdefs.ErrInvalid, err))
	}
	for key, a := range raw.Auths {
		c.auths[canonicalRegistry(key)] = a
	}
	for key, h := range raw.CredHelpers {
		c.helpers[canonicalRegistry(key)] = h
	}
	c.store = raw.CredsStore
	return c, nil
}

// Credentials returns the user and secret for a registry host, as
// remotes/docker's authorizer asks for them: empty when there are none,
// user empty and secret an identity token when the entry holds one.
func (c *DockerConfig) Credentials(host string) (user, secret string, err error) {
	a, ok := c.auths[canonicalRegistry(host)]
	if !ok {
		return "", "", nil
	}
	switch {
	case a.IdentityToken != "":
		return "", a.IdentityToken, nil
	case a.Auth != "":
		p, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a.Auth))
		if err != nil {
			return "", "", fmt.Errorf("docker config %s: auth of %s is not base64: %w", c.path, host, withKind(errdefs.ErrInvalid, err))
		}
		user, secret, ok := strings.Cut(string(p), ":")
		if !ok {
			return "", "", fmt.Errorf("docker config %s: auth of %s is not user:password: %w", c.path, host, errdefs.ErrInvalid)
		}
		return user, secret, nil
	}
	return a.Username, a.Password, nil
}

// Helper returns the credential helper the config names for host ("" when
// none), which this package does not run.
func (c *DockerConfig) Helper(host string) string {
	if _, ok := c.auths[canonicalRegistry(host)]; ok {
		return ""
	}
	if h := c.helpers[canonicalRegistry(host)]; h != "" {
		return h
	}
	return c.store
}

// canonicalRegistry reduces the ways docker config files and references
// write a registry ("https://index.docker.io/v1/", "registry-1.docker.io",
// "http://localhost:5000/v2") to a host[:port], with Docker Hub's names as
// "docker.io".
func canonicalRegistry(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if strings.Contains(s, "://") {
		if u, err := url.Parse(s); err == nil && u.Host != "" {
			s = u.Host
		}
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	switch s {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return s
}
