# `make test` is the one command that runs every test on a fresh Debian
# machine: it installs Redis, versitygw, Incus/LXD and chromium, and the
# tests start them on loopback ports in temporary directories and stop them.
GO ?= go
FUZZTIME ?= 15s

.PHONY: test deps vet fuzz run build image bench screenshots

# The tests run with a private TMPDIR, removed afterwards: go-apk leaves
# the packages it expands in the temporary directory. The browser tests'
# screenshots of every page they visit stay in test-screenshots/.
SCREENSHOTS ?= $(CURDIR)/test-screenshots
test: deps vet
	@tmp=$$(mktemp -d /tmp/uplink-test.XXXXXX); \
	  TMPDIR=$$tmp UPLINK_SCREENSHOTS=$(SCREENSHOTS) $(GO) test -race -count=1 ./...; status=$$?; \
	  rm -rf $$tmp; exit $$status
	$(MAKE) fuzz

deps:
	./scripts/install-test-deps.sh

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParsePath$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./distribution

run:
	$(GO) run ./cmd/uplink serve

# What `uplink --version` and uplink_build_info say, from git (override:
# make build VERSION=v1.2.3). Empty values read "devel"/"unknown".
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
REVISION ?= $(shell r=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { git diff --quiet HEAD 2>/dev/null || r=$$r-dirty; echo $$r; })
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
VERSION := $(VERSION)
REVISION := $(REVISION)
BUILD_DATE := $(BUILD_DATE)
VERSION_PKG := github.com/uplinkhq/uplink/internal/version
LDFLAGS := -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Revision=$(REVISION) -X $(VERSION_PKG).BuildDate=$(BUILD_DATE)
IMAGE ?= uplink:$(or $(VERSION),dev)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/uplink ./cmd/uplink

# The container image, stamped like `make build`.
image:
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) --build-arg BUILD_DATE=$(BUILD_DATE) -t $(IMAGE) .

# Side by side with nginx and versitygw under wrk; writes BENCHMARKS.md.
# QUICK=1 runs a smaller version, ARGS='-only cold,redirect -duration 2s'
# only the steps named (go run ./internal/bench -h). Not part of `make test`.
bench:
	./scripts/install-bench-deps.sh
	$(GO) run ./internal/bench $(if $(QUICK),-quick) $(ARGS)

# The console's screenshots in docs/screenshots, taken in chromium from a
# running uplink (no instance backend) that the program seeds itself.
screenshots:
	$(GO) run ./internal/console/screenshots -out docs/screenshots
