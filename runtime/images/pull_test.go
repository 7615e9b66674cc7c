package images

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// fakeRegistry serves one image over the registry API v2 with basic auth.
type fakeRegistry struct {
	repo, tag, user, password string
	manifest                  blob
	blobs                     map[string]blob
}

func (r *fakeRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.password {
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	path := req.URL.Path
	var b blob
	switch {
	case path == "/v2/":
		return
	case path == "/v2/"+r.repo+"/manifests/"+r.tag || path == "/v2/"+r.repo+"/manifests/"+r.manifest.desc.Digest.String():
		b = r.manifest
	case strings.HasPrefix(path, "/v2/"+r.repo+"/blobs/"):
		var ok bool
		if b, ok = r.blobs[strings.TrimPrefix(path, "/v2/"+r.repo+"/blobs/")]; !ok {
			http.NotFound(w, req)
			return
		}
	default:
		http.NotFound(w, req)
		return
	}
	w.Header().Set("Content-Type", b.desc.MediaType)
	w.Header().Set("Docker-Content-Digest", b.desc.Digest.String())
	w.Header().Set("Content-Length", fmt.Sprint(len(b.data)))
	if req.Method == http.MethodHead {
		return
	}
	w.Write(b.data)
}

// TestPull pulls from a registry on loopback that asks for basic auth,
// with the credentials read from $DOCKER_CONFIG/config.json.
func TestPull(t *testing.T) {
	s := newTestStore(t)
	ti := newTestImage(t, busyboxConfig(), smallLayer(t, "pulled "+randHex(t)))
	reg := &fakeRegistry{repo: "cortex-test/pull-" + randHex(t), tag: "v1", user: "alice", password: "s3cret", blobs: map[string]blob{}}
	for _, b := range ti.blobs {
		if b.desc.MediaType == ocispec.MediaTypeImageManifest {
			reg.manifest = b
		} else {
			reg.blobs[b.desc.Digest.String()] = b
		}
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/" + reg.repo + ":" + reg.tag
	t.Cleanup(func() { removeRepo(t, s, host+"/"+reg.repo) })

	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	config := fmt.Sprintf(`{"auths":{"http://%s/v2/":{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)

	var (
		mu      sync.Mutex
		reports []PullProgress
	)
	img, err := s.Pull(testContext(t), ref, PullOptions{Progress: func(p PullProgress) {
		mu.Lock()
		reports = append(reports, p)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if img.Name != ref || img.Digest != reg.manifest.desc.Digest.String() || !img.Unpacked {
		t.Fatalf("pulled %+v", img)
	}
	mu.Lock()
	last := reports[len(reports)-1]
	for _, p := range reports {
		if p.Done > p.Total {
			t.Errorf("progress %+v: done over total", p)
		}
	}
	mu.Unlock()
	if last.Total == 0 || last.Done != last.Total {
		t.Errorf("last progress %+v", last)
	}
	if tree := snapshotTree(t, s, ref); len(tree) != 2 || !strings.HasPrefix(tree[1], "hello.txt ") {
		t.Fatalf("unpacked pulled image: %v", tree)
	}

	// Wrong credentials, given directly.
	_, err = s.Pull(testContext(t), host+"/"+reg.repo+":v1", PullOptions{Credentials: func(string) (string, string, error) {
		return "alice", "wrong", nil
	}})
	if !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Errorf("wrong password: err = %v, want ErrUnauthenticated", err)
	}
	// No such tag.
	_, err = s.Pull(testContext(t), host+"/"+reg.repo+":nope", PullOptions{})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing tag: err = %v, want ErrNotFound", err)
	}
	if listed(t, s, host+"/"+reg.repo+":nope") {
		t.Error("a failed pull is listed")
	}
	// A malformed reference.
	if _, err := s.Pull(testContext(t), "Not A Ref", PullOptions{}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("bad ref: err = %v, want ErrInvalid", err)
	}
}

// TestPullUnreachable gets ErrUnavailable naming the registry, quickly.
func TestPullUnreachable(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	const bound = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	_, err := s.Pull(ctx, "127.0.0.1:1/x:y", PullOptions{Credentials: func(string) (string, string, error) { return "", "", nil }})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("err = %v, want ErrUnavailable naming 127.0.0.1:1", err)
	}
	if d := time.Since(start); d >= bound {
		t.Fatalf("took %v", d)
	}
	t.Logf("error: %v", err)
	if listed(t, s, "127.0.0.1:1/x:y") {
		t.Fatal("a failed pull is listed")
	}

	// A context that ends first bounds the pull, whatever the registry does.
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = s.Pull(ctx, "192.0.2.1:5000/x:y", PullOptions{Credentials: func(string) (string, string, error) { return "", "", nil }})
	if err == nil || time.Since(start) >= bound {
		t.Fatalf("pull from a black hole: err = %v", err)
	}
	t.Logf("black hole: %v", err)
}

func TestDockerConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(content string) string {
		p := filepath.Join(dir, fmt.Sprintf("config-%d.json", len(content)))
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	path := write(`{
		"auths": {
			"https://index.docker.io/v1/": {"auth": "` + b64("hub:pw:with:colons") + `"},
			"registry.example.com": {"username": "u", "password": "p"},
			"https://Token.Example.com/v2/": {"identitytoken": "tok"},
			"broken.example.com": {"auth": "%%%"},
			"nocolon.example.com": {"auth": "` + b64("justuser") + `"}
		},
		"credHelpers": {"ecr.example.com": "ecr-login"},
		"credsStore": "desktop"
	}`)
	c, err := LoadDockerConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host, user, secret string
		fail               bool
	}{
		{host: "registry-1.docker.io", user: "hub", secret: "pw:with:colons"},
		{host: "docker.io", user: "hub", secret: "pw:with:colons"},
		{host: "registry.example.com", user: "u", secret: "p"},
		{host: "token.example.com", secret: "tok"},
		{host: "unknown.example.com"},
		{host: "broken.example.com", fail: true},
		{host: "nocolon.example.com", fail: true},
	} {
		u, sec, err := c.Credentials(tc.host)
		if tc.fail {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", tc.host, err)
			}
			continue
		}
		if err != nil || u != tc.user || sec != tc.secret {
			t.Errorf("%s: %q %q %v, want %q %q", tc.host, u, sec, err, tc.user, tc.secret)
		}
	}
	if h := c.Helper("ecr.example.com"); h != "ecr-login" {
		t.Errorf("helper of ecr = %q", h)
	}
	if h := c.Helper("unknown.example.com"); h != "desktop" {
		t.Errorf("helper of unknown = %q", h)
	}
	if h := c.Helper("registry.example.com"); h != "" {
		t.Errorf("helper of a host with auths = %q", h)
	}

	if c, err := LoadDockerConfig(filepath.Join(dir, "missing.json")); err != nil {
		t.Errorf("missing file: %v", err)
	} else if u, s, _ := c.Credentials("docker.io"); u != "" || s != "" {
		t.Error("missing file gives credentials")
	}
	if _, err := LoadDockerConfig(write(`{"auths": [`)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("malformed file: err = %v, want ErrInvalid", err)
	}
}
