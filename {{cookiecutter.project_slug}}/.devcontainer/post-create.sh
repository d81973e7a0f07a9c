#!/usr/bin/env bash
# Runs once when the dev container is created (devcontainer.json's postCreateCommand), as root in
# the image itself: the image has the executor's exact stack, and this adds what development
# needs on top of it.
set -euo pipefail

# make (the Makefile's targets) and git, from the base image's Debian packages.
if ! command -v make >/dev/null 2>&1 || ! command -v git >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends make git
    rm -rf /var/lib/apt/lists/*
fi

# The package from the mounted sources, editable (so edits take effect without a rebuild), with
# its dev tools (pytest, ruff, mypy, vermin). The image's constraints keep PyTorch{% if cookiecutter.__framework != 'none' %}, mmcv and the
# OpenMMLab packages{% endif %} exactly as the image has them.
python3 -m pip install --no-cache-dir -c /etc/pip-constraints.txt -e ".[dev]"
