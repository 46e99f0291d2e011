#!/usr/bin/env bash
# Installs every package msb-imaged needs to build, run its demo and run its
# tests on Debian 12. Idempotent: packages already present are skipped.
set -euo pipefail

packages=(
  # build
  meson ninja-build pkg-config gcc
  libuv1-dev libsqlite3-dev libjansson-dev libcurl4-openssl-dev libssl-dev
  libarchive-dev libzstd-dev libdeflate-dev libisal-dev libsystemd-dev zlib1g-dev
  check scdoc
  # run and test
  python3 python3-pytest python3-mypy sqlite3 socat jq util-linux
  erofs-utils umoci skopeo docker-registry apache2-utils openssl
  systemd qemu-utils pigz libdeflate-tools
  # tests/vm: the VM, the guest's shell, module and initramfs tools, getfattr
  qemu-system-x86 busybox-static kmod cpio attr
)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# As root, apt's download sandbox user cannot verify newly added lists on
# this machine kind, so apt runs its downloads as root.
apt_update() {
  if [ "$(id -u)" -eq 0 ]; then
    apt-get -o APT::Sandbox::User=root update -qq
  else
    sudo apt-get update -qq
  fi
}

# tests/vm boots Debian 12's backports kernel (Linux 6.3 or later reads the
# VMDK as one disk; bookworm's own 6.1 does not). The test downloads it with
# apt-get download into the build directory; nothing is installed from
# backports (its pin priority of 100 keeps every installed package on
# bookworm).
backports=/etc/apt/sources.list.d/bookworm-backports.list
if grep -qs '^VERSION_CODENAME=bookworm$' /etc/os-release; then
  if [ ! -f "$backports" ]; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee "$backports" >/dev/null
  fi
  # apt-cache exits 0 for a release it does not know, printing nothing.
  if ! apt-cache show --no-all-versions linux-image-amd64/bookworm-backports 2>/dev/null | grep -q '^Package:'; then
    apt_update || echo "apt-get update failed: tests/vm cannot fetch its guest kernel" >&2
  fi
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing: ${missing[*]}" >&2
apt_update
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
