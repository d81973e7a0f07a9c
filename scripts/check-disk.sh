#!/usr/bin/env bash
# Refuse to start a full test run on a disk too small for it, instead of failing half an hour in
# with hundreds of "No space left on device" errors at once.
#
# A full run writes, at its peak, about TEMP_GB under the temporary folder (bakes, virtual
# environments with PyTorch, the generated suites' pools and models; pytest deletes a passed
# test's folder) and DOCKER_GB under the private Docker engine's state (base image, the images
# built, the build cache): measured on a fresh machine, see the README.
#
# Environment:
#   TMPDIR                  the temporary folder (Python's tempfile rules; default /tmp)
#   YMIR_DOCKER_STATE       the Docker engine's state (default /var/lib/ymir-template-docker)
#   YMIR_TEST_MIN_FREE_GB   the space to require in all, in GB, instead of the measured needs;
#                           0 skips the check (for a partial run such as the fast tier)
set -euo pipefail

TEMP_GB=12
DOCKER_GB=12

temp_dir="$(python3 -c 'import tempfile; print(tempfile.gettempdir())')"
docker_state="${YMIR_DOCKER_STATE:-/var/lib/ymir-template-docker}"

# The nearest existing folder: the engine's state does not exist before its first start.
existing() {
    local path="$1"
    while [ ! -e "$path" ]; do
        path="$(dirname "$path")"
    done
    printf '%s\n' "$path"
}

device() { df -P "$1" | awk 'NR == 2 { print $1 }'; }
free_gb() { df -Pk "$1" | awk 'NR == 2 { printf "%d\n", $4 / 1048576 }'; }

# Exit with what to do unless the disk of folder $1 has $2 GB free; $3 names what it holds.
require() {
    local folder="$1" need="$2" where="$3" free
    free="$(free_gb "$folder")"
    [ "$free" -ge "$need" ] && return 0
    printf 'check-disk: error: %s GB free for %s; a full test run needs about %s GB there.\n' \
        "$free" "$where" "$need" >&2
    printf 'check-disk: free some space, point TMPDIR or YMIR_DOCKER_STATE at a larger disk, or set YMIR_TEST_MIN_FREE_GB=0 to skip this check (a partial run such as -m "not slow and not container" needs far less).\n' >&2
    exit 1
}

if [ -n "${YMIR_TEST_MIN_FREE_GB:-}" ]; then
    [[ "$YMIR_TEST_MIN_FREE_GB" =~ ^[0-9]+$ ]] ||
        { echo "check-disk: error: YMIR_TEST_MIN_FREE_GB must be a whole number of GB, got '$YMIR_TEST_MIN_FREE_GB'" >&2; exit 2; }
    [ "$YMIR_TEST_MIN_FREE_GB" -eq 0 ] && exit 0
    TEMP_GB="$YMIR_TEST_MIN_FREE_GB"
    DOCKER_GB=0
fi

docker_dir="$(existing "$docker_state")"
if [ "$(device "$temp_dir")" = "$(device "$docker_dir")" ]; then
    require "$temp_dir" $((TEMP_GB + DOCKER_GB)) \
        "the temporary folder ($temp_dir) and the Docker engine's state ($docker_state), one disk"
else
    require "$temp_dir" "$TEMP_GB" "the temporary folder ($temp_dir)"
    require "$docker_dir" "$DOCKER_GB" "the Docker engine's state ($docker_state)"
fi
