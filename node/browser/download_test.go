package browser_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// pattern is the n-th block of the download the test serves: made on the
// fly, so the site holds none of it.
func pattern(n int, p []byte) {
	for i := range p {
		p[i] = byte(n*31 + i*7 + i>>9)
	}
}

// TestLargeDownloadBoundedMemory: a download is streamed to disk by
// Chromium and into the block store from there, so the peer's heap does
// not grow with it. make test downloads 64 MiB; make soak 2 GiB
// (CORTEX_DOWNLOAD_MIB).
func TestLargeDownloadBoundedMemory(t *testing.T) {
	requireChromium(t)
	mib := 64
	if v := os.Getenv("CORTEX_DOWNLOAD_MIB"); v != "" {
		var err error
		if mib, err = strconv.Atoi(v); err != nil || mib <= 0 {
			t.Fatalf("CORTEX_DOWNLOAD_MIB=%q: want a positive number", v)
		}
	}
	size := int64(mib) << 20
	const block = 1 << 20
	want := sha256.New()
	buf := make([]byte, block)
	for n := range int(size / block) {
		pattern(n, buf)
		want.Write(buf)
	}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			fmt.Fprint(w, `<html><body><a id="get" href="/big.bin">get</a></body></html>`)
			return
		}
		w.Header().Set("Content-Disposition", `attachment; filename="big.bin"`)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		p := make([]byte, block)
		for n := range int(size / block) {
			pattern(n, p)
			if _, err := w.Write(p); err != nil {
				return
			}
		}
	}))
	t.Cleanup(web.Close)
	tn := testnet.New(t, 2)
	noChromiumLeft(t, tn)
	ctx := testnet.Context(t, 30*time.Minute)
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	cs := tn.Clients(t)
	b := cs[0].Browser()

	// The heap is sampled while the download runs and is stored.
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	s := open(ctx, t, b, &apiv1.BrowserOpenRequest{})
	navigate(ctx, t, b, s, web.URL)
	start := time.Now()
	if _, err := b.Click(ctx, connect.NewRequest(&apiv1.BrowserActRequest{Session: s, Selector: "#get"})); err != nil {
		t.Fatal(err)
	}
	var dl *apiv1.BrowserDownload
	testnet.Eventually(t, "the download to be stored", 25*time.Minute, func() bool {
		resp, err := b.Downloads(ctx, connect.NewRequest(&apiv1.BrowserSessionRequest{Session: s}))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range resp.Msg.GetDownloads() {
			if d.GetState() == "canceled" {
				t.Fatalf("download canceled: %v", d)
			}
			if d.GetCid() != "" {
				dl = d
				return true
			}
		}
		return false
	})
	stored := time.Since(start)
	close(stop)
	<-sampled
	if dl.GetBytes() != uint64(size) {
		t.Fatalf("download of %d bytes, want %d", dl.GetBytes(), size)
	}
	// The other peer fetches it by CID, byte for byte.
	dest := filepath.Join(t.TempDir(), "big.bin")
	if _, err := cs[1].ArtifactGet(ctx, dl.GetCid(), dest, false, 0, nil); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := sha256.New()
	if _, err := io.Copy(got, f); err != nil {
		t.Fatal(err)
	}
	if string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatal("the download fetched by CID differs from what the site served")
	}
	t.Logf("%d MiB downloaded and stored in %v; peak heap in use %d MiB", mib, stored.Round(time.Millisecond), peak.Load()>>20)
	if peak.Load() > 512<<20 {
		t.Fatalf("peak heap %d MiB while a %d MiB download was stored: not bounded", peak.Load()>>20, mib)
	}
}
