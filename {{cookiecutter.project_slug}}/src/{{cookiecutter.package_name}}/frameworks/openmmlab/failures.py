"""Exceptions from torch / mmengine / data loading -> YMIR executor error codes.

The platform shows the monitor's code to the user, so a failure with a known cause must carry
its code (``contract.errors.ErrorCode``) instead of ending as a generic container error:

- 300101 ``CUDA_GPU``: the image's CUDA build does not fit the GPU or the driver (driver too
  old, no kernel image for this GPU architecture);
- 300102 ``NO_GPU``: the task asks for GPUs but none (or too few) are visible;
- 300103 ``OUT_OF_MEMORY``: GPU or host memory, including the shared memory (``/dev/shm``)
  that DataLoader workers pass batches through (a "bus error" in a worker);
- 300201 ``NAN``: the training loss became NaN or infinite (learning rate too high, bad data);
- 300301 ``NETWORK``: a download failed. Tasks may run without network, and nothing the
  executor itself loads is downloaded (weights are baked into the image, config URLs are
  stripped), so this is a URL the operator put in (``cfg_options``, e.g. ``load_from``);
- 300004 ``MODEL``: weights that cannot be loaded or do not fit the model.

:func:`classify` looks at the exception and its causes (type first, then message), because
the same condition reaches us as different types depending on where it happened (the main
process, a DataLoader worker, another rank). Anything unrecognised is left alone: the
entrypoint then reports an unexpected failure with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Iterator, Sequence
from urllib.error import URLError

from ...contract.errors import ErrorCode, ExecutorError

log = logging.getLogger(__name__)

# How much of the original message the user sees (the last log line and monitor.txt).
_REASON_CHARS = 200


class NonFiniteLossError(FloatingPointError):
    """Raised by the training hook when the loss is NaN or infinite."""


# (code, lower-case message fragments, hint) in the order they are tried: "no GPU" before the
# driver patterns (both mention the NVIDIA driver), memory before everything (a worker killed
# for memory also reports "DataLoader worker ... exited unexpectedly").
_PATTERNS: tuple[tuple[ErrorCode, tuple[str, ...], str], ...] = (
    (
        ErrorCode.OUT_OF_MEMORY,
        (
            "out of memory",
            "outofmemoryerror",
            "can't allocate memory",
            "cannot allocate memory",
            "not enough memory",
            "bus error",
            "shared memory",
            "unable to write to file </torch_",
            "unable to mmap",
            "no space left on device",
            "killed by signal: killed",
            "is killed by signal",
            "dataloader worker (pid",
        ),
        "lower batch_size_per_gpu or num_workers_per_gpu, or raise shm_size (shared memory)",
    ),
    (
        ErrorCode.NAN,
        ("loss become infinite or nan", "non-finite loss", "loss is nan", "nan loss"),
        "lower learning_rate, or check the annotations",
    ),
    (
        ErrorCode.NO_GPU,
        (
            "torch not compiled with cuda enabled",
            "no cuda gpus are available",
            "found no nvidia driver",
            "no cuda-capable device is detected",
            "invalid device ordinal",
        ),
        "give the task a GPU, or run it on the CPU (gpu_count 0)",
    ),
    (
        ErrorCode.CUDA_GPU,
        (
            "no kernel image is available",
            "cuda driver version is insufficient",
            "driver on your system is too old",
            "invalid device function",
            "forward compatibility was attempted",
            "cuda error: unsupported ptx version",
            "is not compatible with the current pytorch installation",
            "cudnn_status_arch_mismatch",
            "cudnn_status_not_supported",
            "cuda initialization",
        ),
        "use an image variant built for this GPU and driver (see the README's variant table)",
    ),
    (
        ErrorCode.NETWORK,
        (
            "urlopen error",
            "name or service not known",
            "temporary failure in name resolution",
            "max retries exceeded with url",
        ),
        "tasks may run without network: bake the weights into the image (BAKE_WEIGHTS) or "
        "take the URL out of cfg_options",
    ),
    (
        ErrorCode.MODEL,
        (
            "pytorchstreamreader failed",
            "invalid load key",
            "unpickling",
            "unsupported global",
            "size mismatch for",
            "error(s) in loading state_dict",
        ),
        "pick another pretrained model, or none",
    ),
)

_WHAT = {
    ErrorCode.OUT_OF_MEMORY: "out of memory",
    ErrorCode.NAN: "the training loss became NaN or infinite",
    ErrorCode.NO_GPU: "no usable GPU",
    ErrorCode.CUDA_GPU: "the image's CUDA build does not fit this GPU or driver",
    ErrorCode.MODEL: "the model weights cannot be used",
    ErrorCode.NETWORK: "a download failed",
}


def classify(error: BaseException) -> ExecutorError | None:
    """The executor error for ``error`` (or one of its causes), None when not recognised."""
    chain = list(_chain(error))
    for item in chain:
        if isinstance(item, ExecutorError):
            return item
    for item in chain:
        code = _by_type(item)
        if code is not None:
            return _make(code, item)
    for item in chain:
        text = f"{type(item).__name__}: {item}".lower()
        for code, fragments, _hint in _PATTERNS:
            if any(fragment in text for fragment in fragments):
                return _make(code, item)
    for item in chain:
        if _is_network(item):
            return _make(ErrorCode.NETWORK, item)
    return None


def translate(error: BaseException) -> BaseException:
    """``classify(error)`` when recognised, else ``error`` itself (for ``raise ... from``)."""
    return classify(error) or error


@contextlib.contextmanager
def mapped() -> Iterator[None]:
    """Re-raise recognised failures inside the block as :class:`ExecutorError`."""
    try:
        yield
    except ExecutorError:
        raise
    except BaseException as error:
        if isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        known = classify(error)
        if known is None:
            raise
        log.error("%s", f"{type(error).__name__}: {error}"[:2000])
        raise known from error


def check_devices(gpu_ids: Sequence[int]) -> None:
    """Fail early, with the right code, when the GPUs the task asks for cannot be used.

    ``gpu_ids`` are in-container indices (``ctx.gpu_ids``); empty means the CPU (always fine).

    Raises:
        ExecutorError: NO_GPU when CUDA sees no or too few GPUs, CUDA_GPU when the driver is
            too old for the image's CUDA or the image's torch has no kernels for the GPU.
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
            known = classify(error)
            if known is not None:
                raise known from error
            reason = _reason(error)
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
        if supported and not _arch_supported(major * 10 + minor, supported):
            raise ExecutorError(
                ErrorCode.CUDA_GPU,
                f"GPU {index} ({torch.cuda.get_device_name(index)}, sm_{major}{minor}) is not "
                f"supported by this image's torch {torch.__version__} (built for "
                f"{' '.join(supported)}); use an image variant built for this GPU",
            )


def _arch_supported(capability: int, arch_list: Sequence[str]) -> bool:
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


def _by_type(error: BaseException) -> ErrorCode | None:
    if isinstance(error, NonFiniteLossError):
        return ErrorCode.NAN
    if isinstance(error, MemoryError):
        return ErrorCode.OUT_OF_MEMORY
    # torch.cuda.OutOfMemoryError exists from torch 1.13; match by name on older versions.
    if type(error).__name__ == "OutOfMemoryError":
        return ErrorCode.OUT_OF_MEMORY
    return None


def _is_network(error: BaseException) -> bool:
    """urllib's URLError and socket errors (DNS, refused, unreachable, timed out). Tried after
    the messages: a dead DataLoader worker surfaces with a ConnectionResetError as its cause."""
    return isinstance(error, (URLError, ConnectionError, socket.gaierror, socket.timeout))


def _make(code: ErrorCode, error: BaseException) -> ExecutorError:
    hint = next(hint for known, _fragments, hint in _PATTERNS if known == code)
    return ExecutorError(code, f"{_WHAT[code]}: {_reason(error)}; {hint}")


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > _REASON_CHARS:
        text = text[: _REASON_CHARS - 3] + "..."
    return text


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
