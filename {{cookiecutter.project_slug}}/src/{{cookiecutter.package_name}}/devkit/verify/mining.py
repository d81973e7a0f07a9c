"""Mining's ``result.tsv`` as the platform reads it (docs/protocol.md#mining-result)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

from .findings import Finding, finding

ASSET_HASH_RE = re.compile(r"^[0-9a-f]{40}$")


def verify_mining(
    out_dir: Path, candidates: Sequence[str], result_file: Path | None = None
) -> list[Finding]:
    """Check ``result.tsv``: each candidate once, as given, sorted by descending score.

    See docs/protocol.md#mining-result.
    """
    path = Path(result_file) if result_file is not None else Path(out_dir) / "result.tsv"
    if not path.is_file():
        return [finding("MIN001", f"{path} is missing (platform: 'Cannot find result file')")]
    findings: list[Finding] = []
    wanted = [str(candidate) for candidate in candidates]
    wanted_set = set(wanted)
    seen: dict[str, int] = {}
    previous: float | None = None
    sorted_ok = True
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = line.split("\t")
        if len(fields) != 2:
            findings.append(finding("MIN002", f"{where}: {line!r} must be '<path>\\t<score>'"))
            continue
        candidate, score_text = fields
        try:
            score = float(score_text)
        except ValueError:
            score = float("nan")
        if not math.isfinite(score):
            findings.append(
                finding("MIN003", f"{where}: score {score_text!r} is not a finite number")
            )
        else:
            if previous is not None and score > previous and sorted_ok:
                sorted_ok = False
                findings.append(
                    finding(
                        "MIN007",
                        f"{where}: score {score} follows {previous}; the platform takes "
                        "the first top-k lines, so sort descending",
                    )
                )
            previous = score
        if candidate not in wanted_set:
            findings.append(
                finding(
                    "MIN004",
                    f"{where}: {candidate!r} is not a candidate path as given in the index",
                )
            )
        elif candidate in seen:
            findings.append(
                finding("MIN005", f"{where}: {candidate!r} already on line {seen[candidate]}")
            )
        else:
            seen[candidate] = number
    for candidate in wanted:
        if candidate not in seen:
            findings.append(finding("MIN006", f"{path}: candidate {candidate!r} is missing"))
    odd = [
        name
        for name in wanted
        if not ASSET_HASH_RE.match(os.path.splitext(os.path.basename(name))[0])
    ]
    if odd:
        findings.append(
            finding(
                "MIN008",
                f"{path}: {len(odd)} candidate name(s) such as {odd[0]!r} are not "
                "<sha1>.<ext>; the platform maps results by that "
                "stem",
            )
        )
    return findings
