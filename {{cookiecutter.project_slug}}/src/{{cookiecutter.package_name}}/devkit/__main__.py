"""Command line of the devkit: ``python -m <package>.devkit {synth,run,...,hyperparams}``.

    synth  --work DIR --task training|mining|infer|mining+infer [--protocol 1.1.0|1.0.0|legacy]
           [--platform 1.1|2.0|...|2.5] [--format ark|voc|coco|seg-coco]
           [--config-variant as-is|drop-empty|drop-falsy|strings]
           [--images DIR] [--single-image] [--model TAR|DIR] [--pretrained TAR|DIR] ...
    run    --work DIR [--timeout S] [--gpus 0,...]
           [--image IMAGE [--user UID:GID] [--shm-size S] [--docker CLI]]
    verify --work DIR
    chain  --work DIR [--protocol 1.1.0|1.0.0|legacy|all] [--timeout S] [--model TAR|DIR]
           [--gpus 0,...] [--image IMAGE [--user UID:GID] [--shm-size S] [--docker CLI]]
    al-loop --work DIR (--dataset DIR [--annotations JSON] | --synthetic N) [--classes A,B]
           [--val N] [--start N] [--start-positives N] [--pool N] [--top-k K] [--rounds R]
           [--algorithms A,B] [--seeds N] [--jobs N [--cores-per-job N]] [--param K=V]
           [--mining-param K=V] [--infer-param K=V] [--fine-tune] [--enrichment-only]
           [--timeout S] [--image IMAGE ...]
    hyperparams [--root DIR] [--check]

``--image`` runs the built image instead of the checkout's package, the way the platform starts
it (``docker run`` with /in read-only, /out, an arbitrary --user, --shm-size, no command; never a
network); ``chain --image`` also reads the image's /img-man first, as YMIR does when the image is
added. ``verify`` reads the run's outcome from monitor.txt like the platform: a failed run
(state 4) is checked against the failure protocol, a successful one for its results.

The executor's object_type comes from its img-man manifest (the checkout's ``img-man/``, else the
packaged copy, else ``/img-man``; ``--img-man`` overrides), so there is no target flag. Exit codes:
0 success, 1 a failed run / verification / chain / loop step, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..contract.errors import ExecutorError
from . import synth as synth_module

PROTOCOL_CHOICES = ("1.1.0", "1.0.0", "legacy")
RUN_GPUS_HELP = (
    "host GPUs the task gets, e.g. 0 or 2,3: docker run --gpus device=... like the platform "
    "(--image), or CUDA_VISIBLE_DEVICES (default: none, the CPU)"
)
FORMAT_CHOICES = ("ark", "voc", "coco", "seg-coco", "det-ark", "det-voc")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (ValueError, OSError, NotImplementedError, ExecutorError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}",
        description="Local stand-in for the YMIR platform: synthesize /in, run the executor like "
        "the platform, verify /out, or chain train -> package -> infer / mine.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _synth_command(commands)
    _run_command(commands)
    _verify_command(commands)
    _chain_command(commands)
    _al_loop_command(commands)
    _hyperparams_command(commands)
    return parser


def _synth_command(commands: argparse._SubParsersAction) -> None:
    """``synth``: a YMIR-shaped ``<work>/in`` and an empty ``<work>/out``."""
    synth = commands.add_parser("synth", help="write a YMIR-shaped <work>/in and empty <work>/out")
    synth.add_argument("--work", required=True, type=Path, help="work dir (created)")
    synth.add_argument("--task", required=True, choices=synth_module.TASKS)
    versions = synth.add_mutually_exclusive_group()
    versions.add_argument("--protocol", default="1.1.0", choices=PROTOCOL_CHOICES)
    versions.add_argument(
        "--platform",
        choices=synth_module.PLATFORMS,
        help="one YMIR version's files (default: 2.5's, with --protocol): its protocol, its "
        "env.yaml and config.yaml keys, and no annotations (empty train / val indexes) for a "
        "--format it does not export, e.g. coco before 2.5",
    )
    synth.add_argument(
        "--format",
        dest="annotation_format",
        choices=FORMAT_CHOICES,
        help="training annotation format (default: the template's export_format)",
    )
    synth.add_argument(
        "--config-variant",
        choices=synth_module.CONFIG_VARIANTS,
        help="how the web UI mangles the template (default: drop-empty for training, "
        "drop-falsy for mining / infer, as the platform does)",
    )
    synth.add_argument(
        "--images", dest="images_dir", type=Path, help="use these images (mining / infer)"
    )
    synth.add_argument(
        "--single-image",
        action="store_true",
        help="single-image inference: candidates keep original names (spaces, non-ASCII)",
    )
    synth.add_argument(
        "--model",
        dest="model_params",
        type=Path,
        help="mining / infer model: a package tar, or a training work dir to package first",
    )
    synth.add_argument("--pretrained", type=Path, help="training: a pretrained model (as --model)")
    synth.add_argument("--stage", dest="model_stage", help="model stage (default: the best one)")
    synth.add_argument(
        "--model-layout",
        choices=synth_module.MODEL_LAYOUTS,
        help="in/models layout (default: stage; flat for legacy)",
    )
    synth.add_argument("--num-train", type=int, default=12)
    synth.add_argument("--num-val", type=int, default=6)
    synth.add_argument("--num-candidates", type=int, default=8)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--img-man", type=Path, help="img-man folder (default: found)")
    _gpu_option(synth, "GPUs of the task: gpu_id '0,...,n-1' for n of them (default: the CPU)")
    _param_option(synth)
    synth.set_defaults(handler=_cmd_synth)


def _run_command(commands: argparse._SubParsersAction) -> None:
    """``run``: the executor on a work dir, like the platform."""
    run = commands.add_parser("run", help="run the executor on <work> like the platform")
    run.add_argument("--work", required=True, type=Path)
    run.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    _gpu_option(run, RUN_GPUS_HELP)
    _container_options(run)
    run.set_defaults(handler=_cmd_run)


def _verify_command(commands: argparse._SubParsersAction) -> None:
    """``verify``: a work dir's ``out`` against the platform's rules."""
    verify = commands.add_parser("verify", help="check <work>/out against the platform's rules")
    verify.add_argument("--work", required=True, type=Path)
    verify.set_defaults(handler=_cmd_verify)


def _chain_command(commands: argparse._SubParsersAction) -> None:
    """``chain``: train -> package -> infer, mine, mine+infer."""
    chain = commands.add_parser("chain", help="train -> package -> infer, mine, mine+infer")
    chain.add_argument("--work", required=True, type=Path, help="base dir (created)")
    chain.add_argument(
        "--protocol",
        default="1.1.0",
        choices=(*PROTOCOL_CHOICES, "all"),
        help="'all' runs 1.1.0, 1.0.0 and legacy, each in <work>/<protocol>",
    )
    chain.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    chain.add_argument("--format", dest="annotation_format", choices=FORMAT_CHOICES)
    chain.add_argument("--config-variant", choices=synth_module.CONFIG_VARIANTS)
    chain.add_argument("--seed", type=int, default=0)
    chain.add_argument("--img-man", type=Path)
    chain.add_argument(
        "--model",
        type=Path,
        help="model package tar (or training work dir) for mining / infer instead of training",
    )
    chain.add_argument("--quiet", action="store_true", help="summary lines only, no findings")
    _gpu_option(chain, RUN_GPUS_HELP + "; every task's config gets gpu_id '0,...'")
    _param_option(chain)
    _container_options(chain)
    chain.set_defaults(handler=_cmd_chain)


def _al_loop_command(commands: argparse._SubParsersAction) -> None:
    """``al-loop``: the active-learning cycle per mining algorithm."""
    loop = commands.add_parser(
        "al-loop",
        help="the active-learning cycle: train, mine top-k, label, train ... per algorithm",
        description="Play what a YMIR user does with mining: train on a start set, mine the "
        "unlabelled pool, label the top-k, train again, for several rounds, once per mining "
        "algorithm and random; every task runs and is verified like on the platform. Writes "
        "report.md, report.json and curve.png into --work; a rerun resumes.",
    )
    loop.add_argument("--work", required=True, type=Path, help="experiment dir (created)")
    source = loop.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset", type=Path, help="a folder of images with a COCO json (boxes, or masks)"
    )
    source.add_argument(
        "--synthetic",
        type=int,
        metavar="IMAGES",
        help="generate a synthetic pool of this many images (a rare class among distractors) "
        "into <work>/dataset",
    )
    loop.add_argument("--annotations", type=Path, help="the COCO json (default: the only one)")
    loop.add_argument("--classes", help="comma-separated classes to train (default: all)")
    loop.add_argument("--val", type=int, default=100, help="held-out validation images (100)")
    loop.add_argument("--start", type=int, default=100, help="labelled start images (100)")
    loop.add_argument(
        "--start-positives",
        type=int,
        metavar="N",
        help="start images with an object of the task's classes, the others without any "
        "(default: a random start set)",
    )
    loop.add_argument("--pool", type=int, help="unlabelled pool images (default: the rest)")
    loop.add_argument("--top-k", type=int, default=50, help="images mined per round (50)")
    loop.add_argument("--rounds", type=int, default=3, help="mining rounds (3)")
    loop.add_argument(
        "--algorithms",
        default="",
        help="comma-separated mining algorithms (default: the template's); random is always run",
    )
    loop.add_argument(
        "--seeds", type=int, default=1, help="repetitions with other start sets (default 1)"
    )
    loop.add_argument(
        "--jobs", type=int, default=1, help="seeds run at once, a process each (default 1)"
    )
    loop.add_argument(
        "--cores-per-job",
        type=int,
        metavar="N",
        help="pin each job and its tasks to N CPU cores of its own (Linux; default: no pinning)",
    )
    loop.add_argument("--fine-tune", action="store_true", help="train from the last round's model")
    loop.add_argument(
        "--enrichment-only",
        action="store_true",
        help="the cheap measure only: train once, mine once per algorithm, report enrichment",
    )
    loop.add_argument("--timeout", type=float, default=3600.0, help="seconds per task (3600)")
    loop.add_argument("--img-man", type=Path)
    _param_option(loop)
    for task in ("mining", "infer"):
        loop.add_argument(
            f"--{task}-param",
            dest=f"{task}_params",
            action="append",
            default=[],
            type=_key_value,
            metavar="KEY=VALUE",
            help=f"a {task} hyper-parameter (repeatable)",
        )
    _container_options(loop)
    loop.set_defaults(handler=_cmd_al_loop)


def _hyperparams_command(commands: argparse._SubParsersAction) -> None:
    """``hyperparams``: the templates' comments and the README table from the declarations."""
    # Imported here, as the other commands' modules are: only this command needs the tasks.
    from . import hyperparams as hyperparams_module

    hyperparams = commands.add_parser(
        "hyperparams",
        help="write the templates' comments and the README table from tasks/hyperparams.py",
    )
    hyperparams_module.add_arguments(hyperparams)
    hyperparams.set_defaults(handler=hyperparams_module.run)


def _param_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="a hyper-parameter as a user sets it in the web UI (repeatable), e.g. epochs=1",
    )


def _key_value(text: str) -> tuple[str, Any]:
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    # YAML reads the value as config.yaml would hold it: 1 -> int, true -> bool, a -> str.
    return key.strip(), yaml.safe_load(value) if value.strip() else ""


def _gpu_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--gpus", type=_gpu_list, metavar="0,...", help=help_text)


def _gpu_list(text: str) -> str:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected GPU indices like 0 or 0,1, got {text!r}")
    return ",".join(parts)


def _container_options(parser: argparse.ArgumentParser) -> None:
    from .run import DEFAULT_DOCKER, DEFAULT_SHM_SIZE, DEFAULT_USER

    group = parser.add_argument_group("container mode")
    group.add_argument(
        "--image",
        help="run this image like the platform does (docker run, no network) instead of the "
        "checkout's package",
    )
    group.add_argument(
        "--user",
        default=DEFAULT_USER,
        help=f"--user of the container (default {DEFAULT_USER}: a uid without a passwd entry, "
        "like the platform's); '' keeps the image's user",
    )
    group.add_argument(
        "--shm-size",
        default=DEFAULT_SHM_SIZE,
        help=f"--shm-size of the container (default {DEFAULT_SHM_SIZE})",
    )
    group.add_argument(
        "--docker",
        default=DEFAULT_DOCKER,
        help=f"docker client to use (default {DEFAULT_DOCKER}; DOCKER_HOST etc. are passed on)",
    )


def _container_kwargs(args: argparse.Namespace) -> dict:
    if not args.image:
        return {}
    return {
        "image": args.image,
        "user": args.user or None,
        "shm_size": args.shm_size,
        "docker": args.docker,
    }


def _object_type(img_man: Path) -> int:
    from .chain import executor_object_type

    return executor_object_type(img_man)


def _cmd_synth(args: argparse.Namespace) -> int:
    img_man = args.img_man or synth_module.default_img_man()
    result = synth_module.synthesize(
        args.work,
        args.task,
        _object_type(img_man),
        protocol=args.protocol,
        annotation_format=args.annotation_format,
        config_variant=args.config_variant,
        images_dir=args.images_dir,
        num_train=args.num_train,
        num_val=args.num_val,
        num_candidates=args.num_candidates,
        model_params=args.model_params,
        model_stage=args.model_stage,
        model_layout=args.model_layout,
        pretrained=args.pretrained,
        img_man=img_man,
        seed=args.seed,
        single_image=args.single_image,
        params=dict(args.params),
        platform=args.platform,
        gpu_count=len(args.gpus.split(",")) if args.gpus else 0,
    )
    print(
        f"synthesized {result.task} (object_type {result.object_type}, protocol {result.protocol})"
    )
    print(f"  env file:   {result.env_file}")
    print(f"  config:     {result.config_file} (variant {result.config_variant})")
    print(f"  assets:     {result.assets_dir} -> {result.assets_cache}")
    if result.task == "training":
        print(
            f"  dataset:    {len(result.train_images)} train + {len(result.val_images)} val "
            f"images, {result.annotation_format} annotations"
        )
        if result.train_index is not None and not result.train_index.stat().st_size:
            print(
                f"  warning: YMIR {args.platform} does not export {result.annotation_format}: "
                "no annotations, empty train and val indexes (as that version leaves them)"
            )
    else:
        print(f"  candidates: {len(result.candidates)} ({result.candidate_index})")
        if not result.model_params:
            print(
                "  warning: no --model given, in/models is empty: the executor will fail with "
                "300004 (pass --model <training work dir or package tar>)"
            )
    print(f"next: python -m {__package__} run --work {result.work_dir}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .run import run

    result = run(args.work, timeout=args.timeout, gpus=args.gpus, **_container_kwargs(args))
    status = "timed out" if result.timed_out else f"exit code {result.returncode}"
    if result.image:
        print("ran: " + " ".join(result.command))
    print(f"executor finished: {status} after {result.duration:.1f} s (log: {result.log_path})")
    for change in result.in_changes:
        print(f"  error: {change} (/in is read-only on the platform)")
    if result.returncode != 0:
        tail = result.log_path.read_text(errors="replace").splitlines()[-5:]
        print("last log lines (what the YMIR UI shows):")
        for line in tail:
            print(f"  {line}")
    return 0 if result.ok and not result.in_changes else 1


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import format_findings, has_errors, run_outcome, verify_work_dir

    # The platform learns the outcome from monitor.txt; so does the verifier.
    outcome = run_outcome(args.work)
    print(f"{outcome.describe()}; checked as a {'failed' if outcome.failed else 'successful'} run")
    findings = verify_work_dir(args.work, expect_success=not outcome.failed)
    print(format_findings(findings))
    if outcome.failed and not has_errors(findings):
        print("verify: the failure follows the failure protocol")
    return 1 if outcome.failed or has_errors(findings) else 0


def _cmd_chain(args: argparse.Namespace) -> int:
    from .chain import chain

    protocols = PROTOCOL_CHOICES if args.protocol == "all" else (args.protocol,)
    options = {"seed": args.seed, "params": dict(args.params)}
    if args.annotation_format:
        options["annotation_format"] = args.annotation_format
    if args.config_variant:
        options["config_variant"] = args.config_variant
    failed = False
    for protocol in protocols:
        base = args.work / protocol if args.protocol == "all" else args.work
        report = chain(
            base,
            protocol=protocol,
            timeout=args.timeout,
            img_man=args.img_man,
            model=args.model,
            gpus=args.gpus,
            **_container_kwargs(args),
            **options,
        )
        print(report.format(details=not args.quiet))
        failed = failed or not report.ok
    return 1 if failed else 0


def _cmd_al_loop(args: argparse.Namespace) -> int:
    from .al_dataset import load_dataset
    from .al_loop import LoopSettings, StepFailed, al_loop, prepare_work_dir
    from .pool import PoolRecipe, write_pool

    if args.synthetic is not None:
        folder = prepare_work_dir(args.work) / "dataset"
        annotations = write_pool(folder, PoolRecipe(images=args.synthetic))
    else:
        folder, annotations = args.dataset, args.annotations
    classes = [name for name in (args.classes or "").split(",") if name.strip()]
    dataset = load_dataset(folder, annotations, classes or None)
    settings = LoopSettings(
        top_k=args.top_k,
        rounds=args.rounds,
        start=args.start,
        start_positives=args.start_positives,
        val=args.val,
        pool=args.pool,
        algorithms=[name for name in args.algorithms.split(",") if name.strip()],
        seeds=args.seeds,
        training_params=dict(args.params),
        mining_params=dict(args.mining_params),
        infer_params=dict(args.infer_params),
        fine_tune=args.fine_tune,
        enrichment_only=args.enrichment_only,
    )
    try:
        al_loop(
            args.work,
            dataset,
            settings,
            img_man=args.img_man,
            timeout=args.timeout,
            log=lambda line: print(line, flush=True),
            jobs=args.jobs,
            cores_per_job=args.cores_per_job,
            **_container_kwargs(args),
        )
    except StepFailed as error:
        print(f"failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
