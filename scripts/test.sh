#!/usr/bin/env bash
# The project's test command: installs what the tests need (Debian's diod and nfs-ganesha,
# real 9P2000.L servers), checks formatting and lints, proves the pure crates build without std, then runs
# every test of the workspace. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo is not installed; install Rust (https://rustup.rs) and run again" >&2
    exit 1
fi

# Real peers the integration tests use, installed when missing.
need=()
[ -x /usr/sbin/diod ] || [ -x /usr/bin/diod ] || need+=(diod)
[ -x /usr/bin/ganesha.nfsd ] && [ -e /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so ] \
    || need+=(nfs-ganesha nfs-ganesha-vfs)
# The kernel-client tests' control relay (qemu is installed by scripts/kernel-image.sh).
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
# The operator's kit: systemd's socket activator and unit checker, Prometheus's promtool,
# dpkg-deb for the package.
command -v systemd-socket-activate >/dev/null 2>&1 || need+=(systemd)
lean=()
command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
if [ ${#need[@]} -gt 0 ] || [ ${#lean[@]} -gt 0 ]; then
    step "installing ${need[*]} ${lean[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: ${need[*]} ${lean[*]} missing and not running as root; install with: sudo apt-get install -y ${need[*]} ${lean[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    [ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}"
    # Only promtool is wanted from prometheus: without its recommends, not a web UI's worth.
    [ ${#lean[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${lean[@]}"
fi

# py9p (PyPI p9fs), a second real server for 9P2000 and 9P2000.u.
if ! python3 -c 'import py9p' >/dev/null 2>&1; then
    step "installing py9p (pip: p9fs)"
    python3 -m pip install -q p9fs 2>/dev/null || python3 -m pip install -q --break-system-packages p9fs
fi

step "kernel-client image (scripts/kernel-image.sh: qemu, Debian's kernel, busybox initramfs)"
./scripts/kernel-image.sh

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "no_std build of p9-core"
cargo build --quiet -p p9-core --no-default-features

step "Debian package (scripts/deb.sh: build, dpkg -i, check what landed where)"
if [ "$(id -u)" -eq 0 ]; then
    ./scripts/deb.sh --install-check
else
    ./scripts/deb.sh
    echo "(not root: the package was built but not installed)"
fi

step "tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# cargo prints one "test result" line per test binary, the last often an empty doc-test run;
# close with the totals so the outcome is one line.
awk '/^test result:/ {
        for (i = 2; i <= NF; i++) {
            if ($i ~ /^passed;/) p += $(i - 1)
            if ($i ~ /^failed;/) f += $(i - 1)
        }
    }
    END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
