package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cortex-peer/cortex-peer/node"
	"github.com/cortex-peer/cortex-peer/node/apiclient"
	"github.com/cortex-peer/cortex-peer/node/datadir"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
	"github.com/cortex-peer/cortex-peer/testnet"
)

// inspectorCLI is the MCP client this project did not write, installed by
// `make deps`; a test that needs it fails (never skips) when it is missing.
func inspectorCLI(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), ".tools", "node_modules", ".bin", "mcp-inspector-cli")
	// With --cli, the launcher runs the CLI client (without it, the web UI).
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("@modelcontextprotocol/inspector-cli is not installed (%v): run make deps", err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not on PATH (%v): run make deps", err)
	}
	return bin
}

// mcpNet is an in-process 3-peer testnet whose first peer serves MCP on
// HTTP; stdio runs the real binary's `mcp` verb against the same peer.
type mcpNet struct {
	tn    *testnet.Net
	dir   string
	url   string
	token string
}

func startMCPNet(t testing.TB) *mcpNet {
	t.Helper()
	tn := testnet.New(t, 3, testnet.WithConfig(func(i int, cfg *node.Config) {
		if i == 0 {
			cfg.MCPListen = "127.0.0.1:0"
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tn.WaitMesh(ctx); err != nil {
		t.Fatal(err)
	}
	d, fc, err := datadir.Load(tn.Peers[0].Dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := d.Token(fc)
	if err != nil {
		t.Fatal(err)
	}
	return &mcpNet{tn: tn, dir: tn.Peers[0].Dir, url: tn.Peers[0].Node.MCPURL(), token: tok}
}

// The inspector CLI lists the tools and runs a task over stdio (the
// binary's `mcp` verb) and over streamable HTTP.
func TestMCPInspectorCLI(t *testing.T) {
	inspector := inspectorCLI(t)
	bin := testnet.BuildBinary(t)
	mn := startMCPNet(t)
	targets := map[string][]string{
		"stdio": {"--", bin, "mcp", "--data", mn.dir},
		"http":  {mn.url, "--transport", "http", "--header", "Authorization: Bearer " + mn.token},
	}
	for _, name := range []string{"stdio", "http"} {
		target := targets[name]
		t.Run(name, func(t *testing.T) {
			inv := func(args ...string) map[string]any {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				var full []string
				if target[0] == "--" { // options before the server command
					full = append(append([]string{}, args...), target...)
				} else {
					full = append([]string{target[0]}, append(args, target[1:]...)...)
				}
				cmd := exec.CommandContext(ctx, inspector, append([]string{"--cli"}, full...)...)
				// inspector-cli 1.0.3 looks for "../package.json" relative to
				// the working directory but imports it relative to its module:
				// both agree only when it runs from its build directory.
				cmd.Dir = filepath.Join(filepath.Dir(filepath.Dir(inspector)), "@modelcontextprotocol", "inspector-cli", "build")
				var stderr strings.Builder
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("inspector-cli %q: %v\nstdout: %s\nstderr: %s", full, err, out, stderr.String())
				}
				var m map[string]any
				if err := json.Unmarshal(out, &m); err != nil {
					t.Fatalf("inspector-cli output %q: %v", out, err)
				}
				return m
			}
			list := inv("--method", "tools/list")
			var names []string
			for _, tool := range list["tools"].([]any) {
				names = append(names, tool.(map[string]any)["name"].(string))
			}
			if !slices.Contains(names, "run_task") || !slices.Contains(names, "browser_open") || !slices.Contains(names, "lsp_definition") || !slices.Contains(names, "workspace_verify") || len(names) != 45 {
				t.Fatalf("tools/list: %v", names)
			}
			// --tool-arg takes every value up to the next option: it goes first.
			res := inv("--tool-arg", `command=["sh","-c","echo hello from $(hostname)"]`, `labels={"testnet":"peer2"}`, "--tool-name", "run_task", "--method", "tools/call")
			if res["isError"] == true {
				t.Fatalf("run_task: %v", res)
			}
			sc, _ := res["structuredContent"].(map[string]any)
			stdout, _ := sc["stdout"].(map[string]any)
			if sc["exit_code"] != float64(0) || !strings.HasPrefix(fmt.Sprint(stdout["text"]), "hello from ") || sc["executor"] != mn.tn.Peers[1].Node.ID().String() {
				t.Fatalf("run_task result: %v", res)
			}
		})
	}
}

// BenchmarkMCPRun measures run_task over MCP (stdio: the binary's `mcp`
// verb; HTTP: the peer's endpoint) beside `cortex-peer run` and a direct
// API call, for the same task on a 3-peer testnet, and the delay from a
// task's write (the executor's chunk timestamp) to the progress
// notification at the client. Run with -benchtime 20x; it reports medians.
func BenchmarkMCPRun(b *testing.B) {
	bin := testnet.BuildBinary(b)
	mn := startMCPNet(b)
	task := []string{"sh", "-c", "echo hi"}
	b.Run("cli-run", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			start := time.Now()
			out, err := exec.Command(bin, "run", "--data", mn.dir, "--", "sh", "-c", "echo hi").CombinedOutput()
			if err != nil || string(out) != "hi\n" {
				b.Fatalf("run: %v %q", err, out)
			}
			ds = append(ds, time.Since(start))
		}
		reportMedian(b, "ms/run", ds)
	})
	b.Run("api-run", func(b *testing.B) {
		c, err := apiclient.Dial(mn.dir)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		var ds []time.Duration
		for b.Loop() {
			start := time.Now()
			res, err := c.Run(context.Background(), &apiv1.RunRequest{Spec: &apiv1.TaskSpec{Command: task}}, nil)
			if err != nil || res.GetExitCode() != 0 {
				b.Fatalf("run: %v %v", err, res)
			}
			ds = append(ds, time.Since(start))
		}
		reportMedian(b, "ms/run", ds)
	})
	transports := map[string]func() mcp.Transport{
		"mcp-stdio": func() mcp.Transport {
			return &mcp.CommandTransport{Command: exec.Command(bin, "mcp", "--data", mn.dir)}
		},
		"mcp-http": func() mcp.Transport {
			return &mcp.StreamableClientTransport{Endpoint: mn.url, DisableStandaloneSSE: true,
				HTTPClient: &http.Client{Transport: bearerRT{mn.token}}}
		},
	}
	for _, name := range []string{"mcp-stdio", "mcp-http"} {
		b.Run(name, func(b *testing.B) {
			var mu sync.Mutex
			var firstLag []time.Duration
			seen := map[any]bool{}
			client := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, &mcp.ClientOptions{
				ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
					now := time.Now()
					ts, ok := r.Params.Meta["time"].(string)
					if !ok {
						return
					}
					at, err := time.Parse(time.RFC3339Nano, ts)
					if err != nil {
						return
					}
					mu.Lock()
					if !seen[r.Params.ProgressToken] {
						seen[r.Params.ProgressToken] = true
						firstLag = append(firstLag, now.Sub(at))
					}
					mu.Unlock()
				},
			})
			cs, err := client.Connect(context.Background(), transports[name](), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer cs.Close()
			var ds []time.Duration
			i := 0
			for b.Loop() {
				i++
				p := &mcp.CallToolParams{Name: "run_task", Arguments: map[string]any{"command": task}}
				p.SetProgressToken(i)
				start := time.Now()
				res, err := cs.CallTool(context.Background(), p)
				if err != nil || res.IsError {
					b.Fatalf("run_task: %v %v", err, res)
				}
				ds = append(ds, time.Since(start))
			}
			reportMedian(b, "ms/run", ds)
			mu.Lock()
			reportMedian(b, "ms-first-progress", firstLag)
			mu.Unlock()
		})
	}
}

type bearerRT struct{ token string }

func (r bearerRT) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+r.token)
	return http.DefaultTransport.RoundTrip(req)
}

func reportMedian(b *testing.B, unit string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(float64(ds[len(ds)/2])/float64(time.Millisecond), "median-"+unit)
}
