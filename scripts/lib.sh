# Shared by the install scripts; source it, do not run it.

export DEBIAN_FRONTEND=noninteractive
VERSITYGW_VERSION=v1.8.0

apt_updated=
apt_update() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
}

# install_debian_packages "SERVICES" PACKAGE...: installs the packages
# that are not installed yet, and keeps SERVICES from running: the tests
# and the benchmark start their own servers.
install_debian_packages() {
  local services=$1
  shift
  local missing=() p
  for p in "$@"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "installing from Debian's packages: ${missing[*]}"
  apt_update
  # Without systemd, invoke-rc.d would run the packages' init scripts:
  # deny that for the duration of the install unless a policy exists.
  local policy= status=0 svc
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$status" -eq 0 ] || return "$status"
  for svc in $services; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
}

# install_versitygw: the S3 gateway, with go install, unless present.
install_versitygw() {
  gobin=$(go env GOBIN)
  [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
  if [ ! -x "$gobin/versitygw" ]; then
    echo "installing versitygw $VERSITYGW_VERSION"
    GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  fi
}
