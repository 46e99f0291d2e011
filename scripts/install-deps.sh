#!/usr/bin/env bash
# Installs every package msb-imaged needs to build, run its demo and run its
# tests on Debian 12. Idempotent: packages already present are skipped.
set -euo pipefail

packages=(
  # build
  meson ninja-build pkg-config gcc
  libuv1-dev libsqlite3-dev libjansson-dev libyajl-dev libcurl4-openssl-dev libssl-dev
  libarchive-dev libzstd-dev libdeflate-dev libisal-dev libsystemd-dev zlib1g-dev
  check scdoc
  # run and test
  python3 python3-pytest python3-mypy sqlite3 socat jq util-linux
  erofs-utils umoci skopeo docker-registry apache2-utils openssl
  systemd qemu-utils pigz libdeflate-tools isal faketime
  # scripts/fuzz.sh: clang and its libFuzzer and sanitizer runtimes
  clang libclang-rt-14-dev
  # the Python SDK's offline install (python-sdk/README.md, Install)
  python3-venv python3-pip python3-setuptools python3-wheel
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
# The backports suite comes from the mirror this machine already uses for
# bookworm (read from its apt sources), so no mirror is named here.
bookworm_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas: the URIs of a stanza whose Suites include bookworm.
    awk 'BEGIN { RS = ""; FS = "\n" }
         /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t]|$)|(^|\n)Suites:[ \t]*bookworm([ \t]|$)/ {
           for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); print u[1]; exit }
         }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' "$f"
  done
}
backports=/etc/apt/sources.list.d/msb-bookworm-backports.list
if grep -qs '^VERSION_CODENAME=bookworm$' /etc/os-release; then
  if [ ! -f "$backports" ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    mirror=$(bookworm_mirror | head -n 1)
    if [ -n "$mirror" ]; then
      echo "deb $mirror bookworm-backports main" | $SUDO tee "$backports" >/dev/null
    else
      echo "no bookworm mirror in the apt sources: tests/vm cannot fetch its guest kernel" >&2
    fi
  fi
  # apt-cache exits 0 for a release it does not know, printing nothing.
  if ! apt-cache show --no-all-versions linux-image-amd64/bookworm-backports 2>/dev/null | grep -q '^Package:'; then
    apt_update || echo "apt-get update failed: tests/vm cannot fetch its guest kernel" >&2
  fi
fi

# One dpkg-query for all of them (scripts/test.sh runs this first, before
# the build, on one CPU: a query each took 0.6 s).
declare -A installed=()
while read -r p status; do
  [ "$status" = "install ok installed" ] && installed[$p]=1
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null)
missing=()
for p in "${packages[@]}"; do
  [ -n "${installed[$p]:-}" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing: ${missing[*]}" >&2
apt_update
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
