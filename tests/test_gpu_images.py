"""GPU images without a GPU: what the Dockerfiles build for each MMCV_WHEEL, the mmcv compile
script run against fake compilers, and GPU claims that agree with the version matrix.

No GPU and no pytorch/pytorch image are at hand here, so the Dockerfiles are checked as BuildKit
reads them: which stages (and base images) the final image reaches for given build arguments.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import hcl2
import pytest
from conftest import MATRIX, bake
from test_containers import instructions, stages

GPU_LINES = [variant for variant, line in MATRIX.items() if line["cuda"]]
PREBUILT_GPU_LINES = [v for v in GPU_LINES if MATRIX[v]["mmcv_install"] == "prebuilt"]
COMPILE_LINES = [v for v in GPU_LINES if MATRIX[v]["mmcv_install"] == "compile"]
BUILD_SCRIPT = Path("docker", "build-mmcv.sh")


@pytest.fixture(scope="module")
def every_line(cookies_session):
    """A framework bake and a stub bake with every line of the matrix."""
    return {
        framework: bake(
            cookies_session,
            executor_name=f"Gpu {framework}",
            framework=framework,
            cuda_variants=",".join(MATRIX),
        )
        for framework in ("auto", "none")
    }


# ------------------------------------------------------------------------------------------------
# what BuildKit builds


def _substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda match: values.get(match.group(1), ""), text)


def reached(dockerfile: Path, **build_args: str) -> tuple[set[str], set[str]]:
    """(stage names, external images) that BuildKit needs for the final image of
    ``dockerfile`` with ``build_args``: it builds only the stages the target reaches."""
    all_stages = stages(instructions(dockerfile))
    values = {}
    for instruction in all_stages[0]:  # the global ARGs before the first FROM
        name, _, default = instruction.split(maxsplit=1)[1].partition("=")
        values[name] = default.strip('"')
    values.update(build_args)
    by_name, order = {}, []
    for stage in all_stages[1:]:
        words = stage[0].split()
        name = words[3] if len(words) > 3 else str(len(order))
        base = _substitute(words[1], values)
        sources = re.findall(r"(?:--from=|,from=)([\w.-]+)", " ".join(stage[1:]))
        by_name[name] = (base, sources)
        order.append(name)
    stage_names, images = set(), set()
    pending = [order[-1]]
    while pending:
        name = pending.pop()
        if name in stage_names:
            continue
        stage_names.add(name)
        base, sources = by_name[name]
        for dependency in [base, *sources]:
            if dependency in by_name:
                pending.append(dependency)
            elif dependency != "scratch":
                images.add(dependency)
    return stage_names, images


@pytest.mark.parametrize("variant", PREBUILT_GPU_LINES)
def test_prebuilt_lines_compile_mmcv_only_when_asked(every_line, variant):
    """A default build of a prebuilt line never pulls the multi-GB -devel image; with
    MMCV_WHEEL=build it compiles mmcv there, for the line's architectures."""
    line = MATRIX[variant]
    dockerfile = every_line["auto"] / "docker" / f"{variant}.Dockerfile"
    names, images = reached(dockerfile)
    assert "mmcv-build" not in names and "mmcv-prebuilt" in names, names
    assert images == {line["base_image"]}, images
    names, images = reached(dockerfile, MMCV_WHEEL="build")
    assert {"mmcv-build", "mmcv-wheel"} <= names and "mmcv-prebuilt" not in names, names
    assert images == {line["base_image"], line["devel_image"]}, images
    text = dockerfile.read_text()
    assert f'ARG TORCH_CUDA_ARCH_LIST="{line["cuda_arch_list"]}"' in text
    assert 'if [ "$MMCV_WHEEL" = build ]' in text


@pytest.mark.parametrize("variant", COMPILE_LINES)
def test_compile_lines_always_compile(every_line, variant):
    line = MATRIX[variant]
    dockerfile = every_line["auto"] / "docker" / f"{variant}.Dockerfile"
    names, images = reached(dockerfile)
    assert "mmcv-build" in names
    assert images == {line["base_image"], line["devel_image"]}
    assert "MMCV_WHEEL" not in "".join(instructions(dockerfile)).replace("YMIR_MMCV_WHEEL", "")


def test_one_compile_stage_for_every_line(every_line):
    """The compile lines and MMCV_WHEEL=build share one implementation: the same stage text
    (the line's values come from the global arguments) and the same script."""
    texts = set()
    for variant in GPU_LINES:
        all_stages = stages(instructions(every_line["auto"] / "docker" / f"{variant}.Dockerfile"))
        (stage,) = [s for s in all_stages if s[0].endswith(" AS mmcv-build")]
        texts.add("\n".join(stage))
    assert len(texts) == 1, texts
    (text,) = texts
    assert text.startswith("FROM ${DEVEL_IMAGE} AS mmcv-build")
    assert "bash /tmp/build-mmcv.sh /mmcv-wheel" in text
    cpu = every_line["auto"] / "docker" / "cpu.Dockerfile"
    assert reached(cpu)[1] == {MATRIX["cpu"]["base_image"]}
    assert "mmcv-build" not in cpu.read_text()


@pytest.mark.parametrize("framework", ["auto", "none"])
def test_images_name_their_line_to_the_executor(every_line, framework):
    """The preflight reads the variant, the driver floor and how mmcv was made from ENV."""
    for variant, line in MATRIX.items():
        text = (every_line[framework] / "docker" / f"{variant}.Dockerfile").read_text()
        if framework == "none":
            assert "YMIR_IMAGE_VARIANT" not in text
            continue
        env = " ".join(i for i in instructions_of(text) if i.startswith("ENV YMIR_IMAGE"))
        assert f"YMIR_IMAGE_VARIANT={variant} " in env, env
        assert f'YMIR_DRIVER_MIN="{line["driver_min"]}"' in env, env
        wheel = {
            "cpu": "prebuilt",
            **dict.fromkeys(PREBUILT_GPU_LINES, '"${MMCV_WHEEL}"'),
            **dict.fromkeys(COMPILE_LINES, "build"),
        }[variant]
        assert env.endswith(f"YMIR_MMCV_WHEEL={wheel}"), env


def instructions_of(text: str) -> list[str]:
    return [" ".join(i.split()) for i in text.replace("\\\n", " ").splitlines() if i.strip()]


def load_hcl(path: Path) -> dict:
    return hcl2.loads(
        path.read_text(),
        serialization_options=hcl2.utils.SerializationOptions(strip_string_quotes=True),
    )


def test_bake_file_exposes_mmcv_wheel_on_the_prebuilt_gpu_lines(every_line):
    bake_file = load_hcl(every_line["auto"] / "docker-bake.hcl")
    variables = {name for block in bake_file["variable"] for name in block}
    assert {"MMCV_WHEEL", "MAX_JOBS"} <= variables
    targets = {}
    for block in bake_file["target"]:
        targets.update(block)
    for variant, target in targets.items():
        args = target["args"]
        assert ("MMCV_WHEEL" in args) == (variant in PREBUILT_GPU_LINES), variant
        assert ("MAX_JOBS" in args) == (variant in GPU_LINES), variant
    stub = load_hcl(every_line["none"] / "docker-bake.hcl")
    assert not {"MMCV_WHEEL", "MAX_JOBS"} & {n for block in stub["variable"] for n in block}
    assert not (every_line["none"] / BUILD_SCRIPT).exists()


# ------------------------------------------------------------------------------------------------
# docker/build-mmcv.sh against fake tools

FAKE_PYTHON = """#!/bin/sh
if [ "$1" = -c ]; then
    [ -n "$FAKE_NO_TORCH" ] && exit 1
    echo "$FAKE_TORCH_CUDA"
    exit 0
fi
{ echo "args: $*"; echo "FORCE_CUDA=$FORCE_CUDA MMCV_WITH_OPS=$MMCV_WITH_OPS"; \
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"; echo "MAX_JOBS=$MAX_JOBS"; } > "$FAKE_LOG"
"""
FAKE_NVCC = """#!/bin/sh
case "$1" in
    --version) echo "Cuda compilation tools, release $FAKE_NVCC_CUDA, V$FAKE_NVCC_CUDA.89" ;;
    --list-gpu-arch) for a in $FAKE_NVCC_ARCHS; do echo "compute_$a"; done ;;
esac
"""


class BuildScript:
    """docker/build-mmcv.sh of a bake, with only fake tools and a few real utilities on PATH."""

    def __init__(self, project: Path, tmp_path: Path):
        self.script = project / BUILD_SCRIPT
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for utility in ("awk", "sed", "grep", "cat", "head", "tr"):
            (self.bin / utility).symlink_to(subprocess.check_output(["which", utility]).strip())
        self.tool("python3", FAKE_PYTHON)
        self.tool("nproc", '#!/bin/sh\necho "$FAKE_NPROC"\n')
        self.tool("c++", "#!/bin/sh\n")
        self.nvcc = self.tool("nvcc", FAKE_NVCC)
        self.meminfo = tmp_path / "meminfo"
        self.cgroup = tmp_path / "cgroup"
        self.cgroup.mkdir()
        self.log = tmp_path / "pip.log"
        self.env = {
            "PATH": str(self.bin),
            "MEMINFO": str(self.meminfo),
            "CGROUP_ROOT": str(self.cgroup),
            "FAKE_LOG": str(self.log),
            "FAKE_TORCH_CUDA": "11.8",
            "FAKE_NVCC_CUDA": "11.8",
            "FAKE_NVCC_ARCHS": "35 50 60 61 70 75 80 86 87 89 90",
            "FAKE_NPROC": "16",
            "TORCH_CUDA_ARCH_LIST": "8.6 9.0+PTX",
        }
        self.memory_gb(64)

    def tool(self, name: str, text: str) -> Path:
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)
        return path

    def memory_gb(self, available: float, total: float = 128) -> None:
        self.meminfo.write_text(
            f"MemTotal:       {int(total * 1024 * 1024)} kB\n"
            f"MemFree:        1000 kB\n"
            f"MemAvailable:   {int(available * 1024 * 1024)} kB\n"
        )

    def run(self, **env: str) -> subprocess.CompletedProcess:
        if self.log.exists():
            self.log.unlink()
        return subprocess.run(
            ["/bin/bash", str(self.script), "/out", "mmcv==2.1.0", "--find-links", "/wheels"],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def pip_call(self) -> dict[str, str]:
        lines = self.log.read_text().splitlines()
        found = {"args": lines[0].removeprefix("args: ")}
        for line in lines[1:]:
            for pair in line.split():
                key, _, value = pair.partition("=")
                found[key] = value
        found["TORCH_CUDA_ARCH_LIST"] = lines[2].partition("=")[2]
        return found


@pytest.fixture
def build_script(every_line, tmp_path):
    return BuildScript(every_line["auto"], tmp_path)


def test_build_script_compiles_with_cuda_for_the_architectures(build_script):
    done = build_script.run()
    assert done.returncode == 0, done.stderr
    call = build_script.pip_call()
    assert call["args"] == (
        "-m pip wheel --no-cache-dir --no-deps --no-build-isolation --no-binary=mmcv "
        "-w /out --find-links /wheels mmcv==2.1.0"
    )
    assert call["FORCE_CUDA"] == "1" and call["MMCV_WITH_OPS"] == "1"
    assert call["TORCH_CUDA_ARCH_LIST"] == "8.6 9.0+PTX"
    assert call["MAX_JOBS"] == "16"  # 64 GB / 3 GB = 21 jobs, capped by the 16 cores


@pytest.mark.parametrize(
    ("available_gb", "cgroup", "cores", "jobs"),
    [
        (16, None, 16, 5),  # a 16 GB build machine: 5 jobs, not 16
        (64, str(6 * 1024**3), 16, 2),  # the container's memory limit is lower
        (64, "max", 16, 16),  # cgroup v2 without a limit
        (64, None, 4, 4),  # the cores are fewer
        (2, None, 16, 1),  # always at least one
    ],
)
def test_build_script_takes_jobs_from_memory(build_script, available_gb, cgroup, cores, jobs):
    build_script.memory_gb(available_gb)
    if cgroup is not None:
        (build_script.cgroup / "memory.max").write_text(cgroup + "\n")
    done = build_script.run(FAKE_NPROC=str(cores))
    assert done.returncode == 0, done.stderr
    assert build_script.pip_call()["MAX_JOBS"] == str(jobs)
    assert f"mmcv: {jobs} parallel compile jobs" in done.stdout


def test_build_script_keeps_a_given_max_jobs(build_script):
    build_script.memory_gb(2)
    done = build_script.run(MAX_JOBS="7")
    assert done.returncode == 0 and build_script.pip_call()["MAX_JOBS"] == "7"
    done = build_script.run(MAX_JOBS="many")
    assert done.returncode == 1 and "MAX_JOBS must be a positive number" in done.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"remove": "c++"}, "no C++ compiler (c++ or g++) here"),
        ({"FAKE_NVCC_CUDA": "12.1"}, "nvcc is CUDA 12.1, PyTorch is built for CUDA 11.8"),
        (
            {"FAKE_NVCC_CUDA": "11.7", "FAKE_NVCC_ARCHS": "35 50 60 70 75 80 86"},
            "nvcc 11.7 cannot compile for 9.0+PTX",
        ),
        ({"FAKE_TORCH_CUDA": ""}, "is a CPU build"),
        ({"FAKE_NO_TORCH": "1"}, "cannot import torch"),
        ({"TORCH_CUDA_ARCH_LIST": ""}, "TORCH_CUDA_ARCH_LIST is empty"),
        ({"CUDA_HOME": "/nowhere"}, "no nvcc (the CUDA compiler) here (CUDA_HOME=/nowhere)"),
    ],
)
def test_build_script_fails_fast_with_the_reason(build_script, change, message):
    change = dict(change)
    removed = change.pop("remove", None)
    if removed:
        (build_script.bin / removed).unlink()
    done = build_script.run(**change)
    assert done.returncode == 1
    assert message in done.stderr, done.stderr
    assert not build_script.log.exists(), "pip ran although a check failed"


def test_build_script_finds_nvcc_under_cuda_home(build_script, tmp_path):
    cuda_home = tmp_path / "cuda"
    (cuda_home / "bin").mkdir(parents=True)
    build_script.nvcc.rename(cuda_home / "bin" / "nvcc")
    done = build_script.run(CUDA_HOME=str(cuda_home))
    assert done.returncode == 0, done.stderr
    assert os.path.exists(build_script.log)


# ------------------------------------------------------------------------------------------------
# GPU claims


@pytest.mark.parametrize("variant", GPU_LINES)
def test_gpu_claims_agree_with_the_architectures(variant):
    """A line claims Hopper only where its arch list has sm_90, and a prebuilt line only
    through MMCV_WHEEL=build (OpenMMLab's wheels have no Hopper kernels); every claim says
    how it is known."""
    line = MATRIX[variant]
    archs = [arch.removesuffix("+PTX") for arch in line["cuda_arch_list"].split()]
    gpus = line["gpus"]
    if "9.0" not in archs:
        assert "no Hopper" in gpus, gpus
    elif line["mmcv_install"] == "prebuilt":
        hopper = gpus[gpus.index("Hopper") :]
        assert hopper.split(";")[0].endswith(
            "only with MMCV_WHEEL=build, which compiles mmcv for the line's TORCH_CUDA_ARCH_LIST"
        ), gpus
        assert "to Hopper" not in gpus, gpus
    assert re.match(r"(reported|assumed|tested): ", line["gpus_evidence"]), line["gpus_evidence"]
    assert isinstance(line["verified_on_gpu"], str)
    assert line["torch_gpus"] and line["driver_min"]


@pytest.mark.parametrize("framework", ["auto", "none"])
def test_readme_variant_table_comes_from_the_matrix(every_line, framework):
    readme = (every_line[framework] / "README.md").read_text()
    rows = {
        row.split("|")[1].strip(" `"): row
        for row in readme.splitlines()
        if re.match(r"\| `(cu\d+|cpu)` \| `", row)
    }
    assert set(rows) == set(MATRIX)
    for variant, line in MATRIX.items():
        cells = [cell.strip() for cell in rows[variant].split("|")[1:-1]]
        assert cells[4] == (line["gpus"] if framework == "auto" else line["torch_gpus"])
        assert line["gpus_evidence"] in cells[5]
        assert cells[5].endswith("not yet run on a GPU") == bool(line["cuda"])
