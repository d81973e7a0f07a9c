"""The ``cfg_options`` hyper-parameter: mmengine ``key=value`` overrides applied last.

Syntax (the one of mmengine's ``--cfg-options``), whitespace-separated pairs::

    optim_wrapper.optimizer.lr=0.001 model.test_cfg.max_per_img=50 randomness.seed=3
    train_dataloader.dataset.filter_cfg.min_size=8 some.list=[1,2] other.tuple=(1,2)

Values are ints, floats, ``true`` / ``false``, ``None``, lists ``[a,b]`` or ``a,b`` and tuples
``(a,b)``, or strings (mmengine drops spaces inside a value, so ``'key=[1, 2]'`` in quotes is
the list ``[1, 2]``). A numeric key part indexes a list (``custom_hooks.0.priority=40``).

The YMIR web UI limits a string hyper-parameter to 100 characters, so this is for a few
targeted overrides; everything the templates name (epochs, batch size, learning rate, image
size, ...) has its own key, applied before these overrides.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
from typing import Any, Mapping

from ...contract.errors import ErrorCode, ExecutorError

log = logging.getLogger(__name__)

# What the YMIR web UI accepts in a string field.
UI_MAX_LENGTH = 100
_KEY = re.compile(r"^[A-Za-z_]\w*(\.\w+)*$")


def parse_cfg_options(text: str | None) -> dict[str, Any]:
    """``"a.b=1 c=[1,2]"`` -> ``{"a.b": 1, "c": [1, 2]}`` (empty text -> ``{}``).

    Raises:
        ExecutorError: CONFIG for a pair without ``=``, a malformed key, unbalanced quotes or
            brackets, or a key given twice.
    """
    from mmengine.config import DictAction  # same value syntax as mmengine's --cfg-options

    text = (text or "").strip()
    if not text:
        return {}
    try:
        tokens = shlex.split(text)
    except ValueError as error:
        raise _error(f"{error} in {text!r}") from error
    options: dict[str, Any] = {}
    for token in tokens:
        key, separator, value = token.partition("=")
        key = key.strip()
        if not separator or not key:
            raise _error(f"{token!r} is not key=value")
        if not _KEY.match(key):
            raise _error(f"{key!r} is not a dotted config key")
        if key in options:
            raise _error(f"{key!r} is given twice")
        try:
            options[key] = DictAction._parse_iterable(value)
        except (AssertionError, ValueError, IndexError) as error:
            raise _error(f"cannot parse the value of {key!r}: {value!r}") from error
        if not _finite(options[key]):
            # The config travels as Python source (config.py), where nan / inf do not parse.
            raise _error(f"{key!r}: NaN and infinite numbers are not supported")
    return options


def apply_cfg_options(cfg: Any, options: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``cfg_options`` into an mmengine ``Config``; returns what was applied.

    An override whose first key part the config does not have is still applied (it may be
    meant, e.g. ``find_unused_parameters``) but logged, since a typo would otherwise be silent.
    """
    parsed = parse_cfg_options(options) if isinstance(options, (str, type(None))) else options
    parsed = dict(parsed or {})
    if not parsed:
        return {}
    for key in parsed:
        if key.split(".", 1)[0] not in cfg:
            log.warning("cfg_options: the config has no %r; adding it", key.split(".", 1)[0])
    try:
        cfg.merge_from_dict(parsed)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise _error(f"cannot apply {parsed}: {error}") from error
    log.info("cfg_options applied: %s", ", ".join(f"{k}={v!r}" for k, v in parsed.items()))
    return parsed


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(item) for item in value)
    return True


def _error(reason: str) -> ExecutorError:
    return ExecutorError(
        ErrorCode.CONFIG,
        f"hyper-parameter 'cfg_options': {reason}; expected space-separated key=value pairs "
        "such as 'optim_wrapper.optimizer.lr=0.001 model.test_cfg.max_per_img=50'",
    )
