#!/usr/bin/env bash
# Install the CPU stack on a fresh machine (CI, a laptop): PyTorch for the CPU, the OpenMMLab
# packages this executor uses, then this project in editable mode with its dev tools.
#
# Usage (inside the virtual environment you want to fill, from anywhere):
#     scripts/install-cpu-stack.sh
#
# What it installs, in this order (the order matters: mmcv compiles against the torch it finds):
#   1. torch 2.13.0 (no torchvision: the OpenMMLab stack does not need it);
#   2. build tools: "setuptools<82" (82 removed pkg_resources, which mmcv's build and mmengine
#      at run time import), wheel, ninja, psutil;
#   3. mmcv 2.1.0 with CPU ops: from a prebuilt wheel in $MMCV_WHEELHOUSE when that folder
#      holds one, else compiled from source (about 30 minutes on 2 cores);
#   4. mmengine 0.10.7 and the framework(s) of this project (mmdet 3.3.0, mmsegmentation 1.2.2),
#      found by which src/<package>/frameworks/ folders it has;
#   5. this project: pip install -e '.[dev]'.
#
# Environment:
#   PYTHON            the interpreter whose pip installs everything (default: python3)
#   MMCV_WHEELHOUSE   a folder with mmcv-2.1.0-*.whl built for this torch and Python
#   TORCH_INDEX_URL   where to get torch from, e.g. https://download.pytorch.org/whl/cpu (by
#                     default the configured package index; on Linux x86_64 PyPI's torch is the
#                     large CUDA build, which also runs on the CPU)
#   MAX_JOBS          parallel compile jobs for mmcv (default: the number of cores)
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# The versions come from the template's version matrix (cookiecutter.json).
TORCH_VERSION="{{ cookiecutter._openmmlab_stack.dev_cpu_torch }}"
MMCV_VERSION="{{ cookiecutter._openmmlab_stack.mmcv }}"
MMENGINE_VERSION="{{ cookiecutter._openmmlab_stack.mmengine }}"
MMDET_VERSION="{{ cookiecutter._openmmlab_stack.mmdet }}"
MMSEG_VERSION="{{ cookiecutter._openmmlab_stack.mmsegmentation }}"

pip_install() {
    "$PYTHON" -m pip install --disable-pip-version-check "$@"
}

echo "== torch ${TORCH_VERSION}"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    pip_install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"
else
    pip_install "torch==${TORCH_VERSION}"
fi

echo "== build tools"
pip_install "setuptools<82" wheel ninja psutil

echo "== mmcv ${MMCV_VERSION} (CPU ops)"
wheel=""
if [ -n "${MMCV_WHEELHOUSE:-}" ] && [ -d "$MMCV_WHEELHOUSE" ]; then
    for candidate in "$MMCV_WHEELHOUSE"/mmcv-"${MMCV_VERSION}"-*.whl; do
        if [ -f "$candidate" ]; then
            wheel="$candidate"
            break
        fi
    done
fi
if [ -n "$wheel" ]; then
    echo "using the prebuilt wheel $wheel"
    pip_install --find-links "$MMCV_WHEELHOUSE" --only-binary mmcv "mmcv==${MMCV_VERSION}"
else
    echo "no prebuilt wheel (MMCV_WHEELHOUSE unset or without one): compiling, this takes a while"
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        pip_install --no-build-isolation "mmcv==${MMCV_VERSION}"
fi

echo "== mmengine ${MMENGINE_VERSION} and the frameworks"
packages=("mmengine==${MMENGINE_VERSION}")
for folder in src/*/frameworks/mmdetection; do
    if [ -d "$folder" ]; then
        packages+=("mmdet==${MMDET_VERSION}")
    fi
done
for folder in src/*/frameworks/mmsegmentation; do
    if [ -d "$folder" ]; then
        packages+=("mmsegmentation==${MMSEG_VERSION}")
    fi
done
# setuptools again: keep pip from upgrading it past 82 while resolving the frameworks.
pip_install "${packages[@]}" "setuptools<82"

echo "== this project"
pip_install -e '.[dev]' "setuptools<82"

"$PYTHON" - <<'PY'
import mmcv
import mmengine
import torch
from mmcv.ops import nms  # noqa: F401  (the compiled ops are there)

print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}")
PY
