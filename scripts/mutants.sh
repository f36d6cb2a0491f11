#!/usr/bin/env bash
# Mutation testing of the rules (cargo-mutants, from crates.io), in two passes: every mutant
# of the rule files is built and persist-core's own tests run against it (the outcome, replay,
# unsynced, rules, hazards, failover and interleavings tests: a few seconds a mutant); then,
# with --sim, the mutants they missed are run again with those tests, the simulation (its
# contention worlds and history checkers; SIM_SEEDS seeds, 2,000 unless set) and the drive's
# tests. A mutant neither
# catches is a rule nothing bites: sharpen a test or argue the mutant equivalent. Long (each
# mutant rebuilds): not part of scripts/test.sh.
#
#   ./scripts/mutants.sh                                   # pass 1, every rule file
#   ./scripts/mutants.sh -f persist-core/src/resolve.rs    # one file (cargo-mutants' options pass on)
#   ./scripts/mutants.sh --sim                             # pass 2: what pass 1 missed, simulated
#   ./scripts/mutants.sh --list                            # the mutants, without running them
#
# Results land in mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-mutants >/dev/null 2>&1; then
    echo "mutants.sh: installing cargo-mutants (cargo install --locked cargo-mutants)" >&2
    cargo install --locked cargo-mutants
fi

# The rule files: the replay and outcome tables, unsynced writes, the fid table, the session's
# record/link/forward modules, and the drive.
rules=(
    persist-core/src/replay.rs
    persist-core/src/resolve.rs
    persist-core/src/unsynced.rs
    persist-core/src/fids.rs
    persist-core/src/session/record.rs
    persist-core/src/session/link.rs
    persist-core/src/session/forward.rs
    persist-core/src/drive.rs
)
sim=()
timeout=(--timeout-multiplier 3)
args=()
for a in "$@"; do
    case "$a" in
        --sim)
            # Pass 2 runs persist-core's own tests again beside the simulation and the
            # drive's tests (in the tests package), so a mutant pass 1 caught on lines that
            # have moved since is caught again; --iterate skips what earlier runs caught.
            # cargo-mutants 27.1 runs the unmutated baseline in the mutated package alone
            # (and fails: no simulation there), so the baseline is skipped (the default test
            # run already passes) and the timeout set.
            export SIM_SEEDS="${SIM_SEEDS:-2000}"
            sim=(--iterate --test-package persist-core --test-package tests --baseline skip
                 --cargo-test-arg=--lib)
            for t in persist-core/tests/*.rs; do
                sim+=("--cargo-test-arg=--test=$(basename "$t" .rs)")
            done
            sim+=(--cargo-test-arg=--test=simulation --cargo-test-arg=--test=drive)
            timeout=(--timeout 30)
            ;;
        *) args+=("$a") ;;
    esac
done
set -- "${args[@]}"

files=()
if [[ " $* " != *" -f "* && " $* " != *" --file "* ]]; then
    for f in "${rules[@]}"; do files+=(--file "$f"); done
fi

# The `mutants` profile (Cargo.toml): optimized enough for the interleavings proptest and
# the simulation, incremental so a mutant rebuilds in seconds; one job at a time on a
# two-core machine (each build already uses both).
exec cargo mutants --package persist-core "${files[@]}" "${sim[@]}" "${timeout[@]}" \
    --profile mutants --jobs 1 "$@"
