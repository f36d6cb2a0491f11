#!/usr/bin/env bash
# The long soak of the kernel-client test (not part of the test command): the Linux kernel's 9P
# client in qemu, through the proxy, while diod is SIGKILLed KILLS times (default 120; half of
# them frozen first). Prints the operations acknowledged, the EIOs by kind, and the time the
# client was blocked per outage (min, median, max); fails if any acknowledged write was lost
# or any append done twice.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/kernel-image.sh
KC_KILLS="${1:-120}" cargo test -p tests --test kernel kernel_client_survives_diod_killed_ten_times -- --nocapture
