"""Can this image compute on the task's GPUs? Checked before the work starts, with the fix.

A GPU that the image does not fit should fail the task in seconds, with code 300101 (or
300102) and one line that names the GPU, the image and what to do, not with a CUDA error in
the middle of the first epoch. Two checks, both before the first forward pass:

- :func:`check_devices`, in the executor process before the task prepares anything: the GPUs
  asked for are visible (else 300102), the driver is new enough for the image's CUDA and the
  image's PyTorch has code for each GPU's architecture (else 300101);
- :func:`check_kernels`, in each process that computes on a GPU (:mod:`.distributed` runs it
  before the job, so training, inference and mining of both frameworks pass through it): one
  tiny mmcv CUDA op, NMS on two boxes. OpenMMLab's prebuilt mmcv wheels have no kernels for
  Hopper and newer GPUs although PyTorch has, and every offered model calls mmcv's CUDA ops
  (NMS in every detector, RoIAlign in the two-stage ones, ...), so this is where such an image
  fails.

The messages name the image's line, its driver floor and how its mmcv was made, from the
environment its Dockerfile sets (``YMIR_IMAGE_VARIANT``, ``YMIR_DRIVER_MIN``,
``YMIR_MMCV_WHEEL``); a run outside an image (from a checkout) names the installed PyTorch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from ...contract.errors import ErrorCode, ExecutorError
from . import failures

# The kernel module's version line: "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05 ..."
DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
# Devices of this process whose mmcv kernels were found working (a process may run several jobs).
_kernels_checked: set[int] = set()


def check_devices(gpu_ids: Sequence[int]) -> None:
    """Fail early, with the right code, when the GPUs the task asks for cannot be used.

    ``gpu_ids`` are in-container indices (``ctx.gpu_ids``); empty means the CPU (always fine).

    Raises:
        ExecutorError: NO_GPU when CUDA sees no or too few GPUs, CUDA_GPU when the driver is
            too old for the image's CUDA or the image's PyTorch has no code for a GPU.
    """
    if not gpu_ids:
        return
    import torch

    if not torch.cuda.is_available():
        reason = "torch sees no CUDA device"
        try:
            # is_available() only says False; init() says why (old driver, no driver, ...).
            torch.cuda.init()
        except Exception as error:
            known = explain(error)
            if known is not None:
                raise known from error
            reason = failures.reason(error)
        raise ExecutorError(
            ErrorCode.NO_GPU,
            f"the task asks for GPU(s) {list(gpu_ids)} but {reason}; "
            "give the task a GPU, or run it on the CPU (gpu_count 0)",
        )
    count = torch.cuda.device_count()
    missing = [index for index in gpu_ids if not 0 <= index < count]
    if missing:
        raise ExecutorError(
            ErrorCode.NO_GPU,
            f"the task asks for GPU(s) {list(gpu_ids)} but only {count} GPU(s) are visible "
            "in the container",
        )
    supported = torch.cuda.get_arch_list()
    for index in gpu_ids:
        major, minor = torch.cuda.get_device_capability(index)
        if supported and not arch_supported(major * 10 + minor, supported):
            raise ExecutorError(
                ErrorCode.CUDA_GPU,
                f"{describe_gpu(index)} is not supported by {_image()}: its PyTorch "
                f"{torch.__version__} is built for {' '.join(supported)}; use an image variant "
                f"whose PyTorch has sm_{major}{minor} code (see the README's variant table)",
            )


def check_kernels(index: int) -> None:
    """Run one mmcv CUDA op on ``cuda:<index>``; once per device and process.

    Raises:
        ExecutorError: CUDA_GPU when mmcv has no kernels for the GPU (or no CUDA ops at all),
            or the driver is too old; other failures of the op are raised as they are.
    """
    if index in _kernels_checked:
        return
    try:
        nms_probe(f"cuda:{index}")
    except Exception as error:
        known = explain(error, index)
        if known is None:
            raise
        raise known from error
    _kernels_checked.add(index)


def nms_probe(device: str) -> list[int]:
    """mmcv's NMS on two overlapping boxes on ``device``: the indices kept, ``[0]``."""
    import torch
    from mmcv.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]], device=device)
    scores = torch.tensor([0.9, 0.8], device=device)
    _detections, keep = nms(boxes, scores, 0.5)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)  # kernel errors surface at the next synchronisation
    return [int(value) for value in keep.tolist()]


def explain(error: BaseException, index: int | None = None) -> ExecutorError | None:
    """The executor error for a CUDA failure on GPU ``index`` (None: before any GPU was
    used), with the fix; :func:`.failures.classify` for anything else."""
    text = " ".join(f"{type(error).__name__}: {error}".lower().split())
    if any(fragment in text for fragment in failures.DRIVER_TOO_OLD):
        return ExecutorError(ErrorCode.CUDA_GPU, driver_message(str(error)))
    if index is not None and any(fragment in text for fragment in failures.NO_KERNELS):
        return ExecutorError(ErrorCode.CUDA_GPU, kernels_message(index))
    return failures.classify(error)


def driver_message(error_text: str) -> str:
    """The driver is older than the image's CUDA needs: which driver, which minimum, the fix."""
    import torch

    found = driver_version()
    if found:
        found = f" ({found})"
    else:
        # PyTorch reports the CUDA version the driver supports: "found version 11040" is 11.4.
        match = re.search(r"found version (\d+)", error_text)
        if match:
            number = int(match.group(1))
            found = f" (it supports CUDA {number // 1000}.{number % 1000 // 10})"
    minimum = os.environ.get("YMIR_DRIVER_MIN", "")
    needs = f"driver >= {minimum}" if minimum else "a newer driver"
    return (
        f"the NVIDIA driver{found} is too old for {_image()}: its CUDA {torch.version.cuda} "
        f"needs {needs}; update the driver, or use an image variant of an older CUDA line "
        "(see the README's variant table)"
    )


def kernels_message(index: int) -> str:
    """mmcv has no kernels for GPU ``index``: which GPU, which image, how to build one that has."""
    import mmcv
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    capability = f"{major}.{minor}"
    gpu = describe_gpu(index)
    variant = os.environ.get("YMIR_IMAGE_VARIANT")
    wheel = os.environ.get("YMIR_MMCV_WHEEL")
    if variant and wheel == "prebuilt":
        return (
            f"{gpu} has no mmcv CUDA kernels in this image ({variant}, OpenMMLab's prebuilt "
            f"mmcv {mmcv.__version__}); rebuild it with --build-arg MMCV_WHEEL=build, which "
            f"compiles mmcv for TORCH_CUDA_ARCH_LIST (it must include {capability}), or use "
            "an image variant that compiles mmcv (see the README's variant table)"
        )
    if variant:
        return (
            f"{gpu} has no mmcv CUDA kernels in this image ({variant}, mmcv "
            f"{mmcv.__version__} compiled for other architectures); rebuild it with "
            f'--build-arg TORCH_CUDA_ARCH_LIST="{capability}" (or a list that includes it)'
        )
    return (
        f"{gpu} has no mmcv CUDA kernels in this environment (mmcv {mmcv.__version__}, "
        f"PyTorch {torch.__version__}); compile mmcv for it: TORCH_CUDA_ARCH_LIST={capability} "
        f"FORCE_CUDA=1 pip install --no-build-isolation --no-binary=mmcv "
        f"mmcv=={mmcv.__version__} (make gpu-check does this)"
    )


def describe_gpu(index: int) -> str:
    """``GPU 0 (NVIDIA H100 80GB HBM3, compute capability 9.0)``."""
    import torch

    try:
        name = torch.cuda.get_device_name(index)
        major, minor = torch.cuda.get_device_capability(index)
    except Exception:  # the description must not hide the failure it describes
        return f"GPU {index}"
    return f"GPU {index} ({name}, compute capability {major}.{minor})"


def driver_version() -> str:
    """The NVIDIA kernel module's version (``535.104.05``), '' where it cannot be read."""
    try:
        text = DRIVER_VERSION_FILE.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    match = re.search(r"Kernel Module\s+(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else ""


def arch_supported(capability: int, arch_list: Sequence[str]) -> bool:
    """Whether code built for ``arch_list`` (``sm_86``, ``compute_90``, ...) runs on a GPU of
    ``capability`` (``86`` for 8.6)."""
    # Exact cubins (sm_XY) or PTX (compute_XY) of an older or equal architecture that the
    # driver can JIT-compile; a cubin only runs on its own major architecture.
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        if not number.isdigit():
            continue
        value = int(number)
        if kind == "sm" and value // 10 == capability // 10 and value <= capability:
            return True
        if kind == "compute" and value <= capability:
            return True
    return False


def _image() -> str:
    import torch

    variant = os.environ.get("YMIR_IMAGE_VARIANT")
    return f"this image ({variant})" if variant else f"this PyTorch ({torch.__version__})"
