"""Local batch transform: predict every review of a reviews file with a trained model.

Reads the file in any layout `prepare` reads (ratings optional), featurizes the text with the
featurizer saved in the model, and writes one JSON line per review: its `review_id` and the
model's prediction fields.
"""

from __future__ import annotations

import argparse
import json
import logging
import tarfile
import tempfile
from pathlib import Path

from tqdm import tqdm

from ..data.features import Featurizer
from ..data.sources import open_reviews
from ..errors import UserError
from ..files import atomic_path
from ..models.artifact import load_artifact
from ..models.registry import model_class
from .commands import input_format

logger = logging.getLogger(__name__)


def _model_folder(model: Path, scratch: Path) -> Path:
    if model.is_dir():
        return model
    if not model.is_file():
        raise UserError(f"--model {model} not found")
    try:
        with tarfile.open(model, "r:gz") as archive:
            archive.extractall(scratch, filter="data")
    except tarfile.TarError as error:
        raise UserError(f"--model {model} is not a model.tar.gz ({error})") from None
    return scratch


def predict_reviews_file(model: Path, args: argparse.Namespace, out: Path,
                         batch_size: int = 1000) -> int:
    """Write predictions for every review in `args.reviews` to `out`; return how many."""
    with tempfile.TemporaryDirectory(prefix="review-nlp-model-") as scratch:
        artifact = load_artifact(_model_folder(model, Path(scratch)))
    if not artifact.featurizer:
        raise UserError(f"model {model} contains no featurizer settings, so it cannot take review "
                        f"text; train it on channels written by `launch.py prepare`")
    estimator = model_class(artifact.algorithm).from_artifact(artifact)
    featurizer = Featurizer.from_dict(artifact.featurizer, artifact.vocabulary)
    source = open_reviews(args.reviews, format=input_format(args),
                          text_column=args.text_column, rating_column=args.rating_column,
                          id_column=args.id_column, header=args.header, require_rating=False)
    count = 0
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        progress = tqdm(desc="predicting", unit=" reviews", disable=None)
        for batch in source.iter_batches(batch_size):
            ids = batch.column("review_id").to_pylist()
            features = featurizer.transform(batch.column("review_body").to_pylist())
            for review_id, prediction in zip(ids, estimator.predict(features)):
                handle.write(json.dumps({"review_id": review_id, **prediction}) + "\n")
            count += len(ids)
            progress.update(len(ids))
        progress.close()
    logger.info("%s", source.report.summary())
    return count
