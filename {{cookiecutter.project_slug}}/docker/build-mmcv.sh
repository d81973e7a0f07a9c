#!/usr/bin/env bash
# Compile mmcv with its CUDA ops into a wheel, for the GPU architectures in TORCH_CUDA_ARCH_LIST.
#
# The mmcv-build stage of docker/<variant>.Dockerfile runs it in the line's -devel image (the
# compile lines always, the other GPU lines with --build-arg MMCV_WHEEL=build), and
# scripts/gpu_check.py runs it on a GPU host whose mmcv has no kernels for its GPU. Before the
# long compile it checks what the compile needs, so that a wrong image fails in seconds with
# the reason instead of after minutes with a compiler trace:
#   - a PyTorch with CUDA (the build compiles against it; no GPU is needed);
#   - a C++ compiler and nvcc whose CUDA major version is PyTorch's;
#   - nvcc knows every architecture asked for.
#
# Usage: build-mmcv.sh OUTPUT_DIR MMCV_REQUIREMENT [more pip wheel options]
# Environment:
#   TORCH_CUDA_ARCH_LIST  the architectures, e.g. "8.0 8.6 9.0+PTX" (required)
#   MAX_JOBS              parallel compile jobs; empty: one per 3 GB of the memory available
#                         (nvcc takes 2 to 4 GB per job with several architectures), at most
#                         one per core
#   PYTHON                the interpreter whose PyTorch mmcv is compiled against (python3)
#   CUDA_HOME             the CUDA toolkit (default: found like PyTorch finds it)
#   MEMINFO, CGROUP_ROOT  where the memory is read (default /proc/meminfo, /sys/fs/cgroup)
set -euo pipefail

GB_PER_JOB=3

fail() {
    echo "error: $*" >&2
    exit 1
}

if [ "$#" -lt 2 ]; then
    fail "usage: build-mmcv.sh OUTPUT_DIR MMCV_REQUIREMENT [pip wheel options]"
fi
output_dir="$1"
requirement="$2"
shift 2
python="${PYTHON:-python3}"
arch_list="${TORCH_CUDA_ARCH_LIST:-}"
if [ -z "$arch_list" ]; then
    fail "TORCH_CUDA_ARCH_LIST is empty: name the GPU architectures to compile for, e.g. \"8.6 9.0\""
fi

# PyTorch's CUDA version, e.g. 11.8 (empty for a CPU build).
torch_cuda="$("$python" -c 'import torch; print(torch.version.cuda or "")')" \
    || fail "$python cannot import torch: mmcv is compiled against the installed PyTorch"
if [ -z "$torch_cuda" ]; then
    fail "the PyTorch of $python is a CPU build: mmcv's CUDA ops need a CUDA build of PyTorch"
fi

cxx="${CXX:-}"
if [ -z "$cxx" ]; then
    for candidate in c++ g++; do
        if command -v "$candidate" > /dev/null; then
            cxx="$candidate"
            break
        fi
    done
fi
if [ -z "$cxx" ] || ! command -v "$cxx" > /dev/null; then
    fail "no C++ compiler (c++ or g++) here: nvcc needs one to compile mmcv. Use a -devel image" \
        "that has one (build argument DEVEL_IMAGE) or install it there (apt-get install g++)"
fi

# nvcc as torch.utils.cpp_extension finds it: CUDA_HOME, then PATH, then /usr/local/cuda.
nvcc=""
if [ -n "${CUDA_HOME:-}" ]; then
    nvcc="$CUDA_HOME/bin/nvcc"
elif command -v nvcc > /dev/null; then
    nvcc="$(command -v nvcc)"
elif [ -x /usr/local/cuda/bin/nvcc ]; then
    nvcc=/usr/local/cuda/bin/nvcc
fi
if [ -z "$nvcc" ] || [ ! -x "$nvcc" ]; then
    fail "no nvcc (the CUDA compiler) here${CUDA_HOME:+ (CUDA_HOME=$CUDA_HOME)}: compile in the" \
        "-devel image of this PyTorch build (build argument DEVEL_IMAGE), or set CUDA_HOME"
fi
nvcc_cuda="$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)"
if [ "${nvcc_cuda%%.*}" != "${torch_cuda%%.*}" ]; then
    fail "nvcc is CUDA ${nvcc_cuda:-unknown}, PyTorch is built for CUDA $torch_cuda: use the" \
        "-devel image of the same PyTorch build (build argument DEVEL_IMAGE)"
fi

# nvcc lists the virtual architectures it can compile for (compute_90, ...); an older one that
# cannot list them is left to fail by itself.
if known="$("$nvcc" --list-gpu-arch 2> /dev/null)"; then
    for arch in $arch_list; do
        number="${arch%+PTX}"
        number="${number//./}"
        if ! grep -qx "compute_$number" <<< "$known"; then
            fail "nvcc $nvcc_cuda cannot compile for $arch (it knows $(echo $known | tr '\n' ' '))." \
                "Leave $arch out of TORCH_CUDA_ARCH_LIST, or use a line with a newer CUDA"
        fi
    done
fi

# Memory for the parallel jobs: what is available, or the container's limit when lower.
memory_kb() {
    local kb limit
    kb="$(awk '/^MemAvailable:/ {print $2; exit}' "${MEMINFO:-/proc/meminfo}")"
    if [ -z "$kb" ]; then
        kb="$(awk '/^MemTotal:/ {print $2; exit}' "${MEMINFO:-/proc/meminfo}")"
    fi
    for file in "${CGROUP_ROOT:-/sys/fs/cgroup}/memory.max" \
        "${CGROUP_ROOT:-/sys/fs/cgroup}/memory/memory.limit_in_bytes"; do
        if [ -r "$file" ]; then
            limit="$(cat "$file")"
            if [[ "$limit" =~ ^[0-9]+$ ]] && [ $((limit / 1024)) -lt "${kb:-0}" ]; then
                kb=$((limit / 1024))
            fi
        fi
    done
    echo "${kb:-0}"
}

jobs="${MAX_JOBS:-}"
if [ -z "$jobs" ]; then
    available_kb="$(memory_kb)"
    jobs=$((available_kb / (GB_PER_JOB * 1024 * 1024)))
    cores="$(nproc)"
    if [ "$jobs" -gt "$cores" ]; then
        jobs="$cores"
    fi
    if [ "$jobs" -lt 1 ]; then
        jobs=1
    fi
    echo "mmcv: $jobs parallel compile jobs ($((available_kb / 1024 / 1024)) GB of memory" \
        "available, about $GB_PER_JOB GB per job; $cores cores); set MAX_JOBS to change it"
elif ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
    fail "MAX_JOBS must be a positive number of jobs, got '$jobs'"
fi

echo "mmcv: compiling $requirement for CUDA architectures '$arch_list' with nvcc $nvcc_cuda" \
    "($cxx) against PyTorch's CUDA $torch_cuda"
# FORCE_CUDA: no GPU is visible during a docker build, compile the CUDA ops anyway.
# --no-build-isolation: the build must see the installed torch (and setuptools<82, whose
# pkg_resources mmcv's setup.py imports); --no-binary: never a wheel built for something else.
FORCE_CUDA=1 MMCV_WITH_OPS=1 TORCH_CUDA_ARCH_LIST="$arch_list" MAX_JOBS="$jobs" \
    "$python" -m pip wheel --no-cache-dir --no-deps --no-build-isolation --no-binary=mmcv \
    -w "$output_dir" "$@" "$requirement"
