"""The three algorithms by name, as the `algorithm` hyperparameter and the artifact spell them."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import InvalidHyperparameter

# algorithm name -> (module, config class, model class); imported on first use so that
# serving a k-means model never imports the topic model's dependencies.
ALGORITHMS: dict[str, tuple[str, str, str]] = {
    "ntm": ("review_nlp.models.ntm", "NTMConfig", "NeuralTopicModel"),
    "kmeans": ("review_nlp.models.kmeans", "KMeansConfig", "KMeans"),
    "rating": ("review_nlp.models.rating", "RatingConfig", "RatingClassifier"),
}


def _lookup(algorithm: str, position: int) -> Any:
    if algorithm not in ALGORITHMS:
        raise InvalidHyperparameter("algorithm", algorithm, f"must be one of {sorted(ALGORITHMS)}")
    module_name, *names = ALGORITHMS[algorithm]
    return getattr(importlib.import_module(module_name), names[position])


def config_class(algorithm: str) -> type:
    return _lookup(algorithm, 0)


def model_class(algorithm: str) -> type:
    return _lookup(algorithm, 1)
