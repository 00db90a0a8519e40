#!/usr/bin/env bash
# Installs what the tests start for real: Debian's redis-server and the
# versitygw S3 gateway. Idempotent; run by `make test` (and so by CI).
set -euo pipefail

VERSITYGW_VERSION=v1.8.0

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
  # Debian's package starts a system-wide server; the tests start their own.
  systemctl disable --now redis-server >/dev/null 2>&1 || service redis-server stop >/dev/null 2>&1 || true
fi

gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/versitygw" ]; then
  echo "installing versitygw $VERSITYGW_VERSION"
  GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi

redis-server --version
echo "versitygw: $gobin/versitygw"
