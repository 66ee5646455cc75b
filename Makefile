# fleetmigrate — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
TOOLS := $(CURDIR)/.tools/bin
GOLANGCI_LINT_VERSION ?= v2.15.0
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install what the tests need (database servers, BIND9, versitygw...); fast no-op when present
	@deploy/dev/install-deps.sh

.PHONY: build
build: ## build bin/migrate and bin/migrate-agent
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

DBS ?= 300
# Online (auto) with live writers by default: at --max-procs 40 its window
# beats dump mode's at every percentile (BENCHMARKS.md, make bench-fleet).
MODE ?= auto
WRITERS ?= 10
KILL ?= 0

.PHONY: demo
demo: deps build ## migrate DBS (default 300) databases on a local fleet of real servers, prove every one arrived and check the invariants; MODE=auto|online|dump (default auto), WRITERS=N live writers (default 10), KILL=N kill -9 and restart N processes mid-run (Ctrl-C stops it)
	$(GO) run ./cmd/fleetdemo --dbs $(DBS) --bin bin --mode "$(MODE)" --writers $(WRITERS) --kill $(KILL)

.PHONY: test
test: deps ## install what is missing, vet, then run every test (integration included) with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

FUZZTIME ?= 10s
FUZZ_TARGETS := FuzzQuote:./internal/ident FuzzParse:./internal/planfile FuzzVerify:./links \
	FuzzDecodeManifest:./engine FuzzDataParser:./engine/mysql FuzzInsertTable:./engine/mysql FuzzLiteral:./engine/mysql

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME (default 10s) each; a failing input lands in testdata/fuzz/ (commit it: make test then replays it)
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t%%:*} in $${t#*:} for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}\$$" -fuzztime $(FUZZTIME) "$${t#*:}"; \
	done

.PHONY: test-faults
test-faults: deps ## the fault suite: kill, cut, corrupt and misuse a small real fleet per case, check the invariants after each; writes docs/reliability.md
	$(GO) vet -tags faults ./internal/faults
	FAULTS_REPORT=$(CURDIR)/docs/reliability.md $(GO) test -tags faults -race -count=1 -parallel 2 -timeout 40m ./internal/faults

.PHONY: test-short
test-short: ## unit tests only: skips everything that starts a real server
	$(GO) test -short -count=1 ./...

.PHONY: bench
bench: deps build ## every benchmark against real servers: Go benchmarks, then control plane, data plane, tiny databases, online alone and at the fleet's concurrency (BENCHMARKS.md; raw output in bench/results/)
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 60m ./...
	bench/run.sh full
	bench/run.sh online
	bench/run.sh fleet

.PHONY: bench-online
bench-online: deps build ## online against dump: write-blocked windows at 1 MB, 100 MB and 1 GB with a writer at 100 rows/s, sync MB/s against pg_dump -Fd -j2 | pg_restore -j2 (about 40 minutes)
	bench/run.sh online

.PHONY: bench-fleet
bench-fleet: deps build ## online at the fleet's concurrency: the 300-database demo online, auto and dump at --max-procs 40 with 10 writers, 3 rounds in the same hour, then 1,000 databases auto; each summary splits the cutover into its phases by engine (about 25 minutes)
	bench/run.sh fleet

.PHONY: bench-quick
bench-quick: deps build ## the fleet-scale benchmarks in small (under 5 minutes): control plane 100k rows, 100 tiny databases, one 100 MiB database against its baselines
	bench/run.sh quick

.PHONY: lint
lint: $(TOOLS)/golangci-lint ## gofmt, go vet and golangci-lint (.golangci.yml)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/golangci-lint run ./...
	$(TOOLS)/golangci-lint run --build-tags faults ./internal/faults

$(TOOLS)/golangci-lint:
	GOBIN=$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: clean
clean: ## remove build output
	rm -rf bin/
