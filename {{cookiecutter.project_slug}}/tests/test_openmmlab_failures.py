"""Exceptions -> executor codes: CUDA mismatch, no GPU, out of memory, NaN loss, bad weights,
failed downloads; and the GPU checks' decisions on a (simulated) GPU machine."""

from __future__ import annotations

import socket
from urllib.error import URLError

import pytest
import torch

from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.frameworks.openmmlab import failures


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as error:
            raise outer from error
    except BaseException as error:
        return error


@pytest.mark.parametrize(
    "error, code",
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), ErrorCode.OUT_OF_MEMORY),
        (MemoryError(), ErrorCode.OUT_OF_MEMORY),
        (
            RuntimeError(
                "DataLoader worker (pid 123) is killed by signal: Bus error. It is possible "
                "that dataloader's workers are out of shared memory."
            ),
            ErrorCode.OUT_OF_MEMORY,
        ),
        (
            RuntimeError("unable to write to file </torch_1_2>: No space left on device (28)"),
            ErrorCode.OUT_OF_MEMORY,
        ),
        (
            RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"),
            ErrorCode.OUT_OF_MEMORY,
        ),
        (failures.NonFiniteLossError("non-finite loss (nan)"), ErrorCode.NAN),
        (AssertionError("loss become infinite or NaN!"), ErrorCode.NAN),
        (AssertionError("Torch not compiled with CUDA enabled"), ErrorCode.NO_GPU),
        (RuntimeError("No CUDA GPUs are available"), ErrorCode.NO_GPU),
        (RuntimeError("Found no NVIDIA driver on your system."), ErrorCode.NO_GPU),
        (RuntimeError("CUDA error: invalid device ordinal"), ErrorCode.NO_GPU),
        (
            RuntimeError("CUDA error: no kernel image is available for execution on the device"),
            ErrorCode.CUDA_GPU,
        ),
        (
            RuntimeError(
                "The NVIDIA driver on your system is too old (found version 10020). Please "
                "update your GPU driver"
            ),
            ErrorCode.CUDA_GPU,
        ),
        (
            RuntimeError("CUDA driver version is insufficient for CUDA runtime version"),
            ErrorCode.CUDA_GPU,
        ),
        (
            RuntimeError(
                "PytorchStreamReader failed reading zip archive: failed finding central directory"
            ),
            ErrorCode.MODEL,
        ),
        (
            RuntimeError("Error(s) in loading state_dict for RTMDet: size mismatch for x"),
            ErrorCode.MODEL,
        ),
        (URLError(ConnectionRefusedError(111, "Connection refused")), ErrorCode.NETWORK),
        (socket.gaierror(-3, "Temporary failure in name resolution"), ErrorCode.NETWORK),
        (
            RuntimeError(
                "HTTPSConnectionPool(host='download.openmmlab.com', port=443): Max retries "
                "exceeded with url: /mmdetection/v3.0/rtmdet/x.pth"
            ),
            ErrorCode.NETWORK,
        ),
    ],
)
def test_known_failures_get_their_code(error: BaseException, code: ErrorCode) -> None:
    known = failures.classify(error)
    assert known is not None and known.code == code
    assert len(known.message) < 400


def test_oom_by_type() -> None:
    error_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if error_type is None:
        pytest.skip("torch < 1.13 has no OutOfMemoryError")
    assert failures.classify(error_type("oops")).code == ErrorCode.OUT_OF_MEMORY


def test_causes_are_searched() -> None:
    error = chained(RuntimeError("training failed"), MemoryError())
    assert failures.classify(error).code == ErrorCode.OUT_OF_MEMORY


def test_a_dead_worker_is_memory_not_network() -> None:
    # DataLoader reports a killed worker with the queue's broken connection as the cause.
    error = chained(
        RuntimeError("DataLoader worker (pid(s) 4711) exited unexpectedly"),
        ConnectionResetError(104, "Connection reset by peer"),
    )
    assert failures.classify(error).code == ErrorCode.OUT_OF_MEMORY


def test_a_file_error_is_not_network() -> None:
    assert failures.classify(FileNotFoundError(2, "No such file", "/weights/x.pth")) is None


def test_executor_errors_pass_through() -> None:
    original = ExecutorError(ErrorCode.DATASET, "no images")
    assert failures.classify(chained(RuntimeError("x"), original)) is original


def test_unknown_failures_are_left_alone() -> None:
    assert failures.classify(ValueError("some bug")) is None
    error = KeyError("x")
    assert failures.translate(error) is error


def test_mapped_context_converts_known_and_keeps_unknown() -> None:
    with pytest.raises(ExecutorError) as raised, failures.mapped():
        raise RuntimeError("CUDA out of memory")
    assert raised.value.code == ErrorCode.OUT_OF_MEMORY
    with pytest.raises(ZeroDivisionError), failures.mapped():
        raise ZeroDivisionError("bug")
