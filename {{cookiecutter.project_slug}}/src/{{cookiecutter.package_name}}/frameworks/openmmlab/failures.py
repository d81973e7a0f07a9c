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
entrypoint then reports an unexpected failure with its traceback. :mod:`.preflight` turns the
CUDA failures it provokes before the work starts into messages that name the GPU, the image
and the fix.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Iterator
from urllib.error import URLError

from ...contract.errors import ErrorCode, ExecutorError

log = logging.getLogger(__name__)

# How much of the original message the user sees (the last log line and monitor.txt).
_REASON_CHARS = 200


class NonFiniteLossError(FloatingPointError):
    """Raised by the training hook when the loss is NaN or infinite."""


# What CUDA, PyTorch and cuDNN say (lower case) when the driver is older than the image's CUDA
# needs: too old outright, or a newer CUDA's PTX / forward-compatibility package it cannot use.
DRIVER_TOO_OLD = (
    "cuda driver version is insufficient",
    "driver on your system is too old",
    "forward compatibility was attempted",
    "unsupported ptx version",
    "ptx was compiled with an unsupported toolchain",
    "unsupported display driver / cuda driver combination",
)
# ... and when the code lacks kernels for the GPU's architecture (in PyTorch, mmcv's ops or
# another extension), or the extension was compiled without CUDA at all.
NO_KERNELS = (
    "no kernel image is available",
    "invalid device function",
    "device kernel image is invalid",
    "is not compatible with the current pytorch installation",
    "cudnn_status_arch_mismatch",
    "implementation for device cuda",
)

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
        DRIVER_TOO_OLD,
        "update the NVIDIA driver, or use an image variant of an older CUDA line (see the "
        "README's variant table)",
    ),
    (
        ErrorCode.CUDA_GPU,
        (*NO_KERNELS, "cudnn_status_not_supported", "cuda initialization"),
        "use an image built for this GPU: on a prebuilt line --build-arg MMCV_WHEEL=build, "
        "else a newer line (see the README's variant table)",
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
        for code, fragments, hint in _PATTERNS:
            if any(fragment in text for fragment in fragments):
                return _make(code, item, hint)
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


def _make(code: ErrorCode, error: BaseException, hint: str | None = None) -> ExecutorError:
    if hint is None:
        hint = next(hint for known, _fragments, hint in _PATTERNS if known == code)
    return ExecutorError(code, f"{_WHAT[code]}: {reason(error)}; {hint}")


def reason(error: BaseException) -> str:
    """The error's message on one line, shortened for the last log line."""
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
