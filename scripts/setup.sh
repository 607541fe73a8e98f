#!/usr/bin/env bash
# setup.sh: installs the Debian packages the build, the tests and the main job need, skipping
# what is already there. Usage: scripts/setup.sh [--with-torch]
#   --with-torch  also python3-torch (the PyTorch peer of scadles-bench and the golden-value
#                 generator; the tests themselves never need it).
set -euo pipefail

pkgs=(build-essential cmake pkg-config libopenblas-dev libcjson-dev zlib1g-dev libopenmpi-dev openmpi-bin
      librdkafka-dev libmosquitto-dev mosquitto dataset-fashion-mnist)
if [[ "${1:-}" == "--with-torch" ]]; then
    pkgs+=(python3-torch)
fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: all packages present"
