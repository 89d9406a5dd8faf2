#!/usr/bin/env bash
# Set up netkit on a fresh Debian 12 (as root) and run a make target: `bash tools/bootstrap.sh run|test`.
# Idempotent: apt and pip only install what is missing; the BPF objects are rebuilt only when stale.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES=(make clang llvm libbpf-dev bpftool bpftrace gcc musl-tools python3-venv python3-dev iproute2
              iputils-ping tcpdump nftables groff-base man-db util-linux procps ethtool
              prometheus graphite-carbon python3-whisper tmux
              qemu-system-x86 linux-image-amd64 busybox-static iw hostapd)   # make vmtest
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
exec make "${1:-run}"
