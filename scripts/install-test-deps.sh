#!/usr/bin/env bash
# Installs what the tests start for real: Debian's redis-server, the
# versitygw S3 gateway, LXD 5.0 (Debian's lxd package) and Incus 6.0 (the
# bookworm-backports .debs unpacked into $UPLINK_TEST_ROOT/incus, not
# installed), plus busybox-static for the test container image.
# Idempotent; run as root by `make test` (and so by CI) on Debian 12.
set -euo pipefail

VERSITYGW_VERSION=v1.8.0
# Everything that is not installed system-wide lives here; the Go test
# helpers (internal/testenv, internal/incusimage) look here too.
UPLINK_TEST_ROOT=${UPLINK_TEST_ROOT:-/opt/uplink-test}
INCUS_ROOT=$UPLINK_TEST_ROOT/incus
BUSYBOX_ROOT=$UPLINK_TEST_ROOT/busybox
INCUS_DEBS=(incus-base incus-client libcowsql0 libraft0)
# What incusd, liblxc and LXD need from Debian 12 itself (incus-base's
# Depends minus networking and sysusers, which the tests do not use; lxd
# brings lxcfs, which is never started).
DEBIAN_PKGS=(
  redis-server
  lxd liblxc1 liblxc-common
  libacl1 libcap2 libsqlite3-0 libudev1 libuv1 liblz4-1
  attr ca-certificates iproute2 rsync squashfs-tools uidmap xz-utils
)

export DEBIAN_FRONTEND=noninteractive
apt_updated=
apt_update() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
}

missing=()
for p in "${DEBIAN_PKGS[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from Debian's packages: ${missing[*]}"
  apt_update
  # Packaged services (redis-server, lxcfs, lxd) must not start: the tests
  # start their own. Without systemd, invoke-rc.d would run init scripts,
  # so deny that for the duration of the install unless a policy exists.
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
  for svc in redis-server lxd lxd.socket lxcfs; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
fi

# busybox-static for the container image, unpacked (not installed: it
# conflicts with Debian's dynamic busybox package).
if [ ! -x "$BUSYBOX_ROOT/bin/busybox" ]; then
  echo "unpacking busybox-static into $BUSYBOX_ROOT"
  apt_update
  tmp=$(mktemp -d)
  # -o APT::Sandbox::User=root: the private mktemp dir is not _apt's.
  (cd "$tmp" && apt-get -o APT::Sandbox::User=root download -qq busybox-static)
  mkdir -p "$tmp/root"
  dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/root"
  mkdir -p "$UPLINK_TEST_ROOT"
  rm -rf "$BUSYBOX_ROOT"
  mv "$tmp/root" "$BUSYBOX_ROOT"
  dpkg-deb -W --showformat='${Package} ${Version}\n' "$tmp"/busybox-static_*.deb >"$BUSYBOX_ROOT/VERSION"
  rm -rf "$tmp"
fi

# Incus from bookworm-backports, downloaded with a private apt state
# directory so the system's apt sources stay as they are.
if [ ! -x "$INCUS_ROOT/usr/libexec/incus/incusd" ]; then
  echo "unpacking Incus (bookworm-backports) into $INCUS_ROOT"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/apt/etc" "$tmp/apt/lists/partial" "$tmp/apt/cache/archives/partial" "$tmp/debs" "$tmp/root"
  cat >"$tmp/apt/etc/bookworm-backports.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt_opts=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$tmp/apt/etc"
    -o "Dir::State::Lists=$tmp/apt/lists"
    -o "Dir::Cache=$tmp/apt/cache"
    -o "APT::Sandbox::User=root"
  )
  apt-get "${apt_opts[@]}" update -qq
  (cd "$tmp/debs" && apt-get "${apt_opts[@]}" download -qq "${INCUS_DEBS[@]}")
  for deb in "$tmp"/debs/*.deb; do
    dpkg-deb -x "$deb" "$tmp/root"
    dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >>"$tmp/root/VERSIONS"
  done
  mkdir -p "$UPLINK_TEST_ROOT"
  rm -rf "$INCUS_ROOT"
  mv "$tmp/root" "$INCUS_ROOT"
  rm -rf "$tmp"
fi

gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/versitygw" ]; then
  echo "installing versitygw $VERSITYGW_VERSION"
  GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi

redis-server --version
echo "versitygw: $gobin/versitygw"
echo "lxd: $(dpkg-query -W -f='${Version}' lxd)"
echo "incus: $INCUS_ROOT ($(paste -sd, "$INCUS_ROOT/VERSIONS"))"
echo "busybox: $BUSYBOX_ROOT/bin/busybox ($(cat "$BUSYBOX_ROOT/VERSION"))"
