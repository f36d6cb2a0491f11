#!/usr/bin/env bash
# Full benchmarks (not part of the test command): installs socat and diod if missing, then runs
# the codec, session, forwarding and recovery benchmarks, and real clients through the proxy
# (scripts/bench_clients.py: diodcat against diod, direct / proxy / socat, one table of ratios
# and a plot in docs/bench/; then the kernel client's dd through a mount, direct / proxy,
# appended to that table). BENCH_MB sets the forwarding data volume.
#
#   scripts/bench.sh             everything
#   scripts/bench.sh clients     only the real-client table and plot
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v socat >/dev/null 2>&1 || need+=(socat)
[ -x /usr/sbin/diod ] || need+=(diod)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}"
fi
cargo build --quiet --release -p runtime-tokio --bin p9persist
cargo build --quiet --release -p tests --bin splice-relay
if [ "${1:-}" != clients ]; then
    cargo bench -p p9-core
    cargo bench -p persist-core
    cargo bench -p tests --bench forwarding
    cargo bench -p tests --bench recovery
fi
python3 scripts/bench_clients.py
# The Linux kernel's client through a mount, direct and through the proxy (qemu, TCG: the
# guest's own speed bounds both; the ratio is the figure), appended to the table.
./scripts/kernel-image.sh >/dev/null
line=$(cargo test -q -p tests --test kernel kernel_client_dd_direct_and_through_the_proxy -- --nocapture 2>&1 \
    | grep "kernel client dd" || true)
if [ -n "$line" ]; then
    echo "$line"
    printf '\n%s\n' "$line" >> docs/bench/clients.txt
else
    echo "bench.sh: the kernel dd run printed nothing (see: cargo test -p tests --test kernel kernel_client_dd -- --nocapture)" >&2
fi
