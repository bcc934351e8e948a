"""Hyperparameters: SageMaker's string map turned into an algorithm's typed config dataclass.

hyperparameters.json contains strings only, and each client writes them differently:

- `str()` of the value (SDK v2 built-ins and generic Estimator): "20", "True", "Inf",
  "[100, 50]", "['msd', 'ssd']";
- `json.dumps` of the value (SDK v2 script mode since 2.110, SDK v3): "true", "\"adam\"";
- what a user typed: "100,50", "auto".

Each value is parsed by the annotation of the config field with the same name: `int`,
`float`, `bool`, `str`, `int | str` and `list[int] | str` (the `str` being "auto"),
`list[int]`, `list[str]`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import types
import typing
from typing import Any, Mapping

from ..errors import InvalidHyperparameter, UserError
from ..models import registry

logger = logging.getLogger(__name__)

ALGORITHM_KEY = "algorithm"
AUTO = "auto"

# Keys the built-in algorithms accept but which change nothing here: the SDK's KMeans always
# sends force_dense="True" because the built-in needs it to fit on Record objects.
BUILT_IN_KEYS_WITHOUT_EFFECT = {"force_dense"}

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_LIST_ITEM_NAMES = {int: "integers", float: "numbers", bool: "true/false values", str: "strings"}


def is_platform_key(name: str) -> bool:
    """SageMaker's own keys: `_tuning_objective_metric`, `_kvstore`, `sagemaker_program`, ..."""
    return name.startswith("_") or name.startswith("sagemaker_")


def unquote(text: str) -> str:
    """Undo the JSON quoting of SDK v2 script mode and SDK v3 (`"\\"adam\\""` -> `adam`)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(decoded, str):
            return decoded.strip()
    return text


def choose_algorithm(raw: Mapping[str, str]) -> str:
    """Return the `algorithm` hyperparameter, or the one algorithm the other names fit.

    Jobs written for the built-in NTM or K-Means send no `algorithm`; their `num_topics` or
    `k` identifies the algorithm, so such jobs run unchanged.
    """
    if ALGORITHM_KEY in raw:
        algorithm = unquote(raw[ALGORITHM_KEY]).lower()
        registry.config_class(algorithm)  # raises InvalidHyperparameter naming the choices
        return algorithm

    names = {name for name in raw if not is_platform_key(name)} - BUILT_IN_KEYS_WITHOUT_EFFECT
    candidates = []
    for algorithm in sorted(registry.ALGORITHMS):
        fields = {f.name for f in dataclasses.fields(registry.config_class(algorithm))}
        if names <= fields and required_fields(registry.config_class(algorithm)) <= names:
            candidates.append(algorithm)
    if len(candidates) == 1:
        logger.info("No `algorithm` hyperparameter; the names given fit %s only", candidates[0])
        return candidates[0]
    raise InvalidHyperparameter(
        ALGORITHM_KEY, None,
        f"is required: set algorithm to one of {sorted(registry.ALGORITHMS)}")


def required_fields(config_class: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


def build_config(config_class: type, raw: Mapping[str, str], algorithm: str) -> Any:
    """Parse `raw` into `config_class`; unknown and missing names are rejected by name.

    Range and choice checks are the config's own (`__post_init__` raises
    InvalidHyperparameter with the built-in's allowed range).
    """
    hints = typing.get_type_hints(config_class)
    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    values: dict[str, Any] = {}
    for name, text in raw.items():
        if name == ALGORITHM_KEY:
            continue
        if is_platform_key(name):
            logger.info("Ignoring SageMaker hyperparameter %s=%r", name, text)
            continue
        if name not in fields:
            if name in BUILT_IN_KEYS_WITHOUT_EFFECT:
                logger.info("Ignoring built-in hyperparameter %s=%r: it has no effect here",
                            name, text)
                continue
            raise InvalidHyperparameter(
                name, text,
                f"is not a hyperparameter of algorithm {algorithm}; "
                f"valid names: {', '.join(sorted(fields))}")
        values[name] = parse_value(name, text, hints[name])

    missing = sorted(required_fields(config_class) - values.keys())
    if missing:
        raise InvalidHyperparameter(
            missing[0], None,
            f"is required for algorithm {algorithm} (missing: {', '.join(missing)})")

    try:
        return config_class(**values)
    except UserError:
        raise
    except (TypeError, ValueError) as error:
        raise UserError(f"invalid {algorithm} hyperparameters: {error}") from error


def parse_value(name: str, text: str, annotation: Any) -> Any:
    """Convert one hyperparameter string to `annotation`, raising InvalidHyperparameter."""
    text = unquote(text)
    origin = typing.get_origin(annotation)

    if origin in (typing.Union, types.UnionType):
        return _parse_union(name, text, typing.get_args(annotation))
    if origin is list:
        (item_type,) = typing.get_args(annotation) or (str,)
        items = split_list(name, text)
        try:
            return [_parse_scalar(name, item, item_type, text) for item in items]
        except InvalidHyperparameter:
            kind = _LIST_ITEM_NAMES.get(item_type, "values")
            raise InvalidHyperparameter(
                name, text, f"must be a list of {kind} such as [100, 50] or 100,50") from None
    return _parse_scalar(name, text, annotation, text)


def _parse_union(name: str, text: str, members: tuple[Any, ...]) -> Any:
    if type(None) in members and text.lower() in ("none", "null", ""):
        return None
    members = tuple(m for m in members if m is not type(None))
    others = [m for m in members if m is not str]
    if str in members and text.lower() == AUTO:
        return AUTO
    if not others:
        return text
    try:
        return parse_value(name, text, typing.Union[tuple(others)] if len(others) > 1
                           else others[0])
    except InvalidHyperparameter as error:
        if str in members:
            raise InvalidHyperparameter(name, text, f"{error.requirement} or 'auto'") from None
        raise


def split_list(name: str, text: str) -> list[str]:
    """Items of "[100, 50]", "['msd', 'ssd']", '["msd","ssd"]', "100,50" or "100"."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise InvalidHyperparameter(name, text, "must be a list such as [100, 50]")
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            # str() of a Python list of strings uses single quotes: "['msd', 'ssd']".
            decoded = [item.strip().strip("'\"") for item in text[1:-1].split(",")]
        return [str(item).strip() for item in decoded if str(item).strip() != ""]
    return [item.strip().strip("'\"") for item in text.split(",") if item.strip()]


def _parse_scalar(name: str, text: str, annotation: Any, whole: str) -> Any:
    if annotation is bool:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise InvalidHyperparameter(name, whole, "must be true or false")
    if annotation is int:
        return _parse_int(name, text, whole)
    if annotation is float:
        try:
            value = float(text)
        except ValueError:
            raise InvalidHyperparameter(name, whole, "must be a number") from None
        if math.isnan(value):
            raise InvalidHyperparameter(name, whole, "must be a number, not NaN")
        return value
    if annotation is str:
        return text
    raise TypeError(f"hyperparameter {name} has annotation {annotation!r}, which the "
                    f"container cannot parse; use int, float, bool, str or lists of them")


def _parse_int(name: str, text: str, whole: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)  # "20.0" and "1e3" are whole numbers too
    except ValueError:
        raise InvalidHyperparameter(name, whole, "must be an integer") from None
    if not math.isfinite(value) or value != int(value):
        raise InvalidHyperparameter(name, whole, "must be an integer")
    return int(value)


def describe_config(config: Any) -> str:
    """Return the resolved config as one JSON object, for the `Final configuration:` log line."""
    return json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
