{%- set cpu = cookiecutter._version_matrix.cpu -%}
{%- set stack = cookiecutter._openmmlab_stack -%}
#!/usr/bin/env bash
# Set up the development stack of this executor: the cpu image's PyTorch and mmcv, the OpenMMLab
# packages this executor uses, then this project in editable mode with its dev tools.
# `make install` runs it.
#
# Usage (from anywhere):
#     scripts/install-cpu-stack.sh            install
#     scripts/install-cpu-stack.sh --plan     print what it would do, change nothing
#
# Where: the project's virtual environment $VENV (default .venv), created when missing; or, with
# PYTHON set, the environment of that interpreter (an environment you manage yourself).
#
# What: the cpu image's stack, from prebuilt wheels only, in minutes: PyTorch {{ cpu.torch }} (CPU
# build) and OpenMMLab's mmcv {{ stack.mmcv }} wheel for it, with the image's pins. Those wheels exist
# for Python {{ cookiecutter._dev_stack.prebuilt_pythons|replace(' ', ', ') }}. A new $VENV gets its Python from, in this order:
#   1. python3, if it is one of those;
#   2. uv (https://docs.astral.sh/uv/), if it is on PATH: CPython $UV_PYTHON (default {{ cpu.python }}, the
#      cpu image's), an installed one or one uv downloads;
#   3. python3.10, python3.11, python3.9 or python3.8 on PATH.
# Only when none of them is there (or PYTHON is another version) does it fall back to PyTorch
# {{ stack.dev_cpu_torch }} and mmcv compiled from source (about 30 minutes on 2 cores), and it says so before
# it starts.
#
# Environment:
#   VENV              the project's virtual environment (default .venv)
#   PYTHON            install into this interpreter's environment instead of $VENV
#   UV_PYTHON         the Python uv gets for a new $VENV (default {{ cpu.python }})
#   TORCH_VERSION     the PyTorch version (default {{ cpu.torch }}, the cpu image's; {{ stack.dev_cpu_torch }} on the fallback)
#   TORCH_INDEX_URL   index of PyTorch's CPU builds (default {{ cpu.torch_index }}); a
#                     mirror of it, or empty for pip's configured index
#   MMCV_INDEX_URL    page of prebuilt mmcv wheels for this PyTorch (default for PyTorch {{ cpu.torch }}:
#                     {{ cpu.mmcv_index }});
#                     a mirror of it, or empty to compile unless MMCV_WHEELHOUSE has the wheel
#   MMCV_WHEELHOUSE   a folder with a ready mmcv-{{ stack.mmcv }}-*.whl for this PyTorch and Python (offline
#                     use); it wins over MMCV_INDEX_URL
#   MAX_JOBS          parallel compile jobs if mmcv is compiled (default: the number of cores)
# pip's own settings (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_CERT, ...) apply to every install.
set -euo pipefail

cd "$(dirname "$0")/.."

plan_only=0
case "${1:-}" in
"") ;;
--plan) plan_only=1 ;;
*)
    echo "usage: $0 [--plan]" >&2
    exit 2
    ;;
esac

# The cpu image's stack and the fallback, from the template's version matrix (cookiecutter.json).
IMAGE_TORCH="{{ cpu.torch }}"
IMAGE_PYTHON="{{ cpu.python }}"
IMAGE_TORCH_INDEX="{{ cpu.torch_index }}"
IMAGE_MMCV_INDEX="{{ cpu.mmcv_index }}"
# The image's pins beside torch: numpy 1.x (its PyTorch was built against it) and the last
# OpenCV that accepts numpy 1.x.
IMAGE_PINS=("{{ cpu.numpy }}" "{{ cpu.opencv }}" "{{ cpu.opencv|replace('-headless', '') }}")
PREBUILT_PYTHONS="{{ cookiecutter._dev_stack.prebuilt_pythons }}"
FALLBACK_TORCH="{{ stack.dev_cpu_torch }}"
MMCV_VERSION="{{ stack.mmcv }}"
MMENGINE_VERSION="{{ stack.mmengine }}"
MMDET_VERSION="{{ stack.mmdet }}"
MMSEG_VERSION="{{ stack.mmsegmentation }}"
SETUPTOOLS="setuptools{{ stack.setuptools }}"
# Measured: mmcv's CPU ops compile in about 30 minutes with 2 jobs.
COMPILE_JOB_MINUTES=60

VENV="${VENV-.venv}"
UV_PYTHON="${UV_PYTHON:-$IMAGE_PYTHON}"

say() {
    printf '%s\n' "$*"
}

die() {
    printf 'install-cpu-stack: %s\n' "$*" >&2
    exit 1
}

python_version() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

has_wheels() {
    case " $PREBUILT_PYTHONS " in
    *" $1 "*) return 0 ;;
    esac
    return 1
}

# --- the environment -----------------------------------------------------------------------
venv_from=""  # the interpreter that creates $VENV, or "uv"
if [ -n "${PYTHON:-}" ]; then
    python="$PYTHON"
    command -v "$python" >/dev/null 2>&1 || die "PYTHON=$python is not an interpreter"
    version="$(python_version "$python")" || die "PYTHON=$python does not run"
    environment="the environment of $python (Python $version)"
elif [ -z "$VENV" ]; then
    die "VENV is empty: set PYTHON to the interpreter whose environment to fill"
elif [ -x "$VENV/bin/python" ]; then
    python="$VENV/bin/python"
    version="$(python_version "$python")" || die "$VENV/bin/python does not run: remove $VENV"
    environment="$VENV (Python $version; remove it to let this script choose again)"
else
    python="$VENV/bin/python"
    if command -v python3 >/dev/null 2>&1 && has_wheels "$(python_version python3)"; then
        venv_from="$(command -v python3)"
    elif command -v uv >/dev/null 2>&1; then
        venv_from=uv
    else
        for candidate in python3.10 python3.11 python3.9 python3.8; do
            if command -v "$candidate" >/dev/null 2>&1 && has_wheels "$(python_version "$candidate")"; then
                venv_from="$(command -v "$candidate")"
                break
            fi
        done
    fi
    if [ -z "$venv_from" ]; then
        command -v python3 >/dev/null 2>&1 || die "no python3 on PATH"
        venv_from="$(command -v python3)"
    fi
    if [ "$venv_from" = uv ]; then
        version="$UV_PYTHON"
        environment="$VENV, new: uv makes it with CPython $UV_PYTHON (an installed one, else downloaded)"
    else
        version="$(python_version "$venv_from")" || die "$venv_from does not run"
        environment="$VENV, new, from $venv_from (Python $version)"
    fi
fi

# --- the stack -------------------------------------------------------------------------------
if [ -n "${TORCH_VERSION:-}" ]; then
    torch="$TORCH_VERSION"
elif has_wheels "$version"; then
    torch="$IMAGE_TORCH"
else
    torch="$FALLBACK_TORCH"
fi
image_stack=0
if [ "$torch" = "$IMAGE_TORCH" ] && has_wheels "$version"; then
    image_stack=1
fi
torch_index="${TORCH_INDEX_URL-$IMAGE_TORCH_INDEX}"
# OpenMMLab's page serves wheels for the image's PyTorch only: another PyTorch needs its own page.
if [ "$image_stack" = 1 ]; then
    mmcv_index="${MMCV_INDEX_URL-$IMAGE_MMCV_INDEX}"
else
    mmcv_index="${MMCV_INDEX_URL:-}"
fi
mmcv_wheel=""
if [ -n "${MMCV_WHEELHOUSE:-}" ] && [ -d "$MMCV_WHEELHOUSE" ]; then
    for candidate in "$MMCV_WHEELHOUSE"/mmcv-"$MMCV_VERSION"-*.whl; do
        if [ -f "$candidate" ]; then
            mmcv_wheel="$candidate"
            break
        fi
    done
fi
if [ -n "$mmcv_wheel" ]; then
    mmcv_from="wheelhouse"
elif [ -n "$mmcv_index" ]; then
    mmcv_from="index"
else
    mmcv_from="compile"
fi

# The framework(s) of this project, found by which src/<package>/frameworks/ folders it has.
frameworks=()
for folder in src/*/frameworks/mmdetection; do
    if [ -d "$folder" ]; then
        frameworks+=("mmdet==$MMDET_VERSION")
    fi
done
for folder in src/*/frameworks/mmsegmentation; do
    if [ -d "$folder" ]; then
        frameworks+=("mmsegmentation==$MMSEG_VERSION")
    fi
done

jobs="${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}"
say "== plan"
say "environment: $environment"
torch_from="${torch_index:-the configured package index}"
if [ "$image_stack" = 1 ]; then
    say "PyTorch:     $torch (CPU build, as in the cpu image) from $torch_from"
else
    say "PyTorch:     $torch (CPU build) from $torch_from"
fi
case "$mmcv_from" in
wheelhouse) say "mmcv:        $MMCV_VERSION, the prebuilt wheel $mmcv_wheel" ;;
index) say "mmcv:        $MMCV_VERSION, a prebuilt wheel from $mmcv_index" ;;
compile)
    minutes=$((COMPILE_JOB_MINUTES / (jobs > 0 ? jobs : 1)))
    if [ "$minutes" -lt 5 ]; then
        minutes=5
    fi
    say "mmcv:        $MMCV_VERSION, COMPILED from source: about $minutes minutes with $jobs jobs (MAX_JOBS)"
    ;;
esac
say "then:        mmengine==$MMENGINE_VERSION ${frameworks[*]}, this project (pip install -e '.[dev]')"
if [ "$image_stack" = 0 ] && ! has_wheels "$version" && [ -z "${TORCH_VERSION:-}" ]; then
    say ""
    say "NOTE: PyTorch $IMAGE_TORCH and OpenMMLab's mmcv wheels exist for Python ${PREBUILT_PYTHONS// /, } only, not $version."
    say "      For the cpu image's stack in minutes, install uv (e.g. 'python3 -m pip install --user uv')"
    say "      or one of those Pythons${PYTHON:+, unset PYTHON}, remove $VENV, and run 'make install' again."
fi
if [ "$mmcv_from" = compile ]; then
    say ""
    say "NOTE: no prebuilt mmcv wheel (MMCV_INDEX_URL, MMCV_WHEELHOUSE): mmcv is compiled; pip keeps"
    say "      the wheel in its cache, so the next install on this machine is quick."
fi
if [ "$plan_only" = 1 ]; then
    exit 0
fi

# --- install ---------------------------------------------------------------------------------
if [ -n "$venv_from" ]; then
    say "== $VENV"
    if [ "$venv_from" = uv ]; then
        uv venv --python "$UV_PYTHON" "$VENV"
        # uv's environments come without pip; ensurepip installs the interpreter's bundled one,
        # with no download.
        "$python" -m ensurepip --upgrade --default-pip >/dev/null
    else
        "$venv_from" -m venv "$VENV"
    fi
    created="$(python_version "$python")" || die "$VENV/bin/python does not run"
    if [ "$created" != "$version" ]; then
        die "$VENV has Python $created, not $version as planned: remove it and check UV_PYTHON"
    fi
fi

# Every pip install below gets the same pins as the image: pip never replaces torch, and
# resolving the frameworks cannot pull a setuptools without pkg_resources (mmengine imports it).
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
printf '%s\n' "torch==$torch" "$SETUPTOOLS" "mmcv==$MMCV_VERSION" "mmengine==$MMENGINE_VERSION" \
    "${frameworks[@]}" >"$constraints"
if [ "$image_stack" = 1 ]; then
    printf '%s\n' "${IMAGE_PINS[@]}" >>"$constraints"
fi

pip_install() {
    "$python" -m pip install --disable-pip-version-check -c "$constraints" "$@"
}

say "== PyTorch $torch"
if [ -n "$torch_index" ]; then
    pip_install --index-url "$torch_index" "torch==$torch"
else
    pip_install "torch==$torch"
fi

say "== mmcv $MMCV_VERSION"
case "$mmcv_from" in
wheelhouse)
    pip_install --find-links "$MMCV_WHEELHOUSE" --only-binary mmcv "$SETUPTOOLS" "mmcv==$MMCV_VERSION"
    ;;
index)
    pip_install --find-links "$mmcv_index" --only-binary mmcv "$SETUPTOOLS" "mmcv==$MMCV_VERSION" ||
        die "no mmcv $MMCV_VERSION wheel for Python $version at $mmcv_index (set MMCV_INDEX_URL= to compile it)"
    ;;
compile)
    # setuptools<82 keeps pkg_resources, which mmcv's setup.py imports; --no-build-isolation
    # compiles against the torch installed above.
    pip_install "$SETUPTOOLS" wheel ninja psutil
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$jobs" \
        pip_install --no-build-isolation "mmcv==$MMCV_VERSION"
    ;;
esac

say "== mmengine $MMENGINE_VERSION and the frameworks"
pip_install "mmengine==$MMENGINE_VERSION" "${frameworks[@]}" "$SETUPTOOLS"

say "== this project"
pip_install -e '.[dev]'

"$python" - <<'PY'
import mmcv
import mmengine
import torch
from mmcv.ops import nms  # noqa: F401  (the compiled ops are there)

print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}")
PY
say "== done: $python"
