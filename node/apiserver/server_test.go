package apiserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/node/datadir"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	"github.com/cortex-peer/cortex-peer/testnet"
)

func TestMain(m *testing.M) { testnet.VerifyNoLeaks(m) }

func TestAPIOverSocket(t *testing.T) {
	tn := testnet.New(t, 3)
	if err := tn.WaitMesh(testnet.Context(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	p1 := tn.Peers[0]
	c, err := apiclient.Dial(p1.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testnet.Context(t, 10*time.Second)

	id, err := c.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id.GetId() != p1.Node.ID().String() || len(id.GetAddrs()) == 0 || !strings.HasSuffix(id.GetAddrs()[0], "/p2p/"+id.GetId()) {
		t.Fatalf("identity: %+v", id)
	}
	peers, err := c.Peers(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 {
		t.Fatalf("peers: got %d, want 2", len(peers))
	}
	for _, p := range peers {
		if p.GetVersion() == "" || p.GetLabels()["testnet"] == "" || p.GetCapacity().GetCpus() == 0 || p.GetLastSeen() == nil || len(p.GetAddrs()) == 0 {
			t.Fatalf("peer info incomplete: %+v", p)
		}
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetId() != id.GetId() || st.GetKnownPeers() != 2 || !st.GetPrivateNetwork() || st.GetDataDir() != p1.Dir {
		t.Fatalf("status: %+v", st)
	}

	sock := filepath.Join(p1.Dir, datadir.SocketFile)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, err %v", fi.Mode(), err)
	}
}

// rawHTTP sends a Connect JSON request over the socket, as curl would.
func rawHTTP(t *testing.T, sock, token, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, "http://local/cortex.api.v1.PeerService/Identity", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAPIRefusesBadTokenAndGarbage(t *testing.T) {
	tn := testnet.New(t, 1)
	p := tn.Peers[0]
	sock := filepath.Join(p.Dir, datadir.SocketFile)
	tokenBytes, err := os.ReadFile(filepath.Join(p.Dir, datadir.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenBytes))
	ctx := testnet.Context(t, 10*time.Second)

	// A typed client with a wrong token gets Unauthenticated, with a message
	// naming the token file.
	bad := apiclient.New(p.Dir, sock, "wrong")
	defer bad.Close()
	_, err = bad.Identity(ctx)
	if !errors.Is(err, errdefs.ErrUnauthenticated) || !strings.Contains(err.Error(), "api.token") {
		t.Fatalf("wrong token: %v", err)
	}

	// Plain JSON over HTTP, as with curl --unix-socket.
	code, body := rawHTTP(t, sock, "", "{}")
	if code != http.StatusUnauthorized || !strings.Contains(body, `"unauthenticated"`) || !strings.Contains(body, "api.token") {
		t.Fatalf("no token: %d %s", code, body)
	}
	code, body = rawHTTP(t, sock, token, "{}")
	if code != http.StatusOK || !strings.Contains(body, p.Node.ID().String()) {
		t.Fatalf("JSON with token: %d %s", code, body)
	}
	code, body = rawHTTP(t, sock, token, "{not json")
	if code == http.StatusOK || !strings.Contains(body, "invalid_argument") {
		t.Fatalf("malformed JSON: %d %s", code, body)
	}

	// Garbage bytes on the socket: the connection is dropped, the peer serves on.
	for _, junk := range [][]byte{bytes.Repeat([]byte{0xff}, 1<<16), []byte("GET / HTTP/9.9\r\n\r\n"), []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00")} {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = conn.Write(junk)
		_, _ = io.Copy(io.Discard, conn)
		conn.Close()
	}
	good := apiclient.New(p.Dir, sock, token)
	defer good.Close()
	if _, err := good.Identity(ctx); err != nil {
		t.Fatalf("peer stopped serving after garbage: %v", err)
	}
}
