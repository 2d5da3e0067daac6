GO      ?= go
BIN     ?= bin/livemig
PKGS    := ./...
# The suite must stay under 10 minutes on 2 cores; packages run in parallel.
TESTFLAGS ?= -count=1 -timeout 9m

.PHONY: build test lint bench bench-inject demo clean

build:
	$(GO) build -o $(BIN) ./cmd/livemig

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	GOARCH=arm64 $(GO) vet $(PKGS)

test: lint
	$(GO) test $(TESTFLAGS) $(PKGS)

bench: bench-inject

bench-inject:
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./inject/

demo: build
	LIVEMIG=$(CURDIR)/$(BIN) bash bench/demo.sh

clean:
	rm -rf bin

bench-sync:
	bash bench/sync.sh
