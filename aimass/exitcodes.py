"""Exit codes of `aimass train`, which scripts and the operator rely on.

The operator reads them from a terminated worker: codes below 128 that mean "the input is wrong"
are permanent (a restart would fail the same way); the rest are retried up to backoffLimit.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # An unexpected error while training: retried.
    TRAINING_FAILED = 1
    # The TrainingJob does not validate, the command line is wrong, the model does not fit the
    # spec, or a checkpoint does not fit the model: permanent.
    INVALID_SPEC = 2
    # The dataset is missing, has fewer than two classes, an empty class, or no images: permanent.
    DATASET_ERROR = 3
    # S3 could not be reached or refused the credentials: retried.
    STORAGE_ERROR = 4
    # Interrupted (Ctrl-C or SIGTERM) after writing a checkpoint it can resume from: retried.
    INTERRUPTED = 130


PERMANENT = frozenset({ExitCode.INVALID_SPEC, ExitCode.DATASET_ERROR})


def is_retryable(code: int) -> bool:
    """Whether a worker that exited with `code` is worth restarting."""
    return code != ExitCode.OK and code not in PERMANENT
