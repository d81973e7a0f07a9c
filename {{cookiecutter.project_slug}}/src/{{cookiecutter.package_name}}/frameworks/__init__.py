"""Reference model implementations behind the task functions (the generated project keeps one).

Each sub-package wraps one framework (``mmdetection``, ``mmsegmentation``) and exposes what its
``tasks/<task>.py`` calls; ``openmmlab`` holds what they share (checkpoint trust, hooks,
multi-process launch, failure mapping, ``cfg_options`` parsing). Unlike ``contract/``, these
modules import torch and the OpenMMLab packages.

Importing this package first makes sure the libraries below have writable cache folders: YAPF
(used by mmengine's config printing) writes a grammar cache on import, matplotlib (imported by
the visualizers) a font cache, torch and mmengine their hub folders, all under ``$HOME`` by
default. On the platform the image runs as an arbitrary uid whose ``HOME`` the Dockerfile sets;
anywhere ``HOME`` is missing or read-only (a local devkit run, an image without that setting),
they go to a per-user folder in the temp directory instead of failing or writing elsewhere.
"""

from __future__ import annotations

import os
import tempfile

_CACHE_VARIABLES = (
    ("XDG_CACHE_HOME", "cache"),
    ("XDG_CONFIG_HOME", "config"),
    ("MPLCONFIGDIR", "matplotlib"),
    ("TORCH_HOME", "torch"),
    ("MMENGINE_HOME", "mmengine"),
)


def _writable_caches() -> None:
    home = os.environ.get("HOME") or ""
    if home and os.path.isdir(home) and os.access(home, os.W_OK | os.X_OK):
        return
    uid = os.getuid() if hasattr(os, "getuid") else 0
    base = os.path.join(tempfile.gettempdir(), f"ymir-executor-{uid}")
    for variable, folder in _CACHE_VARIABLES:
        os.environ.setdefault(variable, os.path.join(base, folder))


_writable_caches()
