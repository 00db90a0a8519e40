#!/usr/bin/env bash
# Installs what `make bench` runs: Debian's nginx, wrk and redis-server,
# and the versitygw S3 gateway. The harness starts its own instances on
# loopback, so the packaged services are never started. Idempotent; run
# as root on Debian 12.
set -euo pipefail

VERSITYGW_VERSION=v1.8.0
DEBIAN_PKGS=(nginx wrk redis-server)

export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${DEBIAN_PKGS[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from Debian's packages: ${missing[*]}"
  apt-get update -qq
  # Without systemd, invoke-rc.d would run the packages' init scripts:
  # deny that for the duration of the install unless a policy exists.
  policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy=1
  fi
  status=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$status" -eq 0 ] || exit "$status"
  for svc in nginx redis-server; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
fi

gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/versitygw" ]; then
  echo "installing versitygw $VERSITYGW_VERSION"
  GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi
