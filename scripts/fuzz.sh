#!/usr/bin/env bash
# Long fuzzing runs (not part of the test command). Installs cargo-fuzz if missing and runs a
# target on the stable toolchain (RUSTC_BOOTSTRAP lets stable take the sanitizer flags).
#   scripts/fuzz.sh [TARGET] [SECONDS]     targets: decode (p9-core), session (persist-core),
#                                          drive (persist-core's drive layer)
# New inputs land in fuzz/corpus/TARGET; commit the interesting ones: the test suite replays the
# whole corpus on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-decode}
seconds=${2:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=70000
