#!/usr/bin/env bash
# The project's test command: checks formatting and lints, proves the pure crates build without
# std, then runs every test of the workspace. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo is not installed; install Rust (https://rustup.rs) and run again" >&2
    exit 1
fi

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "no_std build of p9-core"
cargo build --quiet -p p9-core --no-default-features

step "tests"
cargo test --workspace
