# `make test` is the one command that runs every test on a fresh Debian
# machine: it installs Redis, versitygw, Incus/LXD and chromium, and the
# tests start them on loopback ports in temporary directories and stop them.
GO ?= go
FUZZTIME ?= 15s

.PHONY: test deps vet fuzz run build bench screenshots

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

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/uplink ./cmd/uplink

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
