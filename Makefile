# cortex-peer — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/cortex-peer
GOBIN := $(shell $(GO) env GOPATH)/bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_CONNECT_VERSION := v1.21.1
STATICCHECK_VERSION := v0.8.2
GOPLS_VERSION := v0.23.0
INSPECTOR_CLI_VERSION := 1.0.3
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/cortex-peer/cortex-peer/node/buildinfo.Version=$(VERSION)

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
# Built without cgo: nothing needs it, and with it the linker keeps every
# method of every type (containerd imports Go's plugin package), which made
# the binary a third larger and every CLI command 4 ms slower to start.
# Two binaries: cortex-peer, the command users type, links only the API client
# and starts in ~3 ms; cortex-peerd, beside it, is the peer (init, join,
# testnet, mcp), to which cortex-peer hands those verbs.
build: ## Build bin/cortex-peer and bin/cortex-peerd.
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/cortex-peer ./cmd/cortex-peerd

.PHONY: test
test: deps ## go vet, a gofmt check, and every test with the race detector (what CI runs).
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || (gofmt -l . ; echo 'gofmt: run gofmt -w on the files above'; exit 1)
	$(GO) test -count=1 -race -timeout 30m ./...

SOAK_FLAGS ?=

.PHONY: soak
soak: deps build ## Minutes-long checks: 1 GiB of a delegated task's output five times, every byte checked; a 2 GiB browser download by CID in bounded memory; 5 peers under mixed load with kills and partitions for 30 min (SOAK_FLAGS=-duration=…).
	CORTEX_LOSSLESS_MIB=1024 CORTEX_LOSSLESS_RUNS=5 $(GO) test -count=1 -timeout 90m -v -run 'TestLosslessOutputPastTheLogCap' ./node/delegation/
	CORTEX_DOWNLOAD_MIB=2048 $(GO) test -count=1 -timeout 60m -v -run 'TestLargeDownloadBoundedMemory' ./node/browser/
	$(GO) run ./testnet/soak -bin $(BIN) $(SOAK_FLAGS)

.PHONY: bench
bench: ## Run the benchmarks and print the figures (takes about 2 minutes).
	$(GO) test -run '^$$' -bench 'MeshFormation' -benchtime 5x ./testnet/
	$(GO) test -run '^$$' -bench 'PeersRoundTrip' -benchtime 2000x ./testnet/
	$(GO) test -run '^$$' -bench 'CLIPeers' -benchtime 50x ./cmd/cortex-peer/
	$(GO) test -run '^$$' -bench 'IdlePeerRSS' -benchtime 1x ./testnet/

KUBO_VERSION := v0.43.0
KUBO_BIN := $(CURDIR)/.bench/ipfs

.PHONY: bench-ws
bench-ws: $(KUBO_BIN) ## Workspace figures side by side with Kubo and rsync (Go src tree + 1 GiB file; several minutes).
	@command -v rsync >/dev/null || $(SUDO) apt-get install -y -qq rsync
	$(GO) run ./testnet/wsbench -kubo $(KUBO_BIN)

.PHONY: bench-artifacts
bench-artifacts: $(KUBO_BIN) build ## Artifact figures: a 1 GiB get beside Kubo and sha256, memory, a get killed half-way (a few minutes).
	$(GO) run ./testnet/artifactbench -kubo $(KUBO_BIN) -bin $(BIN) $(ARTIFACTBENCH_FLAGS)

FLOODBENCH_FLAGS ?=

.PHONY: bench-flood
bench-flood: deps build ## Hostile-peer figures: an honest task's latency while a mesh member floods its executor, each attack alone, the victim's RSS and CPU (a few minutes).
	$(GO) run ./testnet/floodbench -bin $(BIN) $(FLOODBENCH_FLAGS)

.PHONY: bench-lifecycle
bench-lifecycle: deps ## Lifecycle figures: a release published to 3 peers, a bad one rolled back, a drain with a 20 s task (a few minutes).
	CORTEX_DRAIN_TASK_SECONDS=20 $(GO) test -count=1 -v -timeout 20m -run '^(TestSelfUpdate|TestDrain)$$' ./cmd/cortex-peer/ 2>&1 | grep -E 'FIGURE|^(--- |ok|FAIL|panic)'; exit $${PIPESTATUS[0]}

.PHONY: bench-run
bench-run: deps ## Task figures: start latency beside `ctr run --rm` and gVisor, 1 GiB of output, 20 concurrent tasks, delegation on 3 peers (a few minutes).
	$(GO) test -run '^$$' -bench 'StartLatency' -benchtime 20x ./runtime/
	$(GO) test -run '^$$' -bench 'OutputThroughput' -benchtime 2x ./runtime/
	$(GO) test -run '^$$' -bench 'ConcurrentTasks' -benchtime 3x ./runtime/
	$(GO) test -run '^$$' -bench 'RunOutputThroughput' -benchtime 3x ./node/tasks/
	$(GO) test -run '^$$' -bench 'Delegation' -benchtime 10x ./node/delegation/

.PHONY: bench-mcp
bench-mcp: deps ## MCP figures: run_task over stdio and HTTP beside `cortex-peer run` and the API, first progress notification (medians of 20, 3 peers).
	$(GO) test -run '^$$' -bench 'MCPRun' -benchtime 20x ./cmd/cortex-peer/

PLAYWRIGHT_MCP_VERSION := 0.0.83
PLAYWRIGHT_MCP_CLI := .bench/playwright-mcp/node_modules/@playwright/mcp/cli.js
BROWSERBENCH_FLAGS ?=

.PHONY: bench-browser
bench-browser: deps build $(PLAYWRIGHT_MCP_CLI) ## Browser figures side by side with @playwright/mcp over MCP stdio: login form, 300-row table (medians of 5 runs; a few minutes).
	$(GO) run ./testnet/browserbench -bin $(BIN) -playwright $(PLAYWRIGHT_MCP_CLI) -chromium /usr/bin/chromium -dump .bench/browserbench $(BROWSERBENCH_FLAGS)

$(PLAYWRIGHT_MCP_CLI):
	@command -v npm >/dev/null || $(SUDO) apt-get install -y -qq nodejs npm
	npm install --prefix .bench/playwright-mcp --no-audit --no-fund @playwright/mcp@$(PLAYWRIGHT_MCP_VERSION) >/dev/null

MCP_LANGUAGE_SERVER_VERSION := v0.1.1
MCP_LANGUAGE_SERVER := $(CURDIR)/.bench/mcp-language-server
LSPBENCH_FLAGS ?=

.PHONY: bench-lsp
bench-lsp: deps build $(MCP_LANGUAGE_SERVER) ## gopls bridge figures side by side with the gopls CLI, a warm gopls and mcp-language-server on a copy of quic-go (a few minutes).
	$(GO) run ./testnet/lspbench -bin $(BIN) -gopls $(GOBIN)/gopls -mcp-language-server $(MCP_LANGUAGE_SERVER) $(LSPBENCH_FLAGS)

# Built from its module source like Kubo (the proxy serves v0.1.1, not @latest).
$(MCP_LANGUAGE_SERVER):
	@mkdir -p .bench
	@dir=$$($(GO) mod download -json github.com/isaacphi/mcp-language-server@$(MCP_LANGUAGE_SERVER_VERSION) | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'); \
	tmp=$$(mktemp -d) && cp -r "$$dir" $$tmp/mls && chmod -R u+w $$tmp/mls && \
	(cd $$tmp/mls && $(GO) build -o $(MCP_LANGUAGE_SERVER) .); st=$$?; rm -rf $$tmp; exit $$st

# Kubo's `go install` fails on a replace directive; it builds from its module source.
$(KUBO_BIN):
	@mkdir -p .bench
	@dir=$$($(GO) mod download -json github.com/ipfs/kubo@$(KUBO_VERSION) | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'); \
	tmp=$$(mktemp -d) && cp -r "$$dir" $$tmp/kubo && chmod -R u+w $$tmp/kubo && \
	(cd $$tmp/kubo && $(GO) build -o $(KUBO_BIN) ./cmd/ipfs); st=$$?; rm -rf $$tmp; exit $$st

.PHONY: fuzz
fuzz: ## Fuzz the decoders of wire and DAG input for 30 s each.
	$(GO) test -run '^$$' -fuzz FuzzDecodeHeartbeat -fuzztime 30s ./protocol/
	$(GO) test -run '^$$' -fuzz FuzzExportDAG -fuzztime 30s ./dag/
	$(GO) test -run '^$$' -fuzz FuzzImportCAR -fuzztime 30s ./dag/
	$(GO) test -run '^$$' -fuzz FuzzMerge -fuzztime 30s ./dag/diff3/
	$(GO) test -run '^$$' -fuzz FuzzMatch -fuzztime 30s ./dag/ignore/
	$(GO) test -run '^$$' -fuzz FuzzWire -fuzztime 30s ./node/
	$(GO) test -run '^$$' -fuzz FuzzStdio -fuzztime 30s ./node/mcpserver/
	$(GO) test -run '^$$' -fuzz FuzzDecodeVerify -fuzztime 30s ./node/release/
	$(GO) test -run '^$$' -fuzz FuzzValidateMessage -fuzztime 30s ./node/update/

.PHONY: lint
lint: ## gofmt, go vet and staticcheck.
	@test -z "$$(gofmt -l .)" || (gofmt -l . ; echo 'gofmt: run gofmt -w on the files above'; exit 1)
	$(GO) vet ./...
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN)/staticcheck ./...

.PHONY: generate
generate: ## Regenerate protocol/gen from the .proto sources (needs protoc).
	@command -v protoc >/dev/null || (echo 'protoc missing: run make deps'; exit 1)
	@test -x $(GOBIN)/protoc-gen-go || $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@test -x $(GOBIN)/protoc-gen-connect-go || $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_VERSION)
	rm -rf protocol/gen
	mkdir -p protocol/gen
	cd protocol/proto && PATH="$(GOBIN):$$PATH" protoc -I . \
		--go_out=../gen --go_opt=paths=source_relative \
		--connect-go_out=../gen --connect-go_opt=paths=source_relative \
		$$(find . -name '*.proto' | sort)

# System packages the peer's capabilities need (containerd, gVisor, Chromium,
# the test image's busybox) and protoc for `make generate`.
APT_PACKAGES := containerd runc runsc chromium busybox-static protobuf-compiler
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CONTAINERD_SOCK := /run/containerd/containerd.sock
TEST_IMAGE := cortex/busybox:test
DEMO_DIR ?= $(CURDIR)/.demo

.PHONY: deps
deps: ## Install what is missing (apt packages, gopls) and start containerd. Idempotent.
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	else echo "apt packages: all present"; fi
	@test -x "$(GOBIN)/gopls" || (echo "installing gopls $(GOPLS_VERSION)"; $(GO) install golang.org/x/tools/gopls@$(GOPLS_VERSION))
	@test -x .tools/node_modules/.bin/mcp-inspector-cli || (echo "installing @modelcontextprotocol/inspector-cli $(INSPECTOR_CLI_VERSION) into .tools"; \
		npm install --prefix .tools --no-audit --no-fund @modelcontextprotocol/inspector-cli@$(INSPECTOR_CLI_VERSION) >/dev/null)
	@if ! $(SUDO) ctr --address $(CONTAINERD_SOCK) --timeout 2s version >/dev/null 2>&1; then \
		echo "starting containerd (log: /var/log/containerd.log)"; \
		$(SUDO) sh -c 'nohup containerd >>/var/log/containerd.log 2>&1 &'; \
		for i in $$(seq 1 50); do $(SUDO) ctr --address $(CONTAINERD_SOCK) --timeout 1s version >/dev/null 2>&1 && break; sleep 0.2; done; \
		$(SUDO) ctr --address $(CONTAINERD_SOCK) --timeout 2s version >/dev/null 2>&1 || (echo "containerd did not start: see /var/log/containerd.log"; exit 1); \
	else echo "containerd: running"; fi
	@for ns in cortex cortex-test; do \
		$(SUDO) ctr --address $(CONTAINERD_SOCK) -n $$ns images ls -q | grep -qx '$(TEST_IMAGE)' && continue; \
		if [ ! -f .bench/busybox.tar ]; then mkdir -p .bench && $(GO) run ./runtime/images/mkbusybox -o .bench/busybox.tar -name '$(TEST_IMAGE)' || exit 1; fi; \
		echo "importing $(TEST_IMAGE) into containerd namespace $$ns"; \
		$(SUDO) ctr --address $(CONTAINERD_SOCK) -n $$ns images import .bench/busybox.tar >/dev/null || exit 1; \
	done

.PHONY: demo
demo: deps build ## Start a local 3-peer testnet, show the mesh, move a workspace between peers, delegate a build-and-test task from peer1 to peer2, stop.
	@rm -rf $(DEMO_DIR); mkdir -p $(DEMO_DIR)
	@echo "== starting 3 peers: $(BIN) testnet -n 3 --dir $(DEMO_DIR)"
	@$(BIN) testnet -n 3 --dir $(DEMO_DIR) > $(DEMO_DIR)/testnet.out 2>&1 & tn=$$!; \
	trap 'kill -TERM $$tn 2>/dev/null; wait $$tn' EXIT; \
	for i in $$(seq 1 300); do grep -qx ready $(DEMO_DIR)/testnet.out && break; \
		kill -0 $$tn 2>/dev/null || { cat $(DEMO_DIR)/testnet.out; exit 1; }; sleep 0.1; done; \
	cat $(DEMO_DIR)/testnet.out; \
	echo; echo "== $(BIN) peers --data $(DEMO_DIR)/peer1"; $(BIN) peers --data $(DEMO_DIR)/peer1; \
	echo; echo "== $(BIN) status --data $(DEMO_DIR)/peer2"; $(BIN) status --data $(DEMO_DIR)/peer2; \
	echo; echo "== $(BIN) id --json --data $(DEMO_DIR)/peer3"; $(BIN) id --json --data $(DEMO_DIR)/peer3; \
	echo; echo "== a workspace moves by content: add this repository's docs on peer1, get it on peer3"; \
	cid=$$($(BIN) ws add --data $(DEMO_DIR)/peer1 docs) && echo "$$cid" && \
	$(BIN) ws get --data $(DEMO_DIR)/peer3 $$cid $(DEMO_DIR)/docs-copy && diff -r docs $(DEMO_DIR)/docs-copy && echo "identical copy in $(DEMO_DIR)/docs-copy"; \
	echo; echo "== delegation: peer1 coordinates, the task runs on the peer labelled testnet=peer2, in a sandbox"; \
	mkdir -p $(DEMO_DIR)/proj && printf '%s\n' '#!/bin/sh' 'echo $$(( $$1 + $$2 ))' > $(DEMO_DIR)/proj/add.sh && \
	printf '%s\n' 'set -e' 'mkdir -p build; cp add.sh build/add; chmod +x build/add; echo "built build/add"' > $(DEMO_DIR)/proj/build.sh && \
	printf '%s\n' 'for c in "1 2 3" "20 22 42" "7 -7 0"; do set -- $$c; got=$$(build/add $$1 $$2);' \
		'  if [ "$$got" = "$$3" ]; then echo "ok   add $$1 $$2 = $$3"; else echo "FAIL add $$1 $$2 = $$got, want $$3"; exit 1; fi; sleep 0.3; done' \
		'echo "all tests passed" | tee test-report.txt' > $(DEMO_DIR)/proj/test.sh; \
	echo "\$$ $(BIN) run --data $(DEMO_DIR)/peer1 --label testnet=peer2 --workspace $(DEMO_DIR)/proj -- sh -c 'id; sh build.sh && sh test.sh'"; \
	$(BIN) run --data $(DEMO_DIR)/peer1 --label testnet=peer2 --workspace $(DEMO_DIR)/proj -- sh -c 'id; sh build.sh && sh test.sh'; \
	echo "task exit status: $$?"; \
	echo; echo "== merged back into $(DEMO_DIR)/proj:"; ls -R $(DEMO_DIR)/proj; cat $(DEMO_DIR)/proj/test-report.txt; \
	echo; echo "== $(BIN) tasks --data $(DEMO_DIR)/peer1"; $(BIN) tasks --data $(DEMO_DIR)/peer1; \
	echo; echo "== stopping the testnet (SIGTERM)"

.PHONY: clean
clean: ## Remove build output and the demo's data dirs.
	rm -rf bin .demo .bench .tools
