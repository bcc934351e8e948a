"""The failure file and exit codes that tell SageMaker how a training job ended.

SageMaker marks a job Failed on a non-zero exit and shows the first 1,024 characters of
/opt/ml/output/failure as its FailureReason. So the file starts with one sentence saying what
the user must change, and for internal errors the traceback follows it.

Exit codes:
    0    training finished and the model is written
    1    user error (bad hyperparameter, bad data, wrong channel): fix the job and rerun it
    2    internal error (a bug, or a failure of the machine): the failure file has the traceback
    3    out of memory: use a larger instance type or a smaller mini_batch_size
    143  stopped by SIGTERM (StopTrainingJob, spot interruption) after saving a checkpoint;
         128 + 15, the code a shell reports for a process ended by SIGTERM
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write_text

logger = logging.getLogger(__name__)

EXIT_SUCCESS = 0
EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_STOPPED = 143

# SageMaker's FailureReason keeps this many characters of the failure file.
FAILURE_REASON_LIMIT = 1024
_HEADLINE_LIMIT = 900


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    # torch.cuda.OutOfMemoryError and CPU allocator failures surface as RuntimeError.
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def classify(error: BaseException) -> int:
    if isinstance(error, UserError):
        return EXIT_USER_ERROR
    if _is_out_of_memory(error):
        return EXIT_OUT_OF_MEMORY
    return EXIT_INTERNAL_ERROR


def failure_message(error: BaseException) -> str:
    """Return the failure file's text: the sentence for the user first, then detail."""
    code = classify(error)
    detail = str(error).strip() or type(error).__name__
    if len(detail) > _HEADLINE_LIMIT:
        detail = detail[:_HEADLINE_LIMIT] + "..."
    if code == EXIT_USER_ERROR:
        return f"{detail}\n"
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    if code == EXIT_OUT_OF_MEMORY:
        headline = (f"Training ran out of memory ({type(error).__name__}: {detail}); "
                    f"use an instance type with more memory or lower mini_batch_size.")
    else:
        headline = (f"Training failed with an internal error ({type(error).__name__}: "
                    f"{detail}); this is a bug in review_nlp or a failure of the instance, "
                    f"so report it with the traceback below.")
    return f"{headline}\n\n{trace}"


def write_failure(path: str | os.PathLike, error: BaseException) -> int:
    """Write the failure file unless one exists; return the exit code for `error`.

    The first failure is the one to report, as the SageMaker training toolkit does: a later
    error while shutting down must not replace it.
    """
    target = Path(path)
    code = classify(error)
    message = failure_message(error)
    if target.exists():
        logger.error("Not overwriting existing failure file %s", target)
    else:
        try:
            atomic_write_text(target, message)
        except OSError as write_error:
            logger.error("Could not write failure file %s: %s", target, write_error)
    logger.error("Reporting training FAILURE (exit code %d): %s", code,
                 message.splitlines()[0] if message else type(error).__name__)
    return code
