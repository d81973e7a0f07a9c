"""Check an executor's files against the YMIR platform's own rules, without docker.

The platform parses ``monitor.txt``, ``result.yaml``, ``infer-result.json`` and ``result.tsv``
with code that fails a task (or silently drops results) on details that are easy to get wrong:
a float box coordinate, a percent written as 55, a stage file in the wrong folder, a mining
file sorted the wrong way. The checks here re-implement those parsers (docs/protocol.md#outputs,
docs/protocol.md#img-man) and the stricter rules of a good verifier
(docs/protocol.md#devkit-checks), so the mistakes show up on a developer's machine instead of in
a failed YMIR task.

One module per output kind:

- :mod:`.findings`: every check (``CHECKS``: id, severity, platform code), findings, the report;
- :mod:`.img_man`: ``manifest.yaml`` and the templates (:func:`verify_static`);
- :mod:`.monitor`: ``monitor.txt`` (:func:`verify_monitor`);
- :mod:`.training`: ``result.yaml``, model files and TensorBoard events (:func:`verify_training`);
- :mod:`.infer`, :mod:`.detection`, :mod:`.segmentation`: ``infer-result.json`` per target
  (:func:`verify_infer`);
- :mod:`.mining`: ``result.tsv`` (:func:`verify_mining`);
- :mod:`.failure`: a run's outcome and the failure protocol (:func:`run_outcome`,
  :func:`verify_failure`);
- :mod:`.work_dir`: a task's ``in/`` + ``out/`` with the checks it calls for
  (:func:`verify_work_dir`);
- :mod:`.inputs`, :mod:`.values`: what they all read (env.yaml's paths and protocol, the
  candidate index, image sizes) and the platform's notion of a number.

``verify_work_dir`` reads the run's outcome from ``monitor.txt`` as the platform does: state 4
(or a monitor the executor never wrote) is a failed run, checked against the failure protocol
(state 4 with an executor code, a one-line reason as the log's last line, no half-written
result); anything else is checked as a success.
"""

from .failure import RunOutcome, run_outcome, verify_failure
from .findings import (
    CHECKS,
    PLATFORM_FATAL,
    SEVERITIES,
    VERIFIER_FATAL,
    WARNING,
    Check,
    Finding,
    format_findings,
    has_errors,
)
from .img_man import verify_static
from .infer import verify_infer
from .mining import verify_mining
from .monitor import verify_monitor
from .training import verify_training
from .work_dir import verify_work_dir

__all__ = [
    "CHECKS",
    "PLATFORM_FATAL",
    "SEVERITIES",
    "VERIFIER_FATAL",
    "WARNING",
    "Check",
    "Finding",
    "RunOutcome",
    "format_findings",
    "has_errors",
    "run_outcome",
    "verify_failure",
    "verify_infer",
    "verify_mining",
    "verify_monitor",
    "verify_static",
    "verify_training",
    "verify_work_dir",
]
