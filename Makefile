VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: help test lint bench soak build demo ci
help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

test: ## run every test with the race detector (the README's test command)
	go test -race ./...

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench: ## run the benchmarks
	go test -run '^$$' -bench . -benchmem ./...

.PHONY: bench-compare
bench-compare: ## streamgate beside a bare ReverseProxy and nginx, written into docs/benchmarks.md (BENCH_FLAGS=-smoke to try it)
	go run ./bench/compare -out docs/benchmarks.md $(BENCH_FLAGS)

soak: ## ten minutes of mixed load, failing if memory, goroutines or files grow (SOAK_DURATION=90s to shorten)
	go run ./bench/soak

build: ## a static binary in ./bin
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/streamgate ./cmd/streamgate

demo: ## the demo: emulator and gateway on loopback
	go run ./cmd/streamgate demo

ci: ## what CI runs
	bash .ci/run
