"""Hyper-parameter declarations: every key of the img-man templates described once, in code.

An executor declares its hyper-parameters in ``tasks/hyperparams.py``: for each key its kind
(:class:`Boolean`, :class:`Integer`, :class:`Number`, :class:`Text`, :class:`List`, or one of
named :class:`Choice` s), the range or choices allowed, the tasks whose templates have it, the
targets it applies to and its help. A key that two tasks use differently (another range, other
help) gets one declaration per task. The defaults are the img-man templates' values, and only
theirs (docs/protocol.md#templates). From the declarations come:

* the reading of config.yaml: the web UI's strings coerced, the range or choices checked, and
  one CONFIG (300001) message naming the key, the value given and what is allowed
  (:class:`.params.Params`);
* the help comment above every key of the templates and the README's hyper-parameter table
  (``python -m <package>.devkit hyperparams``, which also runs when the project is generated);
* the check that the templates and the declarations agree (:func:`disagreements`).

This module imports only the standard library and the contract layer: the template's
post-generation hook imports it.
"""

from __future__ import annotations

import math
import re
import textwrap
from typing import Any, Callable, Iterable, Mapping, Sequence

from .booleans import SPELLINGS, parse_bool
from .errors import ErrorCode, ExecutorError
from .object_types import ObjectType

TASKS = ("training", "mining", "infer")
# The ``tasks`` of a declaration, named for the declarations' readability.
TRAINING, MINING, INFER = ("training",), ("mining",), ("infer",)
PREDICTING = MINING + INFER
# When mining and inference run in one task, YMIR's web UI shows and submits the mining
# template, so its defaults and declarations win: later tasks here take precedence.
TASK_PRECEDENCE = ("training", "infer", "mining")
TARGETS = tuple(ObjectType)
# Width of the generated template comments, "# " included.
COMMENT_WIDTH = 95

# A value that could not be read as the declared kind.
_INVALID = object()


class HyperParameter:
    """One hyper-parameter: its name, where it is used, what it does and what it may be.

    Subclasses define the kind: how a value is read (:meth:`_coerce`) and what is allowed
    (:meth:`allowed`, :meth:`_in_range`).
    """

    # The Python types a template default of this kind is written as.
    default_types: tuple[type, ...] = (object,)

    def __init__(
        self,
        name: str,
        *,
        help: str,
        tasks: Sequence[str],
        targets: Sequence[int] = TARGETS,
    ) -> None:
        unknown = sorted(set(tasks) - set(TASKS)) + sorted(set(targets) - set(TARGETS))
        if unknown or not tasks or not targets:
            raise ValueError(f"{name}: tasks must be among {TASKS}, targets among {TARGETS}")
        self.name = name
        self.help = " ".join(help.split())
        self.tasks = tuple(tasks)
        self.targets = tuple(targets)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, tasks={self.tasks}, targets={self.targets})"

    def read(self, value: Any) -> Any:
        """``value`` (as config.yaml or a template gives it) typed and checked.

        Raises:
            ExecutorError: CONFIG naming the key, the value given and what is allowed.
        """
        typed = self._coerce(value)
        if typed is _INVALID or not self._in_range(typed):
            raise self.error(value)
        return typed

    def error(self, value: Any) -> ExecutorError:
        """The one message format of a bad value."""
        return ExecutorError(
            ErrorCode.CONFIG,
            f"hyper-parameter {self.name!r} must be {self.allowed()}, got {value!r}; correct it "
            f"in the task's hyper-parameters",
        )

    def allowed(self) -> str:
        """What a value may be, as a phrase: ``"an integer of 1 or more"``."""
        raise NotImplementedError

    def table_values(self) -> str:
        """The README table's "values" cell."""
        return self.allowed()

    def table_help(self) -> str:
        """The README table's "what it does" cell."""
        return self.help

    def comment(self, default: str) -> list[str]:
        """The comment lines above the key in its template (``default`` as written there)."""
        text = f"{self.help} {_sentence(self.allowed())} Default {default}."
        return _wrap(text)

    def applies_to(self, task: str, target: int) -> bool:
        return task in self.tasks and target in self.targets

    def _coerce(self, value: Any) -> Any:
        raise NotImplementedError

    def _in_range(self, value: Any) -> bool:
        return True


class Boolean(HyperParameter):
    """``true`` / ``false``, in any spelling YMIR reads (:mod:`.booleans`)."""

    default_types = (bool,)

    def allowed(self) -> str:
        return f"a boolean ({SPELLINGS})"

    def table_values(self) -> str:
        return "`true`, `false`"

    def comment(self, default: str) -> list[str]:
        return _wrap(f"{self.help} Default {default}.")

    def _coerce(self, value: Any) -> Any:
        flag = parse_bool(value)
        return _INVALID if flag is None else flag


class _Bounded(HyperParameter):
    """A number with an optional inclusive minimum / maximum (``above``: exclusive minimum)."""

    noun = "a number"

    def __init__(
        self,
        name: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        above: float | None = None,
        **declaration: Any,
    ) -> None:
        super().__init__(name, **declaration)
        self.minimum, self.maximum, self.above = minimum, maximum, above

    def allowed(self) -> str:
        low, high = self.minimum, self.maximum
        if self.above is not None:
            bounds = f"{self.noun} above {_text(self.above)}"
            return bounds if high is None else f"{bounds} and up to {_text(high)}"
        if low is not None and high is not None:
            return f"{self.noun} from {_text(low)} to {_text(high)}"
        if low is not None:
            return f"{self.noun} of {_text(low)} or more"
        if high is not None:
            return f"{self.noun} of {_text(high)} or less"
        return self.noun

    def _in_range(self, value: Any) -> bool:
        return (
            (self.minimum is None or value >= self.minimum)
            and (self.maximum is None or value <= self.maximum)
            and (self.above is None or value > self.above)
        )


class Integer(_Bounded):
    """A whole number: ``12``, ``12.0``, ``"12"`` or ``"1e3"`` (not ``12.5``, not ``true``)."""

    noun = "an integer"
    default_types = (int,)

    def _coerce(self, value: Any) -> Any:
        # bool is an int in Python, but true/false for a count is a mistake, not 1/0.
        if isinstance(value, bool):
            return _INVALID
        if isinstance(value, int):
            return value
        number: Any = value
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                number = _float(text)
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            return int(number)
        return _INVALID


class Number(_Bounded):
    """A finite number: ``0.5``, ``1`` or ``"0.5"``; read as a float."""

    default_types = (int, float)

    def allowed(self) -> str:
        bounded = (self.minimum, self.maximum, self.above) != (None, None, None)
        return super().allowed() if bounded else "a finite number"

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, bool):
            return _INVALID
        number = _float(value.strip()) if isinstance(value, str) else value
        if isinstance(number, (int, float)) and math.isfinite(number):
            return float(number)
        return _INVALID


class Text(HyperParameter):
    """A string; other scalars are read as their text (the UI may send ``16`` for ``'16'``).

    ``pattern`` (a regular expression the whole value must match) and ``meaning`` (how
    messages and comments name such a value) describe a text with a form of its own.
    """

    default_types = (str,)

    def __init__(
        self,
        name: str,
        *,
        max_length: int | None = None,
        pattern: str | None = None,
        meaning: str | None = None,
        **declaration: Any,
    ) -> None:
        super().__init__(name, **declaration)
        self.max_length = max_length
        self.pattern = re.compile(pattern) if pattern else None
        self.meaning = meaning

    def allowed(self) -> str:
        meaning = self.meaning or "a text"
        if self.max_length is None:
            return meaning
        return f"{meaning} of at most {self.max_length} characters"

    def _coerce(self, value: Any) -> Any:
        if value is None:
            return _INVALID
        return value if isinstance(value, str) else str(value)

    def _in_range(self, value: Any) -> bool:
        if self.max_length is not None and len(value) > self.max_length:
            return False
        return self.pattern is None or self.pattern.fullmatch(value.strip()) is not None


class List(HyperParameter):
    """A list: a YAML list, or the UI's text of one (``"0.1,0.2"`` or ``"[0.1, 0.2]"``)."""

    default_types = (list,)

    def allowed(self) -> str:
        return "a list such as '1,2' or '[1, 2]'"

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return list(value)
        if not isinstance(value, str):
            return _INVALID
        # Imported here: the post-generation hook, which imports this module, needs no YAML.
        import yaml

        text = value.strip()
        # The UI edits lists in a text box: "[1, 2]" is YAML, "0.1,0.2" a bare comma list.
        try:
            parsed = yaml.safe_load(text if text.startswith("[") else f"[{text}]")
        except yaml.YAMLError:
            return _INVALID
        return parsed if isinstance(parsed, list) else _INVALID


class Choice(HyperParameter):
    """One of named values, each with what it means: ``[("entropy", "..."), ...]``.

    A value matches a choice in any case and with spaces around it. ``read`` replaces that
    match where the implementation reads names its own way (e.g. ``model``: a model of another
    target is an OBJECT_TYPE error, not an unknown name); it returns the choice or raises.
    """

    default_types = (str,)

    def __init__(
        self,
        name: str,
        choices: Iterable[tuple[str, str]],
        *,
        read: Callable[[str], str] | None = None,
        **declaration: Any,
    ) -> None:
        super().__init__(name, **declaration)
        self.choices = tuple((str(value), " ".join(note.split())) for value, note in choices)
        if not self.choices:
            raise ValueError(f"{name}: a Choice needs at least one choice")
        self.reader = read

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(value for value, _note in self.choices)

    def allowed(self) -> str:
        return "one of {}".format(", ".join(repr(name) for name in self.names))

    def table_values(self) -> str:
        return ", ".join(f"`{name}`" for name in self.names)

    def table_help(self) -> str:
        notes = "; ".join(f"`{name}`: {note}" for name, note in self.choices if note)
        return f"{self.help.rstrip('.:')}: {notes}" if notes else self.help

    def comment(self, default: str) -> list[str]:
        lines = _wrap(self.help.rstrip(".:") + ":")
        width = max(len(repr(name)) for name in self.names) + 2
        for name, note in self.choices:
            lead = f"#   {name!r:<{width}}"
            lines.extend(
                textwrap.wrap(
                    note,
                    COMMENT_WIDTH,
                    initial_indent=lead,
                    subsequent_indent="#" + " " * (len(lead) - 1),
                    break_long_words=False,
                    break_on_hyphens=False,
                )
                or [lead.rstrip()]
            )
        lines.append(f"# Default {default}.")
        return lines

    def _coerce(self, value: Any) -> Any:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            return _INVALID
        text = str(value).strip()
        if self.reader is not None:
            try:
                return self.reader(text)
            except ExecutorError as error:
                if error.code != ErrorCode.CONFIG:
                    raise
                return _INVALID
        return next((name for name in self.names if name.lower() == text.lower()), _INVALID)


# The keys every executor's templates have, read by the platform itself
# (docs/protocol.md#reserved-keys); the contract declares them so that no executor has to.
_DETECTION_FORMATS = (
    ("ark:raw", "text boxes, every YMIR version (YMIR 1.1 always sends ark)"),
    ("voc:raw", "VOC xml, YMIR 2.0 and later"),
    ("seg-coco:raw", "one COCO json, YMIR 2.1 and later (the boxes are read, masks ignored)"),
    ("coco:raw", "the same COCO json, YMIR 2.5 only: older versions export no annotations"),
    ("det-ark:raw", "the same as ark:raw"),
    ("det-voc:raw", "the same as voc:raw"),
)
_SEGMENTATION_FORMATS = (
    ("seg-coco:raw", "one COCO json with masks, YMIR 2.1 and later"),
    ("coco:raw", "the same COCO json, YMIR 2.5 only: older versions export no annotations"),
)
_EXPORT_FORMAT_HELP = (
    "Annotation format YMIR exports into /in/annotations, as '<annotation>:raw', with the YMIR "
    "versions that export it"
)
_SHM_SIZE_HELP = (
    "Shared memory of the task's container, read by YMIR for `docker run --shm-size`. Raise "
    "it if data loading dies with a bus error."
)
PLATFORM_HYPERPARAMETERS: tuple[HyperParameter, ...] = (
    Choice(
        "export_format",
        _DETECTION_FORMATS,
        tasks=("training",),
        targets=(ObjectType.DETECTION,),
        help=_EXPORT_FORMAT_HELP,
    ),
    Choice(
        "export_format",
        _SEGMENTATION_FORMATS,
        tasks=("training",),
        targets=(ObjectType.SEMANTIC_SEGMENTATION, ObjectType.INSTANCE_SEGMENTATION),
        help=_EXPORT_FORMAT_HELP,
    ),
    Text(
        "shm_size",
        pattern=r"[0-9]+(\.[0-9]+)?[bBkKmMgG]?",
        meaning="a docker size such as '16G' or '64G'",
        tasks=TASKS,
        help=_SHM_SIZE_HELP,
    ),
)


def by_precedence(tasks: Iterable[str]) -> list[str]:
    """``tasks`` ordered so that a later one wins on shared keys (:data:`TASK_PRECEDENCE`):
    ``["mining", "infer"]`` -> ``["infer", "mining"]``."""
    return sorted(tasks, key=TASK_PRECEDENCE.index)


def declared_for(
    declarations: Iterable[HyperParameter], tasks: Iterable[str], target: int
) -> dict[str, HyperParameter]:
    """The declarations that apply to a run of ``tasks`` on ``target``, by key.

    The platform's own keys come first, so an executor may re-declare them; between tasks,
    :data:`TASK_PRECEDENCE` decides (mining's declaration wins over inference's).
    """
    everything = (*PLATFORM_HYPERPARAMETERS, *declarations)
    chosen: dict[str, HyperParameter] = {}
    for task in by_precedence(tasks):
        for declaration in everything:
            if declaration.applies_to(task, target):
                chosen[declaration.name] = declaration
    return chosen


def for_default(name: str, default: Any) -> HyperParameter | None:
    """How to read an undeclared key (one a user added to a template): by its default's type."""
    kinds: tuple[tuple[type, type], ...] = (
        (bool, Boolean),
        (int, Integer),
        (float, Number),
        (str, Text),
        (list, List),
    )
    for python_type, kind in kinds:
        if isinstance(default, python_type):
            return kind(name, help="", tasks=TASKS)
    return None


def disagreements(
    declarations: Sequence[HyperParameter], templates: Mapping[str, Mapping], target: int
) -> list[str]:
    """Where the templates (task -> its keys and defaults) and the declarations disagree.

    A template key without a declaration, a declaration without its key in the template of a
    task it names, a default of the wrong kind or outside the declared range or choices, and
    one key declared twice for the same task and target. Tasks without a template (not
    generated) are left out. An empty list means they agree.
    """
    problems = _declared_twice(declarations)
    for task in TASKS:
        if task not in templates:
            continue
        template = templates[task]
        declared = declared_for(declarations, [task], target)
        where = f"img-man/{task}-template.yaml"
        for key, default in template.items():
            declaration = declared.get(key)
            if declaration is None:
                problems.append(
                    f"{where}: {key!r} has no declaration; declare it in tasks/hyperparams.py "
                    f"or remove it from the template"
                )
                continue
            problem = _default_problem(declaration, default)
            if problem:
                problems.append(f"{where}: the default of {key!r} {problem}")
        for key in declared:
            if key not in template:
                problems.append(
                    f"{where}: {key!r} is declared for {task} in tasks/hyperparams.py but the "
                    f"template has no default for it; add it to the template"
                )
    return problems


def _declared_twice(declarations: Sequence[HyperParameter]) -> list[str]:
    problems = []
    seen: dict[tuple[str, str, int], HyperParameter] = {}
    for declaration in declarations:
        for task in declaration.tasks:
            for target in declaration.targets:
                key = (declaration.name, task, target)
                if key in seen:
                    problems.append(
                        f"tasks/hyperparams.py: {declaration.name!r} is declared twice for "
                        f"{task} (object_type {target}): {seen[key]!r} and {declaration!r}"
                    )
                seen[key] = declaration
    return sorted(set(problems))


def _default_problem(declaration: HyperParameter, default: Any) -> str | None:
    if isinstance(default, bool) != (bool in declaration.default_types) or not isinstance(
        default, declaration.default_types
    ):
        return f"is {default!r}, not {declaration.allowed()}"
    try:
        declaration.read(default)
    except ExecutorError:
        return f"is {default!r}, not {declaration.allowed()}"
    return None


def _float(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return _INVALID


def _text(number: float) -> str:
    return repr(number)


def _sentence(phrase: str) -> str:
    return phrase[:1].upper() + phrase[1:] + "."


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(
        text,
        COMMENT_WIDTH,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )
