"""The active-learning loop's report: a JSON file, tables and a plot of metric vs labelled images.

Per round and algorithm it gives the main metric and its value at IoU 0.5 (:data:`.al_scoring.
METRICS`) as the mean and standard deviation over the seeds, and the difference to ``random``
paired by seed (each seed's algorithm minus the same seed's random, then mean and standard
deviation): random and the algorithm share a seed's start set, pool and start model, so the
paired difference is what mining changed. The one-round enrichment of each algorithm's first
top-k is summarised the same way. The plot is drawn with Pillow, which the executor depends on
anyway: no plotting library is needed.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..contract.atomic import write_bytes_atomic, write_text_atomic
from ..contract.object_types import ObjectType
from .al_scoring import METRICS

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOT_PNG = "curve.png"
RANDOM = "random"
# Line colours of the plot, one per algorithm in report order (random first, in grey).
COLOURS = [(110, 110, 110), (31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
COLOURS += [(255, 127, 14), (140, 86, 75), (227, 119, 194), (23, 190, 207)]


def build_report(
    object_type: int,
    class_names: Sequence[str],
    rare_class: int,
    settings: dict[str, Any],
    runs: dict[int, dict[str, list[dict]]],
    enrichment: dict[int, dict[str, dict]],
) -> dict[str, Any]:
    """Everything measured so far and its summary over the seeds, JSON-ready.

    ``runs``: seed -> algorithm -> one ``{"round", "labelled", "metrics"}`` per finished round;
    ``enrichment``: seed -> algorithm -> :func:`.al_scoring.enrichment` of its first top-k.
    """
    main, at_50 = METRICS[ObjectType(object_type)]
    algorithms = list(next(iter(runs.values()), {}))
    summary: dict[str, list[dict]] = {}
    for algorithm in algorithms:
        rows = []
        # rounds that every seed has finished
        finished = min(len(runs[seed][algorithm]) for seed in runs)
        for position in range(finished):
            entries = [runs[seed][algorithm][position] for seed in runs]
            row: dict[str, Any] = {"round": entries[0]["round"], "labelled": entries[0]["labelled"]}
            for name in dict.fromkeys((at_50, main)):
                values = [entry["metrics"][name] for entry in entries]
                row[name] = _stats(values)
                if algorithm != RANDOM and RANDOM in algorithms:
                    baseline = [runs[seed][RANDOM][position]["metrics"][name] for seed in runs]
                    row[f"{name}_vs_random"] = _stats([a - b for a, b in zip(values, baseline)])
            rows.append(row)
        summary[algorithm] = rows
    enrichment_summary = {}
    for algorithm in algorithms:
        measured = [
            enrichment[seed][algorithm] for seed in enrichment if algorithm in enrichment[seed]
        ]
        if measured:
            enrichment_summary[algorithm] = {
                key: _stats([m[key] for m in measured if m[key] is not None])
                for key in ("missed", "rare")
            }
    return {
        "object_type": object_type,
        "metric": main,
        "metric_50": at_50,
        "class_names": list(class_names),
        "rare_class": class_names[rare_class],
        "settings": json.loads(json.dumps(settings)),  # as report.json reads back
        "seeds": sorted(runs),
        "algorithms": algorithms,
        "runs": {str(seed): runs[seed] for seed in sorted(runs)},
        "enrichment": {str(seed): enrichment[seed] for seed in sorted(enrichment)},
        "summary": summary,
        "enrichment_summary": enrichment_summary,
    }


def _stats(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    if not values:
        return {"mean": None, "std": None, "values": []}
    mean = sum(values) / len(values)
    spread = (
        math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        if len(values) > 1
        else 0.0
    )
    return {"mean": mean, "std": spread, "values": values}


# --- text ------------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    """The report's tables as Markdown (also readable as plain text)."""
    seeds = len(report["seeds"])
    settings = report["settings"]
    lines = [
        f"# Active learning: {', '.join(report['algorithms'])}",
        "",
        f"{seeds} seed(s); top_k {settings['top_k']} per round; validation on "
        f"{settings['val']} held-out images; mean ± standard deviation over the seeds, "
        "differences to random paired by seed.",
    ]
    for name in dict.fromkeys((report["metric_50"], report["metric"])):
        lines += ["", f"## {name}", ""]
        lines += _metric_table(report, name)
    if report["enrichment_summary"]:
        lines += [
            "",
            "## One-round enrichment of the first top-k (start model)",
            "",
            "Share of what the start model misses in the pool (each object counts 1 - the "
            "score of its best same-class prediction with IoU >= 0.5), and of the objects of "
            f"the rarest class '{report['rare_class']}', that the top-k holds, over the share a "
            "random pick gets on average (1.00).",
            "",
            "| algorithm | missed objects | rare class |",
            "| --- | --- | --- |",
        ]
        for algorithm, values in report["enrichment_summary"].items():
            cells = [_mean_std(values[key], "{:.2f}") for key in ("missed", "rare")]
            lines.append(f"| {algorithm} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def verdict(report: dict[str, Any], default_algorithm: str, goal: float) -> list[str]:
    """Does mining beat random? One line per algorithm, then the best one against ``goal``
    and whether the template's default algorithm is the one that measures best.

    Judged on the metric at IoU 0.5 after the last round every seed finished, as the mean of
    the paired differences to random.
    """
    name = report["metric_50"]
    gains = {}
    for algorithm, rows in report["summary"].items():
        if algorithm != RANDOM and rows and f"{name}_vs_random" in rows[-1]:
            gains[algorithm] = (rows[-1]["round"], rows[-1][f"{name}_vs_random"])
    if not gains:
        return ["no algorithm but random has finished a round"]
    lines = [
        f"{algorithm} vs random after round {last}: {name} {_mean_std(stats, '{:+.3f}')}"
        for algorithm, (last, stats) in gains.items()
    ]
    best = max(gains, key=lambda algorithm: gains[algorithm][1]["mean"])
    last, stats = gains[best]
    reached = "reached" if stats["mean"] >= goal else "NOT reached"
    lines.append(
        f"best: {best}, {stats['mean']:+.3f} {name} over random after round {last} "
        f"(goal +{goal:.2f}): {reached}"
    )
    if default_algorithm == best:
        lines.append(f"the default mining_algorithm '{default_algorithm}' measures best")
    else:
        lines.append(
            f"the default mining_algorithm '{default_algorithm}' does NOT measure best "
            f"('{best}' does)"
        )
    return lines


def _metric_table(report: dict[str, Any], name: str) -> list[str]:
    summary = report["summary"]
    rounds = max((len(rows) for rows in summary.values()), default=0)
    if not rounds:
        return ["(no round finished yet)"]
    reference = max(summary.values(), key=len)
    header = ["algorithm"] + [
        f"round {row['round']} ({row['labelled']} images)" for row in reference
    ]
    header.append("last round vs random")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for algorithm, rows in summary.items():
        cells = [_mean_std(row[name], "{:.3f}") for row in rows]
        cells += [""] * (rounds - len(rows))
        last = rows[-1].get(f"{name}_vs_random") if rows else None
        cells.append(_mean_std(last, "{:+.3f}") if last else "")
        lines.append(f"| {algorithm} | " + " | ".join(cells) + " |")
    return lines


def _mean_std(stats: dict[str, Any] | None, fmt: str) -> str:
    if not stats or stats["mean"] is None:
        return "n/a"
    return f"{fmt.format(stats['mean'])} ± {stats['std']:.3f}"


# --- files -----------------------------------------------------------------------------------


def write_report(report: dict[str, Any], folder: Path) -> None:
    """``report.json``, ``report.md`` and ``curve.png`` in ``folder``, each written atomically."""
    write_text_atomic(folder / REPORT_JSON, json.dumps(report, indent=1) + "\n")
    write_text_atomic(folder / REPORT_MD, format_report(report))
    write_bytes_atomic(folder / PLOT_PNG, plot_png(report))


def plot_png(report: dict[str, Any], width: int = 800, height: int = 520) -> bytes:
    """A PNG of the metric at IoU 0.5 vs labelled images: one curve per algorithm, the mean
    over the seeds with a bar of one standard deviation at every round."""
    name = report["metric_50"]
    curves = {
        algorithm: [(row["labelled"], row[name]["mean"], row[name]["std"]) for row in rows]
        for algorithm, rows in report["summary"].items()
        if rows
    }
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 70, width - 20, 40, height - 50
    draw.text(
        (left, 12), f"{name} on the validation set vs labelled images", fill="black", font=font
    )
    points = [(x, y, s) for curve in curves.values() for x, y, s in curve]
    if not points:
        draw.text((left, top + 20), "no round finished yet", fill="black", font=font)
    else:
        x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
        y_low = min(p[1] - p[2] for p in points)
        y_high = max(p[1] + p[2] for p in points)
        margin = max(0.02, (y_high - y_low) * 0.1)
        y_low, y_high = max(0.0, y_low - margin), min(1.0, y_high + margin)
        x_span = max(1, x_high - x_low)
        y_span = max(1e-6, y_high - y_low)

        def at(x: float, y: float) -> tuple[float, float]:
            return (
                left + (x - x_low) / x_span * (right - left),
                bottom - (y - y_low) / y_span * (bottom - top),
            )

        draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
        for step in range(6):
            value = y_low + y_span * step / 5
            _, y = at(x_low, value)
            draw.line([(left - 4, y), (left, y)], fill="black")
            draw.text((8, y - 6), f"{value:.3f}", fill="black", font=font)
        for x_value in sorted({p[0] for p in points}):
            x, _ = at(x_value, y_low)
            draw.line([(x, bottom), (x, bottom + 4)], fill="black")
            draw.text((x - 10, bottom + 8), str(x_value), fill="black", font=font)
        draw.text((right - 120, bottom + 26), "labelled images", fill="black", font=font)
        for number, (algorithm, curve) in enumerate(curves.items()):
            colour = COLOURS[number % len(COLOURS)]
            xy = [at(x, y) for x, y, _ in curve]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for (x, y, spread), (px, py) in zip(curve, xy):
                _, upper = at(x, y + spread)
                _, lower = at(x, y - spread)
                draw.line([(px, upper), (px, lower)], fill=colour)
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
            legend_y = top + 4 + 16 * number
            draw.line([(left + 12, legend_y + 6), (left + 32, legend_y + 6)], fill=colour, width=2)
            draw.text((left + 38, legend_y), algorithm, fill=colour, font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def contact_sheet(
    images: Sequence[tuple[Path, Sequence[tuple[int, Sequence[float]]]]],
    class_names: Sequence[str],
    thumb: int = 96,
    columns: int = 10,
) -> bytes:
    """A PNG of thumbnails with their ground-truth boxes outlined, one colour per class:
    ``images`` are ``(image file, [(class_id, (x, y, w, h)), ...])``, e.g. a mining top-k, to
    see what an algorithm picks."""
    rows = max(1, math.ceil(len(images) / columns))
    legend = 16
    sheet = Image.new("RGB", (columns * thumb, rows * thumb + legend), "white")
    draw = ImageDraw.Draw(sheet)
    for number, (path, boxes) in enumerate(images):
        with Image.open(path) as source:
            picture = source.convert("RGB")
        scale = thumb / float(max(picture.size))
        picture = picture.resize(
            (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        )
        left, top = (number % columns) * thumb, (number // columns) * thumb
        sheet.paste(picture, (left, top))
        for class_id, (x, y, w, h) in boxes:
            colour = COLOURS[(class_id + 1) % len(COLOURS)]
            box = [left + x * scale, top + y * scale, left + (x + w) * scale, top + (y + h) * scale]
            draw.rectangle(box, outline=colour, width=2)
    font = ImageFont.load_default()
    x = 4
    for class_id, name in enumerate(class_names):
        draw.text(
            (x, rows * thumb + 2), name, fill=COLOURS[(class_id + 1) % len(COLOURS)], font=font
        )
        x += 8 * len(name) + 16
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    return buffer.getvalue()
