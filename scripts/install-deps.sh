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
  # scripts/fuzz.sh: clang and its libFuzzer and sanitizer runtimes
  clang libclang-rt-14-dev
  # the Python SDK's offline install (python-sdk/README.md, Install)
  python3-venv python3-pip python3-setuptools python3-wheel
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
