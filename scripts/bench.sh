#!/usr/bin/env bash
# Full benchmarks (not part of the test command): installs socat and diod if missing, then runs
# the codec, session and forwarding benchmarks. BENCH_MB sets the forwarding data volume.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v socat >/dev/null 2>&1 || need+=(socat)
[ -x /usr/sbin/diod ] || need+=(diod)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}"
fi
cargo bench -p p9-core
cargo bench -p persist-core
cargo bench -p tests --bench forwarding
