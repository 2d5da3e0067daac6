GO      ?= go
BIN     ?= bin/livemig
PKGS    := ./...
# The suite must stay under 10 minutes on 2 cores; packages run in parallel.
TESTFLAGS ?= -count=1 -timeout 9m

.PHONY: build test lint bench bench-inject bench-downtime bench-sync demo clean

build:
	$(GO) build -o $(BIN) ./cmd/livemig

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	GOARCH=arm64 $(GO) vet $(PKGS)

test: lint
	$(GO) test $(TESTFLAGS) $(PKGS)

# The whole matrix of issue 6 (downtime + sync): root, at most 10 minutes on 2 cores;
# writes bench/results.md (one section each), bench/downtime.svg and bench/sync.svg.
bench: bench-inject bench-downtime bench-sync

# The downtime matrix of issue 6 (processes x files @ lines/s per file), every method,
# repeat 3: writes bench/results.md and bench/downtime.svg. Root; a few minutes on 2 cores.
BENCH_DOWNTIME ?= --matrix 1x1@1000,1x64@500,20x8@250 --repeat 3
bench-downtime: build
	$(BIN) bench downtime $(BENCH_DOWNTIME) --markdown bench/results.md --svg bench/downtime.svg

bench-inject:
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./inject/

demo: build
	LIVEMIG=$(CURDIR)/$(BIN) bash bench/demo.sh

clean:
	rm -rf bin

# livemig sync against cp -a, rsync -a, rsync --inplace --no-whole-file and lsyncd (issue 3's
# rows, both trees on tmpfs), repeat 3: the sync section of bench/results.md and
# bench/sync.svg. Root; about 3 minutes on 2 cores.
BENCH_SYNC ?= --repeat 3
bench-sync: build
	$(BIN) bench sync $(BENCH_SYNC) --markdown bench/results.md --svg bench/sync.svg
