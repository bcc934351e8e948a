"""Built-in SageMaker algorithms that a comparison run trains beside ours: images, hyperparameters.

Our "ntm" and "kmeans" are compared with the built-in NTM and k-means (`ntm:1`, `kmeans:1`), and
our "rating" classifier with BlazingText in supervised mode (`blazingtext:1`). BlazingText
reads plain-text `__label__<class> <tokens>` lines, not RecordIO-protobuf, so its channels
need their own preparation.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from ..errors import UserError

logger = logging.getLogger(__name__)

BUILT_IN_REPOSITORIES = {"ntm": "ntm", "kmeans": "kmeans", "rating": "blazingtext",
                         "blazingtext": "blazingtext"}
BUILT_IN_IMAGE_TAG = "1"

# ECR registry accounts per region, from the SageMaker Python SDK's image_uri_config/ntm.json,
# kmeans.json and blazingtext.json (package sagemaker-core 2.27.0, version "1" of each image).
# ntm and kmeans share one table. The us-iso* regions are left out because their ECR hosts
# are not under amazonaws.com.
NTM_KMEANS_ACCOUNTS = {
    "af-south-1": "455444449433", "ap-east-1": "286214385809", "ap-northeast-1": "351501993468",
    "ap-northeast-2": "835164637446", "ap-northeast-3": "867004704886",
    "ap-south-1": "991648021394", "ap-south-2": "628508329040", "ap-southeast-1": "475088953585",
    "ap-southeast-2": "712309505854", "ap-southeast-3": "951798379941",
    "ap-southeast-4": "106583098589", "ca-central-1": "469771592824",
    "ca-west-1": "190319476487", "cn-north-1": "390948362332", "cn-northwest-1": "387376663083",
    "eu-central-1": "664544806723", "eu-central-2": "680994064768",
    "eu-north-1": "669576153137", "eu-south-1": "257386234256", "eu-south-2": "104374241257",
    "eu-west-1": "438346466558", "eu-west-2": "644912444149", "eu-west-3": "749696950732",
    "il-central-1": "898809789911", "me-central-1": "272398656194",
    "me-south-1": "249704162688", "sa-east-1": "855470959533", "us-east-1": "382416733822",
    "us-east-2": "404615174143", "us-gov-east-1": "237065988967",
    "us-gov-west-1": "226302683700", "us-west-1": "632365934929", "us-west-2": "174872318107",
}
BLAZINGTEXT_ACCOUNTS = {
    **NTM_KMEANS_ACCOUNTS,
    "ap-northeast-1": "501404015308", "ap-northeast-2": "306986355934",
    "ap-southeast-2": "544295431143", "eu-central-1": "813361260812",
    "eu-west-1": "685385470294", "us-east-1": "811284229777", "us-east-2": "825641698319",
    "us-west-2": "433757028032",
}

# Hyperparameter names each built-in documents; `built_in_hyperparameters` drops all others.
# NTM and k-means: the SageMaker developer guide's hyperparameter tables, plus k-means'
# force_dense, which the SDK v2 KMeans estimator always sends. BlazingText: the supervised-mode
# hyperparameters of the amazon-sagemaker-examples notebook
# blazingtext_text_classification_dbpedia.
BUILT_IN_HYPERPARAMETERS = {
    "ntm": frozenset({
        "feature_dim", "num_topics", "batch_norm", "clip_gradient", "encoder_layers",
        "encoder_layers_activation", "epochs", "learning_rate", "mini_batch_size",
        "num_patience_epochs", "optimizer", "rescale_gradient", "sub_sample", "tolerance",
        "weight_decay",
    }),
    "kmeans": frozenset({
        "feature_dim", "k", "epochs", "eval_metrics", "extra_center_factor",
        "half_life_time_size", "init_method", "local_lloyd_init_method", "local_lloyd_max_iter",
        "local_lloyd_num_trials", "local_lloyd_tol", "mini_batch_size", "force_dense",
    }),
    "rating": frozenset({
        "mode", "epochs", "min_count", "learning_rate", "vector_dim", "early_stopping",
        "patience", "min_epochs", "word_ngrams",
    }),
}
REQUIRED_HYPERPARAMETERS = {"ntm": ("feature_dim", "num_topics"), "kmeans": ("feature_dim", "k"),
                            "rating": ()}
FIXED_HYPERPARAMETERS = {"ntm": {}, "kmeans": {"force_dense": "True"},
                         "rating": {"mode": "supervised"}}

# Our name -> the built-in's name where they differ. The k-means entries are the SDK v2
# KMeans argument names and scikit-learn's n_clusters.
# NOTE: the rating entries guess the names RatingConfig will use; check them against it.
HYPERPARAMETER_ALIASES = {
    "ntm": {},
    "kmeans": {
        "n_clusters": "k",
        "max_iterations": "local_lloyd_max_iter",
        "tol": "local_lloyd_tol",
        "num_trials": "local_lloyd_num_trials",
        "local_init_method": "local_lloyd_init_method",
        "center_factor": "extra_center_factor",
    },
    "rating": {"num_patience_epochs": "patience", "embedding_dim": "vector_dim"},
}


def built_in_image_uri(algorithm: str, region: str) -> str:
    """Return the ECR URI of the built-in image compared with our `algorithm` in `region`.

    `algorithm` is "ntm", "kmeans" or "rating" (BlazingText; "blazingtext" works too), e.g.
    `382416733822.dkr.ecr.us-east-1.amazonaws.com/ntm:1`. Raises `UserError` for a region
    without a known registry account; pass the image URI by hand there.
    """
    repository = BUILT_IN_REPOSITORIES.get(algorithm)
    if repository is None:
        raise UserError(f"algorithm={algorithm!r} must be one of {sorted(BUILT_IN_REPOSITORIES)}")
    accounts = BLAZINGTEXT_ACCOUNTS if repository == "blazingtext" else NTM_KMEANS_ACCOUNTS
    account = accounts.get(region)
    if account is None:
        raise UserError(
            f"region={region!r} has no known registry for the built-in {repository} image; "
            f"pass its image URI explicitly")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{repository}:{BUILT_IN_IMAGE_TAG}"


def built_in_hyperparameters(algorithm: str,
                             our_hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """Translate our hyperparameters into those the built-in counterpart accepts, as strings.

    Names are mapped where the built-in spells them differently, names it does not document
    are dropped (and logged), and fixed values are added: k-means `force_dense=True`, BlazingText
    `mode=supervised`. Values are encoded as SDK v2 sends built-in hyperparameters: `str()`
    for scalars (so `True`), JSON for lists. Raises `UserError` when a required one is missing.
    """
    if algorithm not in BUILT_IN_HYPERPARAMETERS:
        raise UserError(
            f"algorithm={algorithm!r} must be one of {sorted(BUILT_IN_HYPERPARAMETERS)}")
    accepted = BUILT_IN_HYPERPARAMETERS[algorithm]
    aliases = HYPERPARAMETER_ALIASES[algorithm]

    translated: dict[str, str] = {}
    dropped = []
    for name, value in our_hyperparameters.items():
        built_in_name = aliases.get(name, name)
        if built_in_name not in accepted or value is None:
            dropped.append(name)
            continue
        translated[built_in_name] = _encode(value)
    translated.update(FIXED_HYPERPARAMETERS[algorithm])

    if dropped:
        logger.info("not sent to the built-in %s (not among its hyperparameters): %s",
                    BUILT_IN_REPOSITORIES[algorithm], ", ".join(sorted(dropped)))
    missing = [name for name in REQUIRED_HYPERPARAMETERS[algorithm] if name not in translated]
    if missing:
        raise UserError(f"the built-in {algorithm} requires hyperparameters {missing}")
    return translated


def _encode(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)
