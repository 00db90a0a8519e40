#!/usr/bin/env bash
# Installs what `make bench` runs: Debian's nginx, wrk and redis-server,
# and the versitygw S3 gateway. The harness starts its own instances on
# loopback, so the packaged services are never started. Idempotent; run
# as root on Debian 12.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DEBIAN_PKGS=(nginx wrk redis-server)

install_debian_packages "nginx redis-server" "${DEBIAN_PKGS[@]}"
install_versitygw
