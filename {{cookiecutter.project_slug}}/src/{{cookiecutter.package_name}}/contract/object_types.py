"""The targets YMIR knows, as the ``object_type`` integers its files carry.

One :class:`ObjectType` per target, with everything that depends on it: the name people read,
the main metric a training reports (the one the platform ranks model stages by), and the form
of the inference result. It is an ``IntEnum``, so it compares and serialises as the platform's
integer (``ObjectType.DETECTION == 2``, ``json.dumps`` writes ``2``, and so does PyYAML once
this module is imported: the platform's files never carry a Python tag).
"""

from __future__ import annotations

import enum

try:
    import yaml
except ImportError:  # the image build's weights stage lists the models with a bare python3
    yaml = None


class ObjectType(enum.IntEnum):
    """``object_type`` of ``manifest.yaml``, ``config.yaml`` and the model packages."""

    DETECTION = 2
    SEMANTIC_SEGMENTATION = 3
    INSTANCE_SEGMENTATION = 4

    def __str__(self) -> str:
        # The platform's integer, on every Python (before 3.11 str() gave "ObjectType.X").
        return str(self.value)

    @property
    def title(self) -> str:
        """How people call it: "detection", "semantic segmentation", ..."""
        return self.name.lower().replace("_", " ")

    @property
    def main_metric(self) -> str:
        """The metric the platform ranks model stages by (docs/protocol.md#training-result)."""
        return _MAIN_METRICS[self]

    @property
    def segmentation(self) -> bool:
        """Masks rather than boxes: semantic or instance segmentation."""
        return self is not ObjectType.DETECTION

    @property
    def result_format(self) -> str:
        """The form of ``infer-result.json`` (docs/protocol.md#infer-result): boxes per image
        under ``detection``, or a COCO document with compressed-RLE masks."""
        return "coco-rle" if self.segmentation else "boxes"

    @classmethod
    def names(cls) -> str:
        """ "2 (detection), 3 (semantic segmentation) or 4 (instance segmentation)"."""
        parts = [f"{member.value} ({member.title})" for member in cls]
        return ", ".join(parts[:-1]) + " or " + parts[-1]


_MAIN_METRICS = {
    ObjectType.DETECTION: "mAP",
    ObjectType.SEMANTIC_SEGMENTATION: "mIoU",
    ObjectType.INSTANCE_SEGMENTATION: "maskAP",
}


def _represent(dumper: yaml.BaseDumper, value: ObjectType) -> yaml.Node:
    return dumper.represent_int(int(value))


if yaml is not None:
    # Both dumpers: mir writes config.yaml with yaml.dump, the result writers use safe_dump.
    for _dumper in (yaml.SafeDumper, yaml.Dumper):
        yaml.add_representer(ObjectType, _represent, Dumper=_dumper)
