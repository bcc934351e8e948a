"""Logging for the container's entry points, configured once in `train` and `serve`.

Every line has the form `[2026-01-31 12:00:00,123 INFO review_nlp.metrics] message`, so the
metric lines of the built-in algorithms (`#quality_metric: host=algo-1, epoch=3, train
total_loss <loss>=7.02`) stay whole and SageMaker's MetricDefinitions regexes find them.
"""

from __future__ import annotations

import logging
import os
import sys

LINE_FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"

# Libraries whose INFO lines would drown the job's own.
_QUIET_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3", "matplotlib", "PIL")


def configure_logging(level: str | int | None = None) -> None:
    """Send every logger's lines to stderr in LINE_FORMAT; call once, at an entry point.

    The level comes from `level`, else `SM_LOG_LEVEL` or `LOG_LEVEL`, else INFO.
    """
    if level is None:
        level = os.environ.get("SM_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO"
    if isinstance(level, str) and level.isdigit():
        level = int(level)
    if isinstance(level, str):
        level = level.upper()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LINE_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
