#!/usr/bin/env bash
# Installs the Debian packages fedc needs (docs: ../README.md, DESIGN.md's dependency table).
# As root: apt-get installs what is missing. Otherwise: prints the exact command and exits 1.
# Quiet and idempotent when everything is present.
#   scripts/deps.sh            build + test + demo packages
#   scripts/deps.sh --print    only print the package list
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libopenblas-dev
  libsodium-dev
  nettle-dev
  libmicrohttpd-dev
  libcurl4-openssl-dev
  libssl-dev
  libprotobuf-c-dev protobuf-c-compiler
  libsqlite3-dev
  libjansson-dev
  libinih-dev
  zlib1g-dev libzstd-dev
  libcmocka-dev
  libopenmpi-dev openmpi-bin
  dataset-fashion-mnist
  openssl
)

if [[ "${1:-}" == "--print" ]]; then
  echo "${PACKAGES[*]}"
  exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "fedc needs these Debian packages, which are not installed:" >&2
  echo "  ${missing[*]}" >&2
  echo "Install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "Installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists when they are missing or older than a day.
if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]]; then
  apt-get update -qq >&2
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
