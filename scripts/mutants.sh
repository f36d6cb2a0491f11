#!/usr/bin/env bash
# Mutation testing of the rules (cargo-mutants, from crates.io): every mutant of the rule files
# is built and the simulation (tests/tests/simulation.rs, 5,000 seeds, regressions, marks) is
# run against it. A mutant the simulation does not catch is a rule no seed bites: sharpen the
# simulation or argue the mutant equivalent. Long (each mutant rebuilds and runs the seeds):
# not part of scripts/test.sh.
#
#   ./scripts/mutants.sh                                   # every rule file
#   ./scripts/mutants.sh -f persist-core/src/resolve.rs    # one file (cargo-mutants' options pass on)
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
files=()
if [[ " $* " != *" -f "* && " $* " != *" --file "* ]]; then
    for f in "${rules[@]}"; do files+=(--file "$f"); done
fi

# The simulation in release (seconds rather than minutes per mutant); one job at a time on a
# two-core machine (each build already uses both).
exec cargo mutants --package persist-core "${files[@]}" \
    --test-package tests --profile release --jobs 1 --timeout-multiplier 3 \
    --cargo-test-arg=--test --cargo-test-arg=simulation "$@"
