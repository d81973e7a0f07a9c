"""The GPU preflight, on the CPU: the GPU and its CUDA errors are simulated where torch and
mmcv raise them (device queries, the NMS op, the synchronisation after it, CUDA's init)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mmcv.ops
import pytest
import torch

from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.frameworks.openmmlab import distributed, preflight

H100 = "NVIDIA H100 80GB HBM3"
# What torch reports (c10/cuda/CUDAException) when a kernel cannot run on the GPU.
NO_KERNEL_IMAGE = (
    "CUDA error: no kernel image is available for execution on the device\n"
    "CUDA kernel errors might be asynchronously reported at some other API call, so the "
    "stacktrace below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1."
)
IMAGE_ENV = {
    "YMIR_IMAGE_VARIANT": "cu118",
    "YMIR_DRIVER_MIN": "450.80.02",
    "YMIR_MMCV_WHEEL": "prebuilt",
}


@pytest.fixture
def gpu(monkeypatch, tmp_path):
    """One visible H100 (sm_90) for torch, tensors that stay on the CPU, a driver version file,
    and the image environment of a prebuilt cu118 image; ``gpu.fail(...)`` makes the NMS op
    (or the synchronisation after it) raise what CUDA would."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: H100)
    monkeypatch.setattr(
        torch.cuda, "get_arch_list", lambda: ["sm_50", "sm_60", "sm_70", "sm_80", "sm_90"]
    )
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.version, "cuda", "11.8")
    real_tensor = torch.tensor
    monkeypatch.setattr(
        torch, "tensor", lambda data, device=None, **kwargs: real_tensor(data, **kwargs)
    )
    version_file = tmp_path / "nvidia-version"
    version_file.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
    )
    monkeypatch.setattr(preflight, "DRIVER_VERSION_FILE", version_file)
    monkeypatch.setattr(preflight, "_kernels_checked", set())
    for name, value in IMAGE_ENV.items():
        monkeypatch.setenv(name, value)
    calls = []
    real_nms = mmcv.ops.nms

    def nms(*args, **kwargs):
        calls.append(args)
        return real_nms(*args, **kwargs)

    monkeypatch.setattr(mmcv.ops, "nms", nms)

    def fail(message: str, where: str = "op") -> None:
        def raising(*args, **kwargs):
            calls.append(args)
            raise RuntimeError(message)

        if where == "op":
            monkeypatch.setattr(mmcv.ops, "nms", raising)
        else:
            monkeypatch.setattr(torch.cuda, "synchronize", raising)

    return SimpleNamespace(calls=calls, fail=fail, version_file=version_file)


def preflight_error(index: int = 0) -> ExecutorError:
    with pytest.raises(ExecutorError) as raised:
        preflight.check_kernels(index)
    assert "\n" not in raised.value.message
    return raised.value


def test_the_probe_is_a_real_mmcv_op() -> None:
    # mmcv's NMS keeps the first of two boxes that overlap by 68%
    assert preflight.nms_probe("cpu") == [0]


@pytest.mark.parametrize("where", ["op", "synchronize"])
@pytest.mark.parametrize(
    "message",
    [
        NO_KERNEL_IMAGE,
        "CUDA error: invalid device function",
        "CUDA error: device kernel image is invalid",
    ],
)
def test_no_mmcv_kernels_on_a_prebuilt_image_names_the_build_argument(gpu, message, where):
    gpu.fail(message, where)
    error = preflight_error()
    assert error.code == ErrorCode.CUDA_GPU
    assert error.message.startswith(f"GPU 0 ({H100}, compute capability 9.0) has no mmcv CUDA ")
    assert "(cu118, OpenMMLab's prebuilt mmcv " in error.message
    assert "rebuild it with --build-arg MMCV_WHEEL=build" in error.message
    assert "(it must include 9.0)" in error.message


def test_no_mmcv_kernels_in_a_compiled_image_names_the_architecture(gpu, monkeypatch):
    monkeypatch.setenv("YMIR_MMCV_WHEEL", "build")
    gpu.fail(NO_KERNEL_IMAGE)
    error = preflight_error()
    assert "(cu118, mmcv " in error.message and "compiled for other architectures" in error.message
    assert '--build-arg TORCH_CUDA_ARCH_LIST="9.0"' in error.message


def test_no_mmcv_kernels_outside_an_image_says_how_to_compile(gpu, monkeypatch):
    for name in IMAGE_ENV:
        monkeypatch.delenv(name)
    gpu.fail("nms_impl: implementation for device cuda:0 not found.")  # mmcv without CUDA ops
    error = preflight_error()
    assert "has no mmcv CUDA kernels in this environment" in error.message
    assert "TORCH_CUDA_ARCH_LIST=9.0 FORCE_CUDA=1 pip install --no-build-isolation" in error.message


def test_an_old_driver_at_the_first_kernel_names_the_minimum(gpu):
    gpu.fail("CUDA error: CUDA driver version is insufficient for CUDA runtime version")
    error = preflight_error()
    assert error.code == ErrorCode.CUDA_GPU
    assert error.message == (
        "the NVIDIA driver (535.104.05) is too old for this image (cu118): its CUDA 11.8 needs "
        "driver >= 450.80.02; update the driver, or use an image variant of an older CUDA line "
        "(see the README's variant table)"
    )


def test_other_failures_of_the_probe_are_not_disguised(gpu):
    gpu.fail("CUDA error: an illegal memory access was encountered")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        preflight.check_kernels(0)
    gpu.fail("CUDA out of memory. Tried to allocate 2.00 MiB")
    with pytest.raises(ExecutorError) as raised:
        preflight.check_kernels(0)
    assert raised.value.code == ErrorCode.OUT_OF_MEMORY


def test_kernels_are_checked_once_per_device(gpu):
    preflight.check_kernels(0)
    preflight.check_kernels(0)
    assert len(gpu.calls) == 1
    gpu.fail(NO_KERNEL_IMAGE)
    preflight_error(1)  # another device is checked, and a failure is not remembered as success
    preflight_error(1)
    assert len(gpu.calls) == 3


def test_an_old_driver_at_cuda_init_is_300101_with_the_minimum(gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def init():
        raise RuntimeError(
            "The NVIDIA driver on your system is too old (found version 11040). Please update "
            "your GPU driver by downloading and installing a new version from the URL: "
            "http://www.nvidia.com/Download/index.aspx"
        )

    monkeypatch.setattr(torch.cuda, "init", init)
    monkeypatch.setenv("YMIR_IMAGE_VARIANT", "cu121")
    monkeypatch.setenv("YMIR_DRIVER_MIN", "525.60.13")
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    with pytest.raises(ExecutorError) as raised:
        preflight.check_devices([0])
    assert raised.value.code == ErrorCode.CUDA_GPU
    assert raised.value.message.startswith(
        "the NVIDIA driver (535.104.05) is too old for this image (cu121): its CUDA 12.1 needs "
        "driver >= 525.60.13;"
    )
    gpu.version_file.unlink()  # no kernel module file (e.g. WSL): the version torch saw
    with pytest.raises(ExecutorError) as raised:
        preflight.check_devices([0])
    assert raised.value.message.startswith("the NVIDIA driver (it supports CUDA 11.4) is too old")


def test_a_gpu_the_images_pytorch_does_not_know_needs_another_line(gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_60", "sm_70", "sm_80", "sm_86"])
    with pytest.raises(ExecutorError) as raised:
        preflight.check_devices([0])
    assert raised.value.code == ErrorCode.CUDA_GPU
    assert raised.value.message.startswith(f"GPU 0 ({H100}, compute capability 9.0) is not")
    assert "this image (cu118)" in raised.value.message and "sm_90" in raised.value.message
    preflight.check_devices([])  # the CPU is always fine


def test_every_task_job_runs_the_preflight_before_its_work(gpu):
    """Training, inference and mining of both frameworks start their work through
    distributed.run_task_job: a GPU without mmcv kernels stops them before the job runs."""
    gpu.fail(NO_KERNEL_IMAGE)
    ran = []
    ctx = SimpleNamespace(gpu_ids=[0], work_dir=".", progress=lambda fraction: None)
    with pytest.raises(ExecutorError) as raised:
        distributed.run_task_job(lambda payload, channel: ran.append(payload), {}, ctx, {})
    assert raised.value.code == ErrorCode.CUDA_GPU and "MMCV_WHEEL=build" in raised.value.message
    assert ran == []


def job_that_must_not_run(payload: dict, channel: distributed.Channel) -> None:
    raise AssertionError("the job ran although the preflight failed")


def test_a_torchrun_rank_reports_the_preflight_failure(gpu, tmp_path: Path):
    """Each rank checks its own GPU first and reports the code like any other failure."""
    gpu.fail(NO_KERNEL_IMAGE)
    events = tmp_path / "events.jsonl"
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "entry": f"{__name__}:job_that_must_not_run",
                "payload": {},
                "events": str(events),
                "cuda": True,
            }
        )
    )
    assert distributed._worker(str(job)) == 1
    (event,) = [json.loads(line) for line in events.read_text().splitlines()]
    assert event["kind"] == "error" and event["code"] == int(ErrorCode.CUDA_GPU)
    assert "--build-arg MMCV_WHEEL=build" in event["message"]


def test_gpu_requested_but_absent_is_300102() -> None:
    if torch.cuda.is_available():
        too_many = [torch.cuda.device_count() + 3]
        with pytest.raises(ExecutorError) as raised:
            preflight.check_devices(too_many)
    else:
        with pytest.raises(ExecutorError) as raised:
            preflight.check_devices([0])
    assert raised.value.code == ErrorCode.NO_GPU


def test_more_gpus_than_visible_is_300102(gpu) -> None:
    preflight.check_devices([0])
    with pytest.raises(ExecutorError) as raised:
        preflight.check_devices([0, 1])
    assert raised.value.code == ErrorCode.NO_GPU
    assert "only 1 GPU" in raised.value.message


def test_architecture_support_rules() -> None:
    arch = ["sm_70", "sm_80", "sm_86", "sm_90", "compute_90"]
    assert preflight.arch_supported(80, arch)
    assert preflight.arch_supported(89, arch)  # sm_86 cubins run on sm_89
    assert preflight.arch_supported(100, arch)  # PTX of compute_90 is JIT-compiled
    assert not preflight.arch_supported(61, arch)
    assert not preflight.arch_supported(100, ["sm_80", "sm_90"])
