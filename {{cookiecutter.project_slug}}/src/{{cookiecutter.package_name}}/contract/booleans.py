"""The one reading of a boolean in this project: env.yaml's run flags, hyper-parameters, the devkit.

The reference is the platform's own: YMIR's controller reads a boolean of the executor config
(``openpai_enable``) as ``distutils.util.strtobool(str(value))``
(``TaskBaseInvoker.gen_executor_config_lock_gpus`` in IndustryEssentials/ymir's
``ymir/backend/src/ymir_controller/controller/invoker/invoker_task_base.py``), and the web UI
sends every edited boolean back as text such as ``"False"``
(docs/protocol.md#web-ui-quirks). So the words are strtobool's, in any case: ``y``, ``yes``,
``t``, ``true``, ``on``, ``1`` and ``n``, ``no``, ``f``, ``false``, ``off``, ``0``. Two tolerances
on top: surrounding spaces are ignored, and the numbers 0 and 1 (YAML's ``0`` / ``1.0``) count.
"""

from __future__ import annotations

from typing import Any

TRUE_WORDS = ("true", "t", "yes", "y", "on", "1")
FALSE_WORDS = ("false", "f", "no", "n", "off", "0")
# How error messages name what is accepted.
SPELLINGS = "true/false, yes/no, on/off or 1/0"


def parse_bool(value: Any) -> bool | None:
    """``True`` / ``False`` for a boolean as YMIR and its web UI spell it; ``None`` otherwise.

    ``None`` (not an exception) lets each caller say what is wrong in its own terms.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return None
