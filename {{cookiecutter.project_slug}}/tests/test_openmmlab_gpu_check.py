"""scripts/gpu_check.py (make gpu-check) without a GPU: its arguments, the machine's facts, the
host mode's decisions, the summary, and the whole command with --plan and fake tools."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from {{ cookiecutter.package_name }}.devkit.chain import ChainReport, ChainStep

PROJECT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT / "scripts" / "gpu_check.py"
H100 = "NVIDIA H100 80GB HBM3"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_check = load_script()
GPU = gpu_check.Gpu(0, H100, "580.159.04", "9.0")
# What the probe reports for a PyTorch with CUDA on an H100 whose mmcv fits it.
GOOD_FACTS = {
    "python": "3.12.3",
    "torch": "2.11.0+cu130",
    "cuda": "13.0",
    "available": True,
    "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
    "capability": "9.0",
    "mmcv": gpu_check.MMCV,
    "kernels": "ok",
}
GOOD_INSTALLED = {"setuptools": "80.9.0", **gpu_check.PINNED}


def test_arguments_and_their_errors(capsys, tmp_path: Path) -> None:
    args = gpu_check.parse_args([])
    if gpu_check.CUDA_VARIANTS:
        assert (args.mode, args.variant, args.gpu) == ("auto", gpu_check.CUDA_VARIANTS[0], 0)
        assert args.image == f"ymir-gpu-check:{args.variant}" and args.wheelhouse is None
    else:  # cuda_variants=cpu: nothing to build, the host stack is what gets checked
        assert (args.mode, args.variant, args.gpu) == ("host", None, 0)
        with pytest.raises(SystemExit):
            gpu_check.parse_args(["--mode", "container"])
        assert "builds no CUDA image" in capsys.readouterr().err
    args = gpu_check.parse_args(["--gpu", "3", "--build-arg", "MMCV_WHEEL=build", "--plan"])
    assert args.gpu == 3 and args.build_arg == ["MMCV_WHEEL=build"] and args.plan
    for bad, message in [
        (["--variant", "cu999"], "--variant must be one of"),
        (["--gpu", "-1"], "--gpu must be a GPU index"),
        (["--gpu", "first"], "invalid int value"),
        (["--wheelhouse", str(tmp_path / "none")], "is not a folder"),
        (["--build-arg", "MMCV_WHEEL"], "--build-arg takes KEY=VALUE"),
        (["--mode", "cloud"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as raised:
            gpu_check.parse_args(bad)
        assert raised.value.code == 2
        assert message in capsys.readouterr().err, bad


def test_nvidia_smi_with_and_without_compute_capability(monkeypatch) -> None:
    assert gpu_check.parse_smi(0, f"{H100}, 580.159.04, 9.0\n") == GPU
    assert gpu_check.parse_smi(1, "Tesla T4, 470.82.01\n") == gpu_check.Gpu(
        1, "Tesla T4", "470.82.01", ""
    )
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: "/usr/bin/" + name)
    calls = []

    def old_driver(command, **kwargs):  # before 510, nvidia-smi does not know compute_cap
        calls.append(command)
        if "compute_cap" in command[1]:
            return SimpleNamespace(returncode=2, stdout="", stderr="Field compute_cap invalid")
        return SimpleNamespace(returncode=0, stdout="Tesla T4, 470.82.01\n", stderr="")

    assert gpu_check.query_gpu(0, run=old_driver).driver == "470.82.01" and len(calls) == 2
    missing = SimpleNamespace(returncode=6, stdout="No devices were found", stderr="")
    with pytest.raises(gpu_check.Refusal, match="cannot show GPU 4: No devices were found"):
        gpu_check.query_gpu(4, run=lambda command, **kwargs: missing)
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: None)
    with pytest.raises(gpu_check.Refusal, match="no nvidia-smi"):
        gpu_check.query_gpu(0)


@pytest.mark.parametrize(
    ("requested", "info", "toolkit", "mode"),
    [
        ("auto", " Runtimes: io.containerd.runc.v2 nvidia runc\n", False, "container"),
        ("auto", " Runtimes: io.containerd.runc.v2 runc\n", True, "container"),
        ("auto", " Runtimes: io.containerd.runc.v2 runc\n", False, "host"),
        ("auto", None, True, "host"),
        ("host", " Runtimes: nvidia runc\n", True, "host"),
        ("container", None, False, "refused"),
        ("container", " Runtimes: runc\n", False, "refused"),
    ],
)
def test_mode_follows_docker_and_the_nvidia_toolkit(requested, info, toolkit, mode) -> None:
    if mode == "refused":
        with pytest.raises(gpu_check.Refusal, match="--mode container, but no"):
            gpu_check.choose_mode(requested, info, toolkit)
    else:
        assert gpu_check.choose_mode(requested, info, toolkit)[0] == mode


def test_host_plan_installs_nothing_when_the_stack_fits() -> None:
    plan = gpu_check.host_plan(GOOD_FACTS, GPU, GOOD_INSTALLED, has_ninja=True)
    assert plan == gpu_check.Plan()


@pytest.mark.parametrize(
    ("facts", "installed", "compile_for", "first", "pinned", "reason"),
    [
        # only PyTorch: everything, mmcv compiled for the GPU
        (
            {"mmcv": None, "kernels": "ModuleNotFoundError: No module named 'mmcv'"},
            {"setuptools": "82.0.1", **dict.fromkeys(gpu_check.PINNED)},
            "9.0",
            [gpu_check.SETUPTOOLS, "ninja"],
            sorted(f"{name}=={version}" for name, version in gpu_check.PINNED.items()),
            "no mmcv: compile mmcv",
        ),
        # OpenMMLab's prebuilt wheel on a Hopper GPU
        (
            {"kernels": "RuntimeError: CUDA error: no kernel image is available"},
            {},
            "9.0",
            ["ninja"],
            [],
            "fails on this GPU (RuntimeError: CUDA error: no kernel image is available)",
        ),
        # another mmcv release
        ({"mmcv": "2.2.0"}, {}, "9.0", ["ninja"], [], "mmcv 2.2.0 installed: compile"),
        # the wrong mmengine only
        ({}, {"mmengine": "0.10.4"}, "", [], [f"mmengine=={gpu_check.PINNED['mmengine']}"], ""),
    ],
)
def test_host_plan_decisions(facts, installed, compile_for, first, pinned, reason) -> None:
    installed = {
        name: version
        for name, version in {**GOOD_INSTALLED, **installed}.items()
        if version is not None  # None: not installed
    }
    plan = gpu_check.host_plan({**GOOD_FACTS, **facts}, GPU, installed, has_ninja=False)
    assert plan.compile_mmcv == compile_for
    assert plan.install_first == first
    assert sorted(plan.install_pinned) == pinned
    assert any(reason in line for line in plan.reasons), plan.reasons


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        ({"torch": None}, "no PyTorch in this Python"),
        ({"cuda": None}, "PyTorch 2.11.0+cu130 is a CPU build"),
        ({"available": False}, "sees no GPU 0"),
        ({"arch_list": ["sm_70", "sm_80", "sm_86"]}, "has no code for sm_90"),
    ],
)
def test_host_plan_refuses_a_pytorch_that_cannot_run_on_the_gpu(facts, message) -> None:
    facts = {key: value for key, value in {**GOOD_FACTS, **facts}.items() if value is not None}
    with pytest.raises(gpu_check.Refusal, match=re.escape(message)):
        gpu_check.host_plan(facts, GPU, GOOD_INSTALLED, has_ninja=True)


def test_missing_requirements() -> None:
    installed = {"numpy": "2.5.2", "pyyaml": "6.0", "opencv-python-headless": "4.11.0.86"}
    requirements = [
        "PyYAML>=5.1",
        "numpy>=1.17",
        "opencv-python>=3",  # satisfied by the headless build: the same cv2
        "addict",
        "yapf",
        "termcolor",
        "shapely",
        "pytest ; extra == 'tests'",
        'coverage; extra == "tests"',
        "tomli>=2.0.1; python_version < '3.11'",
        "Shapely",
    ]
    assert gpu_check.missing_requirements(requirements, installed) == [
        "Shapely",
        "addict",
        "shapely",
        "termcolor",
        "tomli>=2.0.1",
        "yapf",
    ]
    # no OpenCV at all: the headless build, which needs no X11 libraries
    assert gpu_check.missing_requirements(["opencv-python"], {}) == ["opencv-python-headless"]


def test_project_requirements_are_the_pyprojects() -> None:
    requirements = gpu_check.project_requirements(PROJECT / "pyproject.toml")
    assert "PyYAML>=5.1" in requirements and gpu_check.SETUPTOOLS in requirements
    for name, version in gpu_check.PINNED.items():
        assert f"{name}=={version}" in requirements
    assert not any("#" in requirement for requirement in requirements)


def test_the_probe_runs_with_this_pytorch() -> None:
    facts = gpu_check.probe([sys.executable], 0)
    import mmcv
    import torch

    assert facts["torch"] == torch.__version__ and facts["mmcv"] == mmcv.__version__
    if not torch.cuda.is_available():
        assert facts["available"] is False and facts["kernels"] != "ok"


def test_chain_lines_read_the_devkits_report() -> None:
    report = ChainReport(base_dir=Path("w"), protocol="1.1.0", object_type=2)
    report.steps = [
        ChainStep("training", ok=True, returncode=0, duration=31.5),
        ChainStep("infer", ok=False, returncode=1, duration=2.0, note="300101"),
    ]
    passed, steps = gpu_check.chain_lines(report.format(details=False))
    assert not passed
    assert steps == [report.steps[0].summary(), report.steps[1].summary()]
    report.steps.pop()
    assert gpu_check.chain_lines(report.format())[0]


def rates(model: str, executor: float, per_image: float, bare: float) -> dict:
    return {"model": model, "executor": executor, "per-image": per_image, "bare": bare}


def test_summary_is_one_screen_with_the_ratios_and_goals() -> None:
    facts = {**GOOD_FACTS, "mmcv_made": "compiled here for 9.0", "mmcv_archs": "sm_90"}
    benchmarks = {
        "fp32": {"rates": [rates("rtmdet_tiny", 190.0, 80.0, 200.0)]},
        "fp16": {"rates": [rates("retinanet_r18", 150.0, 50.0, 160.0)]},
    }
    text = gpu_check.summary("host", GPU, facts, (True, ["PASS training | 31.5 s"]), benchmarks)
    lines = text.splitlines()
    assert lines[0] == "== gpu-check on the host"
    assert lines[1] == f"GPU 0         {H100}, compute capability 9.0, driver 580.159.04"
    assert lines[2] == "PyTorch     2.11.0+cu130 (CUDA 13.0), Python 3.12.3"
    assert lines[3] == (
        f"mmcv        {gpu_check.MMCV}, compiled here for 9.0; architectures: sm_90; "
        "kernels for this GPU: yes"
    )
    assert lines[4:6] == ["chain       PASSED", "  PASS training | 31.5 s"]
    assert lines[7].split() == ["fp32", "rtmdet_tiny", "190.0", "80.0", "200.0", "2.38x", "95%"]
    assert lines[8].split() == ["fp16", "retinanet_r18", "150.0", "50.0", "160.0", "3.00x", "94%"]
    assert lines[9] == "goals       >= 90% of bare, retinanet_r18 >= 2.5x: met"
    assert len(lines) == 10

    benchmarks["fp16"]["rates"] = [rates("retinanet_r18", 100.0, 50.0, 160.0)]
    failed = {**facts, "kernels": "RuntimeError: no kernel image"}
    text = gpu_check.summary("container", GPU, failed, (False, []), benchmarks, "cu118")
    assert text.splitlines()[0] == "== gpu-check on the container (cu118)"
    assert "kernels for this GPU: NO (RuntimeError: no kernel image)" in text
    assert "chain       FAILED" in text
    assert text.endswith("missed by retinanet_r18 (fp16) 62% of bare, retinanet_r18 (fp16) 2.00x")
    assert gpu_check.summary("host", GPU, facts, None, {}).endswith(
        "chain       not run\ninference   not measured"
    )


@pytest.fixture
def fake_tools(tmp_path: Path) -> dict:
    """nvidia-smi for an H100 and a docker with the NVIDIA runtime, first on PATH."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, text in {
        "nvidia-smi": f'#!/bin/sh\necho "{H100}, 580.159.04, 9.0"\n',
        "docker": '#!/bin/sh\n[ "$1" = info ] && echo " Runtimes: nvidia runc" && exit 0\nexit 1\n',
    }.items():
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    return dict(os.environ, PATH=f"{tools}{os.pathsep}{os.environ['PATH']}")


def run_script(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plan_of_the_container_mode(fake_tools: dict, tmp_path: Path) -> None:
    if not gpu_check.CUDA_VARIANTS:
        pytest.skip("this project builds no CUDA image (cuda_variants=cpu)")
    variant = gpu_check.CUDA_VARIANTS[0]
    done = run_script(
        fake_tools, "--plan", "--variant", variant, "--image", "me/exec:gpu", "--gpu", "1",
        "--build-arg", "MMCV_WHEEL=build", "--work", str(tmp_path / "work"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"-- GPU 1: {H100} (compute capability 9.0, driver 580.159.04)")
    assert "mode container" in lines[0]
    assert lines[1] == (
        f"-- build {variant}: docker build -f docker/{variant}.Dockerfile -t me/exec:gpu "
        "--build-arg MMCV_WHEEL=build ."
    )
    chain = lines[2]
    assert f"-m {gpu_check.PACKAGE}.devkit chain" in chain and "--gpus 1" in chain
    assert "--image me/exec:gpu --shm-size 8g" in chain
    if (PROJECT / gpu_check.BENCHMARK).exists():
        assert lines[3].startswith("-- the inference benchmark (fp32): docker run --rm")
        assert "--gpus '\"device=1\"'" in lines[3] and "--device cuda" in lines[3]
        assert "--fp16" in lines[4]
    assert not (tmp_path / "work").exists()  # a plan runs nothing


def test_host_mode_refuses_a_cpu_pytorch(fake_tools: dict, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this PyTorch has CUDA")
    done = run_script(fake_tools, "--plan", "--mode", "host", "--work", str(tmp_path))
    assert done.returncode == 2
    assert "mode host: asked for" in done.stdout
    assert done.stderr.strip().startswith("error: ")
    assert "is a CPU build" in done.stderr or "sees no GPU" in done.stderr


def test_no_gpu_no_check(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # no nvidia-smi
    done = run_script(env, "--plan")
    assert done.returncode == 2 and "no nvidia-smi" in done.stderr
