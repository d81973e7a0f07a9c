"""``infer-result.json`` as the platform imports it (docs/protocol.md#infer-result): boxes for
detection (:mod:`.detection`), COCO masks for segmentation (:mod:`.segmentation`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from .detection import check_detection
from .findings import Finding, finding
from .inputs import ImageSizes
from .segmentation import check_segmentation


def verify_infer(
    out_dir: Path,
    candidates: Sequence[str],
    class_names: Sequence[str],
    object_type: int,
    legacy: bool,
    result_file: Path | None = None,
) -> list[Finding]:
    """Check ``infer-result.json`` for detection (2) or segmentation (3, 4).

    See docs/protocol.md#infer-result.

    ``candidates`` are the candidate image paths; images that exist locally are opened (header
    only) to check boxes and mask sizes against the real image size.
    """
    path = Path(result_file) if result_file is not None else Path(out_dir) / "infer-result.json"
    if not path.is_file():
        return [finding("INF001", f"{path} is missing")]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return [finding("INF002", f"{path}: {error}")]
    known = {str(name).strip().lower() for name in class_names}
    sizes = ImageSizes(candidates)
    names = [os.path.basename(str(candidate)) for candidate in candidates]
    if object_type == 2:
        return check_detection(path, data, names, known, legacy, sizes)
    return check_segmentation(path, data, names, known, object_type, sizes)
