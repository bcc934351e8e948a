"""MetricDefinitions for the container's log lines, for the launcher to pass to CreateTrainingJob.

SageMaker scans the training log with each definition's regex and records the first capture
group as the metric's value. The lines come from `review_nlp.models.training`:

    #quality_metric: host=algo-1, epoch=3, train total_loss <loss>=7.0219
    #quality_metric: host=algo-1, test msd <loss>=0.9271
    #throughput_metric: host=algo-1, train throughput=3278.25 records/second

Names follow the built-ins' tuning objectives: `<channel>:<metric>`, e.g. `validation:total_loss`
(NTM) and `test:msd` (K-Means).
"""

from __future__ import annotations

import re

from ..errors import InvalidHyperparameter

CHANNELS = ("train", "validation", "test", "topics")

# Metric names each algorithm logs per channel through log_quality_metric. NTM's `topics`
# channel carries topic uniqueness (tu) and, when a vocabulary is given, word-embedding topic
# coherence (wetc). K-means logs each of its eval_metrics for the validation and test channels.
QUALITY_METRICS: dict[str, dict[str, tuple[str, ...]]] = {
    "ntm": {
        "train": ("total_loss",),
        "validation": ("total_loss",),
        "test": ("total_loss", "perplexity", "npmi"),
        "topics": ("tu", "wetc"),
    },
    "kmeans": {
        "train": ("msd",),
        "validation": ("msd", "ssd"),
        "test": ("msd", "ssd"),
    },
    "rating": {
        "train": ("loss",),
        "validation": ("loss", "accuracy", "mae", "macro_f1"),
        "test": ("loss", "accuracy", "mae", "macro_f1"),
    },
}

_NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan))"
_QUALITY_PREFIX = r"#quality_metric: host=\S+(?:, epoch=\d+)?, "


def quality_metric_regex(channel: str, name: str) -> str:
    return rf"{_QUALITY_PREFIX}{re.escape(channel)} {re.escape(name)} <loss>={_NUMBER}"


# NTM logs the validation loss of every epoch as the built-in does (`#validation_score (3):
# 7.13`) and the best epoch's as a quality metric line; validation:total_loss takes both.
NTM_VALIDATION_LOSS_REGEX = (rf"(?:{_QUALITY_PREFIX}validation total_loss <loss>="
                             rf"|#validation_score \(\d+\): ){_NUMBER}")

THROUGHPUT_REGEX = rf"#throughput_metric: host=\S+, train throughput={_NUMBER} records/second"


def metric_definitions(algorithm: str) -> list[dict[str, str]]:
    """Return [{"Name": "validation:total_loss", "Regex": ...}, ...] for `algorithm`."""
    if algorithm not in QUALITY_METRICS:
        raise InvalidHyperparameter("algorithm", algorithm,
                                    f"must be one of {sorted(QUALITY_METRICS)}")
    definitions = []
    for channel in CHANNELS:
        for name in QUALITY_METRICS[algorithm].get(channel, ()):
            regex = quality_metric_regex(channel, name)
            if (algorithm, channel, name) == ("ntm", "validation", "total_loss"):
                regex = NTM_VALIDATION_LOSS_REGEX
            definitions.append({"Name": f"{channel}:{name}", "Regex": regex})
    definitions.append({"Name": "train:throughput", "Regex": THROUGHPUT_REGEX})
    return definitions
