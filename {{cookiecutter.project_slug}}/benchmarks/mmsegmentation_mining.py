"""Does mining beat random? Every mining algorithm through the active-learning loop.

The public YMIR experiment (COCO, one class at a time: a start set, a large pool in which the
class is rare, 500 mined images per round) in a reproducible, synthetic form: a pool with a
rare class among many images without it and distractors that look like it
(``devkit/pool.py``), the rare class trained alone from a start set a third of which holds it,
played by ``devkit al-loop`` with this executor as a black box: train on the start set, mine
the pool with every algorithm and with ``random``, label the top-k, train again, for several
rounds and seeds; every model is measured on the same held-out validation set. It prints the
loop's tables (mIoU per round, mean and spread over the seeds, the difference to random paired
by seed, the one-round enrichment of each first top-k), one line per algorithm against random,
the best one against the goal (+0.05 mIoU after the last round) and whether the template's
default ``mining_algorithm`` is that best one, then the time.

The model learns the background as a class of its own (``background_class: true``): the pool's
objects lie on an unlabelled, cluttered background, and without it a model is unsure about
every background pixel, which is no sign of an image worth labelling.

Settings (``--setting``): ``cpu`` (2 CPU cores; ``benchmarks/README.md`` has its cost),
``gpu`` (a larger pool, more rounds and seeds, longer trainings at 128 px, for real hardware)
and ``smoke`` (seconds per task, for the test suite; its numbers mean nothing). The work dir
(default ``.devkit/mining-benchmark-<setting>``) keeps every task; running the same command again
resumes where it stopped. Example::

    PYTHONPATH=src python benchmarks/mmsegmentation_mining.py --setting cpu
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from {{ cookiecutter.package_name }}.contract.params import load_template, manifest_object_type
from {{ cookiecutter.package_name }}.devkit import al_report
from {{ cookiecutter.package_name }}.devkit.al_dataset import load_dataset
from {{ cookiecutter.package_name }}.devkit.al_loop import (
    LoopSettings,
    StepFailed,
    al_loop,
    one_job_per_core,
)
from {{ cookiecutter.package_name }}.devkit.pool import PoolRecipe, write_pool
from {{ cookiecutter.package_name }}.devkit.synth import default_img_man

ALGORITHMS = ("entropy", "margin")
GOAL = 0.05
# One class at a time, as the public experiment: the task trains the rare class only, and the
# pool's other objects are unlabelled things in the images, like COCO's other classes there.
CLASSES = ("rare",)
SETTINGS = {
    "cpu": dict(
        one_core=True,
        # 300 validation images hold 19 objects of the rare class. In full colour, without
        # lookalikes: SegFormer-B0 from scratch at 300 iterations a round hardly learns the
        # MMDetection benchmark's faint class (random's mIoU 0.07 to 0.12 in every round;
        # benchmarks/README.md)
        recipe=PoolRecipe(images=760, image_size=64),
        val=300,
        start=60,
        # a third of the start set with the class (the public experiment's: a quarter): trained
        # from scratch, the start model needs some 20 objects to be unsure about the class at all
        start_positives=20,
        pool=400,
        top_k=30,
        rounds=3,
        seeds=2,
        # without pretrained weights every round trains on from the last round's model, as a
        # YMIR user does: trained from scratch each time, a model of 90 to 150 images is not
        # converged after this budget, and where it stands varies more than what was labelled
        fine_tune=True,
        training=dict(max_iters=300, img_size=64, batch_size_per_gpu=8),
    ),
    "gpu": dict(
        one_core=False,
        recipe=PoolRecipe(images=6000, image_size=128),
        val=500,
        start=300,
        start_positives=100,
        pool=5000,
        top_k=200,
        rounds=4,
        seeds=3,
        fine_tune=False,
        training=dict(max_iters=4000, img_size=128, batch_size_per_gpu=16),
    ),
    "smoke": dict(
        one_core=True,
        recipe=PoolRecipe(images=24, image_size=64, rare_fraction=0.3),
        val=6,
        start=6,
        start_positives=2,
        pool=12,
        top_k=3,
        rounds=1,
        seeds=1,
        fine_tune=True,
        training=dict(max_iters=2, img_size=64, batch_size_per_gpu=2),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="cpu")
    parser.add_argument("--work", type=Path, help="default .devkit/mining-benchmark-<setting>")
    parser.add_argument("--seeds", type=int, help="override the setting's seeds")
    parser.add_argument("--rounds", type=int, help="override the setting's rounds")
    parser.add_argument("--model", help="the model to train (default: the template's)")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per task")
    args = parser.parse_args()
    setting = SETTINGS[args.setting]
    work = args.work or Path(".devkit") / f"mining-benchmark-{args.setting}"
    training = dict(setting["training"], num_workers_per_gpu=0, background_class=True)
    training["val_interval"] = training["max_iters"]  # only the final model is measured
    if args.model:
        training["model"] = args.model
    img_man = default_img_man()
    template = load_template(img_man, "training") or {}
    default_algorithm = str((load_template(img_man, "mining") or {}).get("mining_algorithm"))
    recipe = setting["recipe"]
    settings = LoopSettings(
        top_k=setting["top_k"],
        rounds=args.rounds or setting["rounds"],
        start=setting["start"],
        start_positives=setting["start_positives"],
        val=setting["val"],
        pool=setting["pool"],
        algorithms=ALGORITHMS,
        seeds=args.seeds or setting["seeds"],
        training_params=training,
        fine_tune=setting["fine_tune"],
    )
    start_from = ", each round from the last round's model" if settings.fine_tune else ""
    print(
        f"mining benchmark, setting {args.setting}: {recipe.images} synthetic {recipe.image_size} "
        f"px images (the rare class in {recipe.rare_fraction:.0%}), classes {', '.join(CLASSES)}, "
        f"{settings.val} validation, {settings.start} start ({settings.start_positives} with "
        f"the class), pool {settings.pool}, top-k {settings.top_k}, "
        f"{settings.rounds} rounds, {settings.seeds} seed(s); model "
        f"{training.get('model', template.get('model'))}, {training['max_iters']} iterations at "
        f"img_size {training['img_size']}{start_from}; object_type {manifest_object_type(img_man)}",
        flush=True,
    )
    jobs, cores_per_job = 1, None
    if setting["one_core"]:
        jobs, cores_per_job, line = one_job_per_core(settings.seeds)
        print(line, flush=True)
    started = time.monotonic()
    folder = work.absolute().parent / f"{work.name}-data"
    dataset = load_dataset(folder, write_pool(folder, recipe), class_names=CLASSES)
    try:
        report = al_loop(
            work,
            dataset,
            settings,
            timeout=args.timeout,
            log=lambda line: print(line, flush=True),
            jobs=jobs,
            cores_per_job=cores_per_job,
        )
    except StepFailed as error:
        sys.exit(f"failed: {error}\n(the tasks before it are kept: the same command resumes)")
    for line in al_report.verdict(report, default_algorithm, GOAL):
        print(line)
    print(timing(time.monotonic() - started))


def timing(wall: float) -> str:
    """Wall time, and the CPU time of this process and every task it ran."""
    cpu = sum(
        usage.ru_utime + usage.ru_stime
        for usage in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )
    return f"time: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU"


if __name__ == "__main__":
    main()
