package browser_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// TestManySessionsBigPageAndLeavingClient: 20 sessions at once on one peer,
// each isolated; a page of 50,000 elements snapshots within its budget; a
// client that leaves mid-call cancels that call, not the session.
func TestManySessionsBigPageAndLeavingClient(t *testing.T) {
	requireChromium(t)
	stop := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/set", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "who", Value: r.URL.Query().Get("v"), Path: "/"})
		fmt.Fprint(w, `<html><body>set</body></html>`)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		b.WriteString(`<html><head><title>Big</title></head><body><table>`)
		for i := range 25000 {
			fmt.Fprintf(&b, `<tr><td>item %d</td><td><button>buy %d</button></td></tr>`, i, i)
		}
		b.WriteString(`</table></body></html>`)
		fmt.Fprint(w, b.String())
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<html><body><p>first part</p>`)
		w.(http.Flusher).Flush()
		select { // never ends on its own
		case <-r.Context().Done():
		case <-stop:
		}
	})
	web := httptest.NewServer(mux)
	t.Cleanup(web.Close)
	t.Cleanup(func() { close(stop) }) // runs first: the slow page ends, then the server closes
	tn := testnet.New(t, 1)
	noChromiumLeft(t, tn)
	ctx := testnet.Context(t, 4*time.Minute)
	b := tn.Clients(t)[0].Browser()

	const n = 20
	sessions := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := b.Open(ctx, connect.NewRequest(&apiv1.BrowserOpenRequest{}))
			if err != nil {
				errs <- err
				return
			}
			sessions[i] = resp.Msg.GetSession()
			if _, err := b.Navigate(ctx, connect.NewRequest(&apiv1.BrowserNavigateRequest{Session: sessions[i], Url: fmt.Sprintf("%s/set?v=%d", web.URL, i)})); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, s := range sessions {
		if got := eval(ctx, t, b, s, `document.cookie`); got != fmt.Sprintf("who=%d", i) {
			t.Fatalf("session %d sees cookies %q, want only its own", i, got)
		}
	}
	// The 21st is refused with a reason, and nothing else breaks.
	if _, err := b.Open(ctx, connect.NewRequest(&apiv1.BrowserOpenRequest{})); err == nil || !strings.Contains(err.Error(), "max_sessions") {
		t.Fatalf("open past max_sessions: %v", err)
	}
	for _, s := range sessions[1:] {
		if _, err := b.Close(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: s})); err != nil {
			t.Fatal(err)
		}
	}
	s := sessions[0]

	navigate(ctx, t, b, s, web.URL+"/big")
	snap, err := b.Snapshot(ctx, connect.NewRequest(&apiv1.BrowserSnapshotRequest{Session: s}))
	if err != nil {
		t.Fatal(err)
	}
	text := snap.Msg.GetText()
	if !snap.Msg.GetTruncated() || len(text) > 32<<10+256 || !strings.Contains(text, `button "buy 0" [ref=`) {
		t.Fatalf("snapshot of 50,000 elements: %d bytes, truncated %v", len(text), snap.Msg.GetTruncated())
	}
	// The client leaves in the middle of a navigation that never ends.
	leave, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = b.Navigate(leave, connect.NewRequest(&apiv1.BrowserNavigateRequest{Session: s, Url: web.URL + "/slow"}))
	cancel()
	if err == nil {
		t.Fatal("a navigation whose client left returned no error")
	}
	if got := eval(ctx, t, b, s, `document.body.innerText`); !strings.Contains(got, "first part") {
		t.Fatalf("after the client left, the session shows %q", got)
	}
	if _, err := b.Close(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: s})); err != nil {
		t.Fatal(err)
	}
}
