# cortex-peer — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/cortex-peer
GOBIN := $(shell $(GO) env GOPATH)/bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_CONNECT_VERSION := v1.21.1
STATICCHECK_VERSION := 2026.1
GOPLS_VERSION := v0.23.0
# Packages that run goroutines; tested with the race detector.
RACE_PKGS := ./p2p/... ./node/... ./testnet/... ./protocol/...
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/cortex-peer/cortex-peer/node.Version=$(VERSION)

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/cortex-peer.
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/cortex-peer

.PHONY: test
test: ## Run every test (race detector on concurrent packages) and vet.
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...
	$(GO) test -count=1 -race -timeout 20m $(RACE_PKGS)

.PHONY: bench
bench: ## Run the benchmarks and print the figures.
	$(GO) test -run '^$$' -bench . -benchtime 5x -benchmem ./testnet/ ./node/
	$(GO) run ./testnet/cmd/idlemem -wait 60s

.PHONY: fuzz
fuzz: ## Fuzz the wire decoders for 30 s each.
	$(GO) test -run '^$$' -fuzz FuzzDecodeHeartbeat -fuzztime 30s ./protocol/

.PHONY: lint
lint: ## gofmt, go vet and staticcheck.
	@test -z "$$(gofmt -l . | grep -v '^protocol/gen/')" || (gofmt -l . ; echo 'run gofmt -w on the files above'; exit 1)
	$(GO) vet ./...
	@command -v $(GOBIN)/staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
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

.PHONY: deps
deps: ## Install what is missing (system packages, gopls, protoc) and start containerd. Idempotent.
	./scripts/deps.sh

.PHONY: demo
demo: deps build ## Build and start a local 3-peer testnet, then show the mesh.
	./scripts/demo.sh

.PHONY: clean
clean: ## Remove build output.
	rm -rf bin
