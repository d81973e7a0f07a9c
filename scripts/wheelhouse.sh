#!/usr/bin/env bash
# Fill a local wheel folder for the cpu image build in the container tests.
#
# Inside a docker build pip sees only the package index, where torch for x86_64 is the multi-GB
# CUDA build. The tests hand the build the CPU wheel instead: copied into the generated project's
# ./wheels (the Dockerfile mounts it as /wheels) and named with --build-arg PIP_FIND_LINKS=/wheels.
# `pip download` copies the wheel out of pip's local sources (find-links, cache) when it is on
# this machine's disk, else it downloads it.
#
# Usage: scripts/wheelhouse.sh DIR [REQUIREMENT...]     (default requirement: torch==2.13.0)
#   Prints DIR on stdout when done; the wheels already in DIR are kept (pip skips them).
#
# Environment:
#   YMIR_WHEEL_PYTHON        Python version the wheels are for (default 3.11: the test base image's)
#   YMIR_WHEEL_FIND_LINKS    extra local folders to take wheels from, space-separated, e.g. the
#                            shared wheelhouse holding the compiled mmcv wheel
#   PYTHON                   the interpreter that runs pip (default python3)
# pip's own configuration applies: where the CPU wheel is neither on disk nor on the configured
# index, point pip at PyTorch's CPU index (PIP_INDEX_URL=https://download.pytorch.org/whl/cpu).
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: $0 DIR [REQUIREMENT...]" >&2
    exit 2
fi
DIR="$1"
shift
if [ "$#" -eq 0 ]; then
    set -- "torch==2.13.0"
fi
PY_VERSION="${YMIR_WHEEL_PYTHON:-3.11}"
PYTHON="${PYTHON:-python3}"

find_links=()
for folder in ${YMIR_WHEEL_FIND_LINKS:-}; do
    if [ -d "$folder" ]; then
        find_links+=(--find-links "$folder")
    fi
done

mkdir -p "$DIR"
# --no-deps: the build resolves the dependencies itself (small wheels from the index); only the
# big or slow-to-build wheels belong here. --only-binary + --python-version: wheels for the image's
# interpreter, whatever runs this script.
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --python-version "$PY_VERSION" \
    "${find_links[@]}" --dest "$DIR" "$@" >&2
printf '%s\n' "$DIR"
