"""Executor error codes and the one exception type that carries them.

YMIR (>= 2.3) shows ``state_code`` from ``monitor.txt`` to the user, so every failure the
executor can explain is raised as :class:`ExecutorError` with one of these codes. Anything else
is an unexpected exception: the top level writes monitor state 4 without a code and the
platform reports its generic container error (160004). The codes, and the platform's own codes
an executor can cause: docs/protocol.md#error-codes.
"""

import enum


class ErrorCode(enum.IntEnum):
    """The executor codes of the YMIR SDK (``ymir_exc/code.py``), as the web UI knows them."""

    CONFIG = 300001
    DATASET = 300002
    IMAGE = 300003
    MODEL = 300004
    OBJECT_TYPE = 300005
    CUDA_GPU = 300101
    NO_GPU = 300102
    OUT_OF_MEMORY = 300103
    NAN = 300201
    NETWORK = 300301


class ExecutorError(Exception):
    """A failure with a known cause: the message is shown to the user as the last log line."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name} ({int(self.code)}): {self.message}"
