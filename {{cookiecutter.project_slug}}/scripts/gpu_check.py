"""Prove this executor on a GPU host with one command: ``make gpu-check`` runs this script.

On any machine with an NVIDIA GPU (``--gpu``, default 0):

- **container** (Docker with the NVIDIA container toolkit): build the image of ``--variant``
  and run the devkit chain in it with the GPU as YMIR passes it (``docker run --gpus
  device=N``, ``gpu_id: '0'``), verified; then the inference benchmark inside the image;
- **host** (no Docker): the same chain on this interpreter's own PyTorch on ``cuda:N``. What
  is missing is installed into its environment: the OpenMMLab stack at the project's pins, and
  mmcv compiled for this GPU's architecture (``docker/build-mmcv.sh``) when the installed one
  has no kernels for it, so a Python environment with only PyTorch is enough. ``--wheelhouse``
  installs offline from a folder (the mmcv source archive, the OpenMMLab wheels and the small
  dependencies; see the README's "Checking a GPU host");

and then it prints one screen: the card, driver, CUDA, PyTorch, mmcv and its kernels, the
chain's steps, and the images per second of the executor's inference against the per-image
loop and the bare forward pass, with and without fp16. ``--plan`` shows the decisions and
commands without running them. Only the standard library is used: in container mode this
interpreter needs no PyTorch, only what the devkit needs (PyYAML, numpy, Pillow, pycocotools).
Exit status: 0 when the chain passed (and the benchmark ran), 1 when a step failed, 2 for bad
usage or a machine that cannot run the check.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package_name }}"
VARIANTS = {{ cookiecutter.__variants.split(',')|tojson }}
CUDA_VARIANTS = [variant for variant in VARIANTS if variant != "cpu"]
MMCV = "{{ cookiecutter._openmmlab_stack.mmcv }}"
FRAMEWORK = "{{ 'mmdet' if cookiecutter.__framework == 'mmdetection' else 'mmsegmentation' }}"
# What the host stack is pinned to: the versions the images install (the template's matrix).
PINNED = {
    "mmengine": "{{ cookiecutter._openmmlab_stack.mmengine }}",
    FRAMEWORK: "{{ cookiecutter._openmmlab_stack.mmdet if cookiecutter.__framework == 'mmdetection' else cookiecutter._openmmlab_stack.mmsegmentation }}",
}
SETUPTOOLS = "setuptools{{ cookiecutter._openmmlab_stack.setuptools }}"
# The chain trains briefly, at the template's image size: a check, not a training.
QUICK_PARAMS = {{ (['epochs=2'] if cookiecutter.__framework == 'mmdetection' else ['max_iters=40', 'val_interval=20'])|tojson }}
# The inference benchmark (MMDetection only).
BENCHMARK = Path("benchmarks", "mmdetection_inference.py")
# The settings benchmarks/README.md documents for a GPU (every model of the target).
BENCHMARK_ARGS = "--images 256"
# The goals of the inference benchmark on a GPU (benchmarks/README.md).
GOAL_OF_BARE = 0.9
GOAL_RETINANET = ("retinanet_r18", 2.5)
SHM_SIZE = "8g"
# Run by the interpreter (or in the image) that computes: the facts as one JSON line. The mmcv
# probe is the executor's own preflight (frameworks/openmmlab/preflight.py).
PROBE = """
import json, sys
index = int(sys.argv[1])
facts = {"python": sys.version.split()[0]}
try:
    import torch
except Exception as error:
    facts["torch_error"] = str(error)
    print(json.dumps(facts))
    raise SystemExit(0)
facts["torch"] = torch.__version__
facts["cuda"] = torch.version.cuda
facts["available"] = torch.cuda.is_available()
facts["arch_list"] = torch.cuda.get_arch_list() if facts["available"] else []
if facts["available"] and index < torch.cuda.device_count():
    major, minor = torch.cuda.get_device_capability(index)
    facts["capability"] = f"{major}.{minor}"
try:
    import mmcv
    facts["mmcv"] = mmcv.__version__
    import mmcv._ext
    facts["mmcv_ext"] = mmcv._ext.__file__
    from PACKAGE.frameworks.openmmlab import preflight
    preflight.nms_probe(f"cuda:{index}")
    facts["kernels"] = "ok"
except Exception as error:
    facts["kernels"] = " ".join(f"{type(error).__name__}: {error}".split())[:300]
print(json.dumps(facts))
""".replace("PACKAGE", PACKAGE)


class Refusal(Exception):
    """This machine cannot run the check as asked; the message says why and what to do."""


@dataclass
class Gpu:
    index: int
    name: str
    driver: str
    capability: str  # "9.0"; '' where nvidia-smi cannot say


@dataclass
class Plan:
    """What the host mode installs before the chain, and why."""

    install_first: list[str] = field(default_factory=list)  # e.g. setuptools<82, ninja
    compile_mmcv: str = ""  # the architecture to compile mmcv for; '' keeps the installed one
    install_pinned: list[str] = field(default_factory=list)  # mmengine==..., installed --no-deps
    reasons: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/gpu_check.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--mode", choices=("auto", "container", "host"), default="auto")
    parser.add_argument(
        "--variant",
        default=CUDA_VARIANTS[0] if CUDA_VARIANTS else None,
        help=f"the image to check in container mode, one of {', '.join(CUDA_VARIANTS) or '(none)'}",
    )
    parser.add_argument("--image", help="the tag to build and run (make passes the variant's)")
    parser.add_argument("--gpu", type=int, default=0, help="the host GPU to use (default 0)")
    parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to docker build, e.g. MMCV_WHEEL=build (repeatable)",
    )
    parser.add_argument("--no-build", action="store_true", help="run the image as it is")
    parser.add_argument("--wheelhouse", type=Path, help="host mode: install offline from here")
    parser.add_argument("--work", type=Path, default=Path(".devkit", "gpu-check"))
    parser.add_argument(
        "--benchmark-args",
        default=BENCHMARK_ARGS,
        help=f"options of {BENCHMARK} (default: {BENCHMARK_ARGS!r})",
    )
    parser.add_argument("--no-benchmark", action="store_true")
    parser.add_argument("--plan", action="store_true", help="show what would run, run nothing")
    args = parser.parse_args(argv)
    if args.variant == "cpu" and args.mode != "host":
        parser.error("--variant cpu has no GPU: pick a CUDA variant")
    if args.variant is None:
        # A CPU-only project (cuda_variants=cpu) has no image to check on a GPU.
        if args.mode == "container":
            parser.error("this project builds no CUDA image (cuda_variants=cpu): use --mode host")
        args.mode = "host"
    elif args.variant not in VARIANTS:
        parser.error(f"--variant must be one of {', '.join(VARIANTS)}, got {args.variant!r}")
    if args.gpu < 0:
        parser.error(f"--gpu must be a GPU index (0, 1, ...), got {args.gpu}")
    if args.wheelhouse is not None and not args.wheelhouse.is_dir():
        parser.error(f"--wheelhouse {args.wheelhouse} is not a folder")
    for item in args.build_arg:
        if "=" not in item:
            parser.error(f"--build-arg takes KEY=VALUE, got {item!r}")
    args.image = args.image or f"ymir-gpu-check:{args.variant or 'host'}"
    return args


# ------------------------------------------------------------------------------------------------
# the machine


def query_gpu(index: int, run: Callable = subprocess.run) -> Gpu:
    """The GPU as nvidia-smi sees it; Refusal when there is no NVIDIA driver or no such GPU."""
    if shutil.which("nvidia-smi") is None:
        raise Refusal("no nvidia-smi: this machine has no NVIDIA driver (or it is not on PATH)")
    fields = "name,driver_version,compute_cap"
    for query in (fields, fields.rsplit(",", 1)[0]):  # drivers before 510 lack compute_cap
        done = run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader", "-i", str(index)],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0:
            return parse_smi(index, done.stdout)
    message = (done.stdout + done.stderr).strip().splitlines()
    raise Refusal(f"nvidia-smi cannot show GPU {index}: {message[-1] if message else 'no output'}")


def parse_smi(index: int, text: str) -> Gpu:
    """One line of ``nvidia-smi --query-gpu=name,driver_version[,compute_cap] --format=csv``."""
    line = text.strip().splitlines()[0]
    parts = [part.strip() for part in line.split(",")]
    return Gpu(index, parts[0], parts[1], parts[2] if len(parts) > 2 else "")


def choose_mode(requested: str, docker_info: str | None, toolkit: bool) -> tuple[str, str]:
    """(mode, why): ``docker_info`` is ``docker info``'s output (None: no working docker),
    ``toolkit``: the NVIDIA container toolkit is installed (``--gpus`` works with it)."""
    nvidia = toolkit or bool(re.search(r"^\s*Runtimes:.*\bnvidia\b", docker_info or "", re.M))
    if requested == "host":
        return "host", "asked for"
    if docker_info is not None and nvidia:
        return "container", "Docker with the NVIDIA container toolkit"
    if requested == "container":
        what = "no working docker" if docker_info is None else "no NVIDIA container toolkit"
        raise Refusal(f"--mode container, but {what}: install it, or use --mode host")
    if docker_info is None:
        return "host", "no working docker"
    return "host", "Docker without the NVIDIA container toolkit"


def docker_state(run: Callable = subprocess.run) -> tuple[str | None, bool]:
    """(``docker info`` output or None, whether the NVIDIA container toolkit is installed)."""
    info = None
    if shutil.which("docker"):
        done = run(["docker", "info"], capture_output=True, text=True)
        info = done.stdout if done.returncode == 0 else None
    tools = ("nvidia-container-toolkit", "nvidia-container-runtime-hook", "nvidia-ctk")
    return info, any(shutil.which(tool) for tool in tools)


def probe(command: list[str], index: int, run: Callable = subprocess.run) -> dict:
    """The facts :data:`PROBE` prints, run by ``command`` (an interpreter, or docker run)."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    )
    done = run([*command, "-c", PROBE, str(index)], capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise Refusal(
            f"{command[0]} could not run the probe: {(done.stderr or done.stdout)[-500:]}"
        )
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------------
# host mode: what to install


def installed_versions() -> dict[str, str]:
    """Installed distributions of this interpreter, by normalised name."""
    importlib.invalidate_caches()
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[normalise(name)] = dist.version
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def host_plan(facts: dict, gpu: Gpu, installed: dict[str, str], has_ninja: bool) -> Plan:
    """What to install for the chain on this interpreter; Refusal where it cannot work."""
    if "torch" not in facts:
        raise Refusal(
            f"no PyTorch in this Python ({facts.get('torch_error', 'not installed')}): install "
            "the CUDA build of PyTorch for this machine first (https://pytorch.org)"
        )
    if not facts.get("cuda"):
        raise Refusal(f"PyTorch {facts['torch']} is a CPU build: install its CUDA build")
    if not facts.get("available") or "capability" not in facts:
        raise Refusal(
            f"PyTorch {facts['torch']} (CUDA {facts['cuda']}) sees no GPU {gpu.index}: is the "
            "driver new enough for its CUDA?"
        )
    capability = facts["capability"]
    sm = capability.replace(".", "")
    if not arch_supported(int(sm), facts.get("arch_list") or []):
        raise Refusal(
            f"PyTorch {facts['torch']} has no code for sm_{sm} (it has "
            f"{' '.join(facts['arch_list'])}): install a PyTorch build for this GPU"
        )
    plan = Plan()
    setuptools = installed.get("setuptools")
    if setuptools is None or version_tuple(setuptools) >= (82,):
        plan.install_first.append(SETUPTOOLS)
        plan.reasons.append(
            f"setuptools {setuptools or 'missing'}: mmcv's build and mmengine need "
            "pkg_resources, which setuptools 82 removed"
        )
    if facts.get("mmcv") != MMCV:
        why = f"mmcv {facts['mmcv']} installed" if facts.get("mmcv") else "no mmcv"
        plan.compile_mmcv = capability
        plan.reasons.append(f"{why}: compile mmcv {MMCV} for {capability}")
    elif facts.get("kernels") != "ok":
        plan.compile_mmcv = capability
        plan.reasons.append(
            f"mmcv {MMCV} fails on this GPU ({facts.get('kernels')}): compile it for {capability}"
        )
    if plan.compile_mmcv and not has_ninja:
        plan.install_first.append("ninja")
        plan.reasons.append("no ninja: without it the compile runs one job at a time")
    for name, version in PINNED.items():
        if installed.get(name) != version:
            plan.install_pinned.append(f"{name}=={version}")
            plan.reasons.append(f"{name} {installed.get(name) or 'missing'}: install {version}")
    return plan


def arch_supported(capability: int, arch_list: Sequence[str]) -> bool:
    """As the executor's preflight decides it: a cubin of the same major architecture, not
    newer, or PTX not newer than the GPU."""
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


CV2_DISTRIBUTIONS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)


def missing_requirements(requirements: Sequence[str], installed: dict[str, str]) -> list[str]:
    """The requirements (``name[extra] spec ; marker``) whose distribution is not installed.

    Extras-only requirements are skipped, version specifiers are not compared (the pins that
    matter are installed explicitly), and any OpenCV build satisfies ``opencv-python`` (they
    are the same cv2 module); with none, the headless build is installed, which needs no X11.
    """
    missing = []
    for requirement in requirements:
        text, _, marker = requirement.partition(";")
        if "extra ==" in marker.replace('"', "").replace("'", "").replace("extra==", "extra =="):
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text)
        if not match:
            continue
        name = normalise(match.group(1))
        if name in CV2_DISTRIBUTIONS:
            if not any(cv2 in installed for cv2 in CV2_DISTRIBUTIONS):
                missing.append("opencv-python-headless")
            continue
        if name not in installed:
            missing.append(text.strip())
    return sorted(set(missing))


def project_requirements(pyproject: Path) -> list[str]:
    """The ``dependencies`` of pyproject.toml (read without tomllib, for Python 3.8 to 3.10)."""
    text = pyproject.read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S)
    if not block:
        return []
    lines = [line.split("#", 1)[0] for line in block.group(1).splitlines()]
    return re.findall(r'"([^"]+)"', "\n".join(lines))


def stack_requirements(installed: dict[str, str]) -> list[str]:
    """What the project, mmcv, mmengine and the framework require, as installed now."""
    requirements = project_requirements(ROOT / "pyproject.toml")
    for name in ["mmcv", *PINNED]:
        if name in installed:
            requirements += importlib.metadata.requires(name) or []
    return requirements


# ------------------------------------------------------------------------------------------------
# running


class Runner:
    """Runs (or, with ``--plan``, only shows) the commands; their output goes to a log file."""

    def __init__(self, work: Path, plan_only: bool) -> None:
        self.work = work
        self.plan_only = plan_only
        self.log = work / "gpu-check.log"

    def __call__(self, command: list[str], what: str, env: dict | None = None) -> tuple[int, str]:
        print(f"-- {what}: {shlex.join(command)}", flush=True)
        if self.plan_only:
            return 0, ""
        self.work.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"$ {shlex.join(command)}\n{done.stdout}\n")
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-15:])
            print(f"   failed (exit {done.returncode}); the end of its output:\n{tail}")
        return done.returncode, done.stdout


def pip_command(wheelhouse: Path | None, constraints: Path, *args: str) -> list[str]:
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    if wheelhouse is not None:
        command += ["--no-index", "--find-links", str(wheelhouse)]
    return [*command, "-c", str(constraints), *args]


def host_environment(gpu: Gpu) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu.index))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def prepare_host(args: argparse.Namespace, gpu: Gpu, runner: Runner) -> dict:
    """Install what the chain needs into this interpreter's environment; the facts after."""
    facts = probe([sys.executable], gpu.index)
    installed = installed_versions()
    has_ninja = "ninja" in installed or shutil.which("ninja") is not None
    plan = host_plan(facts, gpu, installed, has_ninja)
    for reason in plan.reasons or ["the installed stack fits this GPU: nothing to install"]:
        print(f"   {reason}")
    # pip must never replace the PyTorch (nor the numpy it was built against) of this machine
    constraints = args.work / "constraints.txt"
    pins = [f"torch=={facts['torch']}"]
    if "numpy" in installed:
        pins.append(f"numpy=={installed['numpy']}")
    if not args.plan:
        args.work.mkdir(parents=True, exist_ok=True)
        constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")

    def pip(what: str, *requirements: str) -> None:
        command = pip_command(args.wheelhouse, constraints, *requirements)
        if runner(command, what)[0] != 0:
            raise Refusal(f"{what} failed (see {runner.log})")

    if plan.install_first:
        pip("build tools", *plan.install_first)
    if plan.compile_mmcv:
        wheel = compile_mmcv(args, runner, facts["torch"], plan.compile_mmcv)
        pip("the compiled mmcv", "--no-deps", "--force-reinstall", wheel)
    if plan.install_pinned:
        pip("the OpenMMLab stack", "--no-deps", *plan.install_pinned)
    if not args.plan:
        installed = installed_versions()
    missing = missing_requirements(stack_requirements(installed), installed)
    if missing:
        pip("missing dependencies", *missing)
    if args.plan:
        return facts
    facts = probe([sys.executable], gpu.index)
    if facts.get("kernels") != "ok":
        raise Refusal(f"mmcv still fails on GPU {gpu.index}: {facts.get('kernels')}")
    facts["mmcv_made"] = f"compiled here for {plan.compile_mmcv}" if plan.compile_mmcv else ""
    return facts


def compile_mmcv(args: argparse.Namespace, runner: Runner, torch: str, capability: str) -> str:
    """The mmcv wheel for this PyTorch and architecture: compiled by docker/build-mmcv.sh, or
    the one an earlier check compiled."""
    wheels = args.work / f"mmcv-{MMCV}-torch{torch}-sm{capability.replace('.', '')}"
    built = sorted(wheels.glob(f"mmcv-{MMCV}-*.whl"))
    if built:
        print(f"   reusing {built[0]}")
        return str(built[0])
    command = ["bash", str(ROOT / "docker" / "build-mmcv.sh"), str(wheels), f"mmcv=={MMCV}"]
    if args.wheelhouse is not None:
        command += ["--no-index", "--find-links", str(args.wheelhouse)]
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=capability, PYTHON=sys.executable)
    if runner(command, f"compile mmcv for {capability}", env)[0] != 0:
        raise Refusal(f"compiling mmcv failed (see {runner.log})")
    built = sorted(wheels.glob(f"mmcv-{MMCV}-*.whl"))
    if args.plan:
        return str(wheels / f"mmcv-{MMCV}-<compiled>.whl")
    if not built:
        raise Refusal(f"the mmcv compile left no wheel in {wheels}")
    return str(built[0])


def container_commands(args: argparse.Namespace, gpu: Gpu) -> dict[str, list[str]]:
    """The docker commands of container mode: build, probe, benchmark."""
    build = ["docker", "build", "-f", f"docker/{args.variant}.Dockerfile", "-t", args.image]
    for item in args.build_arg:
        build += ["--build-arg", item]
    run = ["docker", "run", "--rm", "--network", "none", "--gpus", f'"device={gpu.index}"']
    return {"build": [*build, "."], "run": run}


def mmcv_archs(ext_file: str | None) -> str:
    """The architectures mmcv's compiled ops carry (cuobjdump, where installed), or ''."""
    if not ext_file or shutil.which("cuobjdump") is None:
        return ""
    found = set()
    for option in ("--list-elf", "--list-ptx"):
        done = subprocess.run(["cuobjdump", option, ext_file], capture_output=True, text=True)
        found |= set(re.findall(r"\b(sm_\d+|compute_\d+)\b", done.stdout))
    return " ".join(sorted(found, key=lambda arch: (int(arch.split("_")[1]), arch)))


# ------------------------------------------------------------------------------------------------
# the summary


def chain_lines(output: str) -> tuple[bool, list[str]]:
    """(passed, the step lines) of the devkit chain's report."""
    steps = [line.strip() for line in output.splitlines() if re.match(r"\s+(PASS|FAIL) ", line)]
    return "chain PASSED" in output, steps


def summary(
    mode: str,
    gpu: Gpu,
    facts: dict,
    chain: tuple[bool, list[str]] | None,
    benchmarks: dict[str, dict],
    variant: str = "",
) -> str:
    """The one screen ``make gpu-check`` ends with."""
    where = f"container ({variant})" if mode == "container" else "host"
    capability = gpu.capability or facts.get("capability", "?")
    lines = [
        f"== gpu-check on the {where}",
        f"GPU {gpu.index:<9} {gpu.name}, compute capability {capability}, driver {gpu.driver}",
        f"PyTorch     {facts.get('torch', '?')} (CUDA {facts.get('cuda', '?')}), "
        f"Python {facts.get('python', '?')}",
    ]
    kernels = "yes" if facts.get("kernels") == "ok" else f"NO ({facts.get('kernels', '?')})"
    made = facts.get("mmcv_made") or "installed"
    archs = facts.get("mmcv_archs") or "unknown (no cuobjdump)"
    lines.append(
        f"mmcv        {facts.get('mmcv', 'missing')}, {made}; architectures: {archs}; "
        f"kernels for this GPU: {kernels}"
    )
    if chain is None:
        lines.append("chain       not run")
    else:
        passed, steps = chain
        lines.append(f"chain       {'PASSED' if passed else 'FAILED'}")
        lines += [f"  {step}" for step in steps]
    if not benchmarks:
        lines.append("inference   not measured")
        return "\n".join(lines)
    lines.append(
        "inference   img/s: executor / per-image / bare forward; executor vs per-image, vs bare"
    )
    verdicts = []
    for label, result in benchmarks.items():
        for row in result["rates"]:
            executor, per_image, bare = row["executor"], row["per-image"], row["bare"]
            lines.append(
                f"  {label:<5} {row['model']:<17}{executor:>9.1f}{per_image:>10.1f}{bare:>9.1f}"
                f"{executor / per_image:>8.2f}x{100 * executor / bare:>6.0f}%"
            )
            if executor < GOAL_OF_BARE * bare:
                verdicts.append(f"{row['model']} ({label}) {100 * executor / bare:.0f}% of bare")
        model, factor = GOAL_RETINANET
        for row in result["rates"]:
            if row["model"] == model and row["executor"] < factor * row["per-image"]:
                verdicts.append(f"{model} ({label}) {row['executor'] / row['per-image']:.2f}x")
    goals = f">= {100 * GOAL_OF_BARE:.0f}% of bare, {GOAL_RETINANET[0]} >= {GOAL_RETINANET[1]}x"
    lines.append(
        f"goals       {goals}: " + ("met" if not verdicts else "missed by " + ", ".join(verdicts))
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return check(args)
    except Refusal as refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2


def check(args: argparse.Namespace) -> int:
    gpu = query_gpu(args.gpu)
    mode, why = choose_mode(args.mode, *docker_state())
    print(
        f"-- GPU {gpu.index}: {gpu.name} (compute capability {gpu.capability or '?'}, "
        f"driver {gpu.driver}); mode {mode}: {why}"
    )
    args.work = args.work.absolute()
    runner = Runner(args.work, args.plan)
    chain = [sys.executable, "-m", f"{PACKAGE}.devkit", "chain", "--quiet"]
    chain += ["--work", str(args.work / "chain"), "--gpus", str(gpu.index)]
    for param in QUICK_PARAMS:
        chain += ["--param", param]
    env = host_environment(gpu)
    if mode == "container":
        require_devkit_modules()
        docker = container_commands(args, gpu)
        if not args.no_build:
            build_env = dict(os.environ, DOCKER_BUILDKIT="1")
            if runner(docker["build"], f"build {args.variant}", build_env)[0] != 0:
                raise Refusal(f"the image build failed (see {runner.log})")
        facts = {} if args.plan else probe([*docker["run"], args.image, "python3"], 0)
        facts["mmcv_made"] = "in the image"
        chain += ["--image", args.image, "--shm-size", SHM_SIZE]
        del env["CUDA_VISIBLE_DEVICES"]  # docker run --gpus picks the GPU
    else:
        facts = prepare_host(args, gpu, runner)
        facts["mmcv_archs"] = mmcv_archs(facts.get("mmcv_ext"))
    code, output = runner(chain, "the devkit chain on the GPU", env)
    benchmarks = {}
    if not args.no_benchmark and (ROOT / BENCHMARK).exists():
        for label, extra in (("fp32", []), ("fp16", ["--fp16"])):
            result = args.work / f"inference-{label}.json"
            options = [*shlex.split(args.benchmark_args), *extra, "--device", "cuda"]
            if mode == "container":
                command = [*docker["run"], "--shm-size", SHM_SIZE]
                command += ["-v", f"{ROOT / 'benchmarks'}:/benchmarks:ro"]
                command += ["-v", f"{args.work}:/gpu-check", args.image, "python3"]
                command += [f"/benchmarks/{BENCHMARK.name}", *options]
                command += ["--json", f"/gpu-check/{result.name}"]
            else:
                command = [sys.executable, str(ROOT / BENCHMARK), *options, "--json", str(result)]
            if runner(command, f"the inference benchmark ({label})", env)[0] == 0:
                if result.exists():
                    benchmarks[label] = json.loads(result.read_text(encoding="utf-8"))
            else:
                code = code or 1
    if args.plan:
        return 0
    print()
    print(summary(mode, gpu, facts, chain_lines(output), benchmarks, args.variant))
    return 0 if code == 0 and chain_lines(output)[0] else 1


def require_devkit_modules() -> None:
    missing = []
    for module in ("yaml", "numpy", "PIL", "pycocotools"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise Refusal(
            f"the devkit runs on this host and needs {', '.join(missing)}: pip install pyyaml "
            "numpy pillow pycocotools (or pip install -e .)"
        )


if __name__ == "__main__":
    sys.exit(main())
