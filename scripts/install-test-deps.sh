#!/usr/bin/env bash
# Installs what the tests start for real: Debian's redis-server, the
# versitygw S3 gateway, LXD 5.0 (Debian's lxd package) and Incus 6.0 (the
# bookworm-backports .debs unpacked into $UPLINK_TEST_ROOT/incus, not
# installed), busybox-static for the test container image, and Debian's
# chromium for the console's browser tests.
# Idempotent; run as root by `make test` (and so by CI) on Debian 12.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

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
  redis-server chromium
  lxd liblxc1 liblxc-common
  libacl1 libcap2 libsqlite3-0 libudev1 libuv1 liblz4-1
  attr ca-certificates iproute2 rsync squashfs-tools uidmap xz-utils
)

# Packaged services (redis-server, lxcfs, lxd) must not start.
install_debian_packages "redis-server lxd lxd.socket lxcfs" "${DEBIAN_PKGS[@]}"

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

install_versitygw

redis-server --version
echo "versitygw: $gobin/versitygw"
echo "lxd: $(dpkg-query -W -f='${Version}' lxd)"
echo "incus: $INCUS_ROOT ($(paste -sd, "$INCUS_ROOT/VERSIONS"))"
echo "busybox: $BUSYBOX_ROOT/bin/busybox ($(cat "$BUSYBOX_ROOT/VERSION"))"
chromium --version
