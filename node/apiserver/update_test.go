package apiserver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/node/apiserver"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1/apiv1connect"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// fakeUpdates is an updater that answers from fields, for the API layer
// alone: the updater itself is tested in node/update.
type fakeUpdates struct {
	mu        sync.Mutex
	envelopes [][]byte
	status    *apiv1.UpdateStatus
	publish   *apiv1.UpdatePublishResponse
	rollback  *apiv1.UpdateRollbackResponse
	err       error // returned by Publish and Rollback when set
}

func (f *fakeUpdates) Publish(_ context.Context, envelope []byte) (*apiv1.UpdatePublishResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.envelopes = append(f.envelopes, bytes.Clone(envelope))
	if f.err != nil {
		return nil, f.err
	}
	return f.publish, nil
}

func (f *fakeUpdates) got() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.envelopes
}

func (f *fakeUpdates) Status(context.Context) *apiv1.UpdateStatus { return f.status }

func (f *fakeUpdates) Rollback(context.Context) (*apiv1.UpdateRollbackResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return f.rollback, nil
}

// serveAPI serves the local API with svc on a socket in a fresh directory
// and returns the socket and the token; it stops with the test.
func serveAPI(t *testing.T, svc apiserver.Services) (sock, token string) {
	t.Helper()
	// Not t.TempDir: a unix socket's path is bounded (108 bytes).
	dir, err := os.MkdirTemp("", "api")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, token = filepath.Join(dir, "api.sock"), "test-token"
	tokenFile := filepath.Join(dir, "api.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := apiserver.New(apiserver.Config{Socket: sock, TokenFile: tokenFile}, svc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	})
	return sock, token
}

func TestUpdateServiceRoundTrips(t *testing.T) {
	f := &fakeUpdates{
		status: &apiv1.UpdateStatus{
			Version: "1.3.0", Current: "1.3.0", Previous: "1.2.0", Highest: "1.3.0", State: "idle",
			Enabled: true, Auto: true, Supervised: true, TrustedKeys: []string{"0123abcd"}, Bad: []string{"1.2.5"},
			Releases: []*apiv1.UpdateRelease{{Version: "1.4.0", Binary: "bafy", Length: 42, Rollout: 0.2, KeyId: "0123abcd", Verdict: "out_of_rollout"}},
			Failures: []*apiv1.UpdateFailure{{Version: "1.2.5", Peer: "12D3KooW", Reason: "not healthy", AtUnix: 1}},
			Window:   "02:00-04:00", HealthTimeoutMs: 120000,
		},
		publish:  &apiv1.UpdatePublishResponse{Version: "1.4.0", Binary: "bafy", Length: 42, Rollout: 0.2, KeyId: "0123abcd", Peers: 3},
		rollback: &apiv1.UpdateRollbackResponse{From: "1.3.0", To: "1.2.0"},
	}
	sock, token := serveAPI(t, apiserver.Services{Updates: f})
	c := apiclient.New("DIR", sock, token)
	defer c.Close()
	ctx := testnet.Context(t, 10*time.Second)

	envelope := []byte(`{"manifest":"e30=","key":"","signature":""}`)
	pub, err := c.UpdatePublish(ctx, envelope)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(pub, f.publish) {
		t.Fatalf("publish: got %v, want %v", pub, f.publish)
	}
	if got := f.got(); len(got) != 1 || !bytes.Equal(got[0], envelope) {
		t.Fatalf("the updater got envelopes %q, want %q", got, envelope)
	}
	st, err := c.UpdateStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(st, f.status) {
		t.Fatalf("status: got %v, want %v", st, f.status)
	}
	rb, err := c.UpdateRollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(rb, f.rollback) {
		t.Fatalf("rollback: got %v, want %v", rb, f.rollback)
	}

	// An empty envelope is refused before the updater sees it.
	if _, err := c.UpdatePublish(ctx, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("empty envelope: %v, want invalid", err)
	}
	if len(f.got()) != 1 {
		t.Fatalf("the updater saw an empty envelope")
	}

	// The updater's errors keep their kind across the wire.
	for _, kind := range []error{errdefs.ErrInvalid, errdefs.ErrPermissionDenied, errdefs.ErrNotFound, errdefs.ErrUnavailable} {
		f.mu.Lock()
		f.err = fmt.Errorf("updater says no: %w", kind)
		f.mu.Unlock()
		if _, err := c.UpdatePublish(ctx, envelope); !errors.Is(err, kind) || !strings.Contains(err.Error(), "updater says no") {
			t.Errorf("publish failing with %v: got %v", kind, err)
		}
		if _, err := c.UpdateRollback(ctx); !errors.Is(err, kind) || !strings.Contains(err.Error(), "updater says no") {
			t.Errorf("rollback failing with %v: got %v", kind, err)
		}
	}
}

// bearerTransport adds the API token to every request of a raw client.
type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func TestUpdateServiceWithoutUpdater(t *testing.T) {
	sock, token := serveAPI(t, apiserver.Services{})
	ctx := testnet.Context(t, 10*time.Second)

	// On the wire: Unimplemented, for every method.
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	raw := apiv1connect.NewUpdateServiceClient(&http.Client{Transport: bearerTransport{token, tr}}, "http://local")
	_, perr := raw.Publish(ctx, connect.NewRequest(&apiv1.UpdatePublishRequest{Envelope: []byte("{}")}))
	_, serr := raw.Status(ctx, connect.NewRequest(&apiv1.UpdateStatusRequest{}))
	_, rerr := raw.Rollback(ctx, connect.NewRequest(&apiv1.UpdateRollbackRequest{}))
	for name, err := range map[string]error{"publish": perr, "status": serr, "rollback": rerr} {
		if connect.CodeOf(err) != connect.CodeUnimplemented || !strings.Contains(err.Error(), "self-update is not available") {
			t.Errorf("%s without an updater: %v, want unimplemented", name, err)
		}
	}

	// Through the client: the message says what is missing.
	c := apiclient.New("DIR", sock, token)
	defer c.Close()
	if _, err := c.UpdateStatus(ctx); err == nil || !strings.Contains(err.Error(), "update status: self-update is not available") {
		t.Fatalf("client status without an updater: %v", err)
	}
}
