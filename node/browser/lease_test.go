package browser_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// syncBuffer is a log sink the peers write while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLeaseExpirySavesState: a session idle past its lease is closed, its
// state saved first (the CID is logged) and restorable in a new session.
func TestLeaseExpirySavesState(t *testing.T) {
	requireChromium(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/set" {
			http.SetCookie(w, &http.Cookie{Name: "who", Value: "erin", Path: "/", Expires: time.Now().Add(time.Hour)})
		}
		fmt.Fprint(w, `<html><body>ok</body></html>`)
	}))
	defer web.Close()
	logs := &syncBuffer{}
	tn := testnet.New(t, 1, testnet.WithLogs(logs, slog.LevelInfo), testnet.WithConfig(func(_ int, cfg *node.Config) {
		cfg.Browser.Bridge.IdleTTL = time.Second
	}))
	noChromiumLeft(t, tn)
	ctx := testnet.Context(t, 2*time.Minute)
	b := tn.Clients(t)[0].Browser()
	s := open(ctx, t, b, &apiv1.BrowserOpenRequest{})
	navigate(ctx, t, b, s, web.URL+"/set")
	testnet.Eventually(t, "the lease to run out", 30*time.Second, func() bool {
		list, err := b.List(ctx, connect.NewRequest(&apiv1.BrowserListRequest{}))
		return err == nil && len(list.Msg.GetSessions()) == 0
	})
	if _, err := b.Evaluate(ctx, connect.NewRequest(&apiv1.BrowserEvaluateRequest{Session: s, Expression: "1"})); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a call on an expired session: %v, want not found", err)
	}
	m := regexp.MustCompile(`browser state saved.* cid=(\w+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no saved state in the log of the expiry:\n%s", logs.String())
	}
	restored := open(ctx, t, b, &apiv1.BrowserOpenRequest{State: m[1]})
	navigate(ctx, t, b, restored, web.URL+"/")
	if got := eval(ctx, t, b, restored, `document.cookie`); got != "who=erin" {
		t.Fatalf("the state saved at expiry restores cookies %q, want who=erin", got)
	}
}

// TestDrainSavesState: a drain that stops the peer saves the state of
// every session it hosts first (the CID is logged), restorable elsewhere.
func TestDrainSavesState(t *testing.T) {
	requireChromium(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/set" {
			http.SetCookie(w, &http.Cookie{Name: "who", Value: "finn", Path: "/", Expires: time.Now().Add(time.Hour)})
		}
		fmt.Fprint(w, `<html><body>ok</body></html>`)
	}))
	defer web.Close()
	logs := &syncBuffer{}
	tn := testnet.New(t, 2, testnet.WithLogs(logs, slog.LevelInfo))
	noChromiumLeft(t, tn)
	ctx := testnet.Context(t, 2*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	b := cs[0].Browser()
	s := open(ctx, t, b, &apiv1.BrowserOpenRequest{})
	navigate(ctx, t, b, s, web.URL+"/set")
	if _, err := tn.Peers[0].Node.Drain(ctx, time.Second, false, nil); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`browser state saved.* cid=(\w+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no saved state in the log of the drain:\n%s", logs.String())
	}
	// The state is a DAG like any other: the other peer fetches it.
	other := cs[1].Browser()
	restored := open(ctx, t, other, &apiv1.BrowserOpenRequest{State: m[1]})
	navigate(ctx, t, other, restored, web.URL+"/")
	if got := eval(ctx, t, other, restored, `document.cookie`); got != "who=finn" {
		t.Fatalf("the state saved by the drain restores cookies %q, want who=finn", got)
	}
}
