#!/usr/bin/env bash
# setup.sh: installs the Debian packages the build, the tests and the main job need, skipping
# what is already there. python3-torch is the reference: the checkpoint interop test loads our
# checkpoints into PyTorch, scadles-bench compares against it, scripts/golden.sh regenerates the
# golden values with it (the other tests use the committed values and never need it).
set -euo pipefail

pkgs=(build-essential cmake pkg-config libopenblas-dev libcjson-dev libxxhash-dev zlib1g-dev libopenmpi-dev openmpi-bin
      librdkafka-dev libmosquitto-dev mosquitto dataset-fashion-mnist gnuplot-nox python3-torch
      clang libclang-rt-dev libomp-dev openssl)

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
