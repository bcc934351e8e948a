"""One function per `launch.py` subcommand: turn parsed arguments into library calls."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from ..errors import UserError

logger = logging.getLogger(__name__)


def input_format(args: argparse.Namespace) -> str | None:
    """--format as the readers name it: None for auto, "json" for JSON lines."""
    return {"auto": None, "jsonl": "json"}.get(args.format, args.format)


def default_job_name(algorithm: str) -> str:
    return f"review-nlp-{algorithm}-{time.strftime('%Y%m%d-%H%M%S')}"


# --- prepare / athena -------------------------------------------------------------------------

def selection_from_args(args: argparse.Namespace):
    from ..data.selection import Selection

    sql = args.sql
    return Selection(categories=list(args.category), min_stars=args.min_stars,
                     max_stars=args.max_stars, start_date=args.start_date,
                     end_date=args.end_date, marketplaces=list(args.marketplace),
                     limit=args.limit, sql=sql)


def athena_settings(args: argparse.Namespace) -> dict:
    if args.engine != "athena":
        return {}
    if not args.athena_database or not args.athena_table:
        raise UserError("--engine athena needs --athena-database and --athena-table")
    return {"database": args.athena_database, "table": args.athena_table,
            "workgroup": args.athena_workgroup, "s3_staging_dir": args.athena_staging,
            "unload_to": args.athena_unload_to}


def run_prepare(args: argparse.Namespace) -> int:
    from ..data.prepare import PrepareOptions, prepare_channels

    options = PrepareOptions(
        reviews=args.reviews, algorithm=args.algorithm, out=args.out,
        format=input_format(args), text_column=args.text_column,
        rating_column=args.rating_column, id_column=args.id_column, header=args.header,
        selection=selection_from_args(args), engine=args.engine, athena=athena_settings(args),
        overwrite=args.overwrite, validation_ratio=args.validation_ratio,
        test_ratio=args.test_ratio, seed=args.seed, shard_rows=args.shard_rows,
        content_type=args.content_type, vocab_size=args.vocab_size, min_df=args.min_df,
        max_df=args.max_df, lemmatize=args.lemmatize, stem=args.stem,
        keep_duplicates=args.keep_duplicates)
    result = prepare_channels(options)
    manifest = result.manifest
    print(json.dumps({"out": result.out, "algorithm": manifest["algorithm"],
                      "feature_dim": manifest["feature_dim"], "records": manifest["records"],
                      "rows_read": manifest["skipped"]["rows_read"],
                      "skipped": manifest["skipped"]["skipped"]}, indent=2))
    return 0


def run_athena(args: argparse.Namespace) -> int:
    from . import athena

    statements = athena.create_table_ddl(layout=args.layout, database=args.database,
                                         table=args.table, location=args.location)
    if not args.run:
        print(";\n\n".join(statements) + ";")
        return 0
    athena.run_statements(statements, database=args.database, workgroup=args.workgroup,
                          output_location=args.output_location)
    print(f"created table {args.database}.{args.table} ({args.layout}) over {args.location}")
    return 0


# --- train ------------------------------------------------------------------------------------

def _local_channels(channels: str, scratch: Path) -> Path:
    """Return a local folder of the channels: `channels` itself, or a download of the S3 prefix."""
    from ..data.storage import download_prefix, is_s3_uri

    if not is_s3_uri(channels):
        path = Path(channels)
        if not path.is_dir():
            raise UserError(f"--channels {channels} not found")
        return path
    target = scratch / "channels"
    download_prefix(channels, target)
    return target


def run_train(args: argparse.Namespace) -> int:
    from .job_folders import parse_hp_arguments

    hyperparameters = parse_hp_arguments(args.hp)
    job_name = args.job_name or default_job_name(args.algorithm)
    if args.mode == "sagemaker":
        from .sagemaker_mode import train_on_sagemaker

        summary = train_on_sagemaker(args, hyperparameters, job_name)
        print(json.dumps(summary, indent=2, default=str))
        return 0
    return _train_locally(args, hyperparameters, job_name)


def _train_locally(args: argparse.Namespace, hyperparameters: dict, job_name: str) -> int:
    from ..data.storage import is_s3_uri, upload_file
    from .job_folders import run_local_job

    with tempfile.TemporaryDirectory(prefix="review-nlp-train-") as scratch:
        channels = _local_channels(args.channels, Path(scratch))
        out_dir = Path(scratch) / "out" if is_s3_uri(args.out) else Path(args.out)
        result = run_local_job(algorithm=args.algorithm, channels_dir=channels, out_dir=out_dir,
                               hyperparameters=hyperparameters, job_name=job_name,
                               mode=args.mode, image=args.image)
        if is_s3_uri(args.out):
            prefix = f"{args.out.rstrip('/')}/{job_name}"
            for path in (result.model_tar, result.output_tar, result.metrics_path):
                upload_file(path, f"{prefix}/{path.name}")
            logger.info("Uploaded model.tar.gz, output.tar.gz and metrics.json to %s", prefix)
        print(json.dumps({"job_name": job_name, "model": str(result.model_tar),
                          "metrics": str(result.metrics_path),
                          "final": result.metrics.get("final", {})}, indent=2))
    return 0


# --- endpoints --------------------------------------------------------------------------------

def run_deploy(args: argparse.Namespace) -> int:
    if args.mode == "sagemaker":
        from .sagemaker_mode import deploy_on_sagemaker

        deploy_on_sagemaker(args)
        return 0
    from .local_endpoints import start_local_endpoint

    endpoint = start_local_endpoint(args.endpoint_name, Path(args.model), mode=args.mode,
                                    port=args.port, workers=args.workers, image=args.image)
    print(f"endpoint {endpoint.name} serving on http://127.0.0.1:{endpoint.port} "
          f"({endpoint.mode}); stop it with: launch.py delete-endpoint --endpoint-name "
          f"{endpoint.name} --mode {endpoint.mode}")
    return 0


def _request_body(args: argparse.Namespace) -> tuple[bytes, str]:
    if args.body:
        if not args.content_type:
            raise UserError("--body needs --content-type, e.g. text/csv")
        path = Path(args.body)
        if not path.is_file():
            raise UserError(f"--body {args.body} not found")
        return path.read_bytes(), args.content_type
    if not args.text:
        raise UserError("nothing to send: give --text, --reviews or --body")
    return json.dumps({"instances": list(args.text)}).encode(), "application/json"


def _invoke(args: argparse.Namespace, body: bytes, content_type: str, accept: str) -> bytes:
    if args.mode == "sagemaker":
        from .endpoints import invoke_endpoint

        return invoke_endpoint(args.endpoint_name, body, content_type, accept)
    from .local_endpoints import invoke_local_endpoint

    return invoke_local_endpoint(args.endpoint_name, body, content_type, accept)


def _predict_reviews_via_endpoint(args: argparse.Namespace) -> int:
    """Send --reviews in requests of --batch-size texts; write JSON lines with review_id."""
    from ..data.sources import open_reviews

    source = open_reviews(args.reviews, format=input_format(args),
                          text_column=args.text_column, rating_column=args.rating_column,
                          id_column=args.id_column, header=args.header, require_rating=False)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    count = 0
    try:
        for batch in source.iter_batches(args.batch_size):
            ids = batch.column("review_id").to_pylist()
            body = json.dumps({"instances": batch.column("review_body").to_pylist()}).encode()
            answer = json.loads(_invoke(args, body, "application/json", "application/json"))
            for review_id, prediction in zip(ids, answer["predictions"]):
                out.write(json.dumps({"review_id": review_id, **prediction}) + "\n")
            count += len(ids)
    finally:
        if args.out:
            out.close()
    logger.info("%d predictions from endpoint %s. %s", count, args.endpoint_name,
                source.report.summary())
    return count


def run_predict(args: argparse.Namespace) -> int:
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.model:
        if not args.reviews or not args.out:
            raise UserError("predict --model needs --reviews FILE and --out FILE.jsonl")
        from .batch_predict import predict_reviews_file

        count = predict_reviews_file(Path(args.model), args, Path(args.out), args.batch_size)
        print(f"wrote {count} predictions to {args.out}")
        return 0
    if not args.endpoint_name:
        raise UserError("predict needs --endpoint-name (query an endpoint) or --model "
                        "(local batch transform)")
    if args.reviews:
        _predict_reviews_via_endpoint(args)
        return 0
    body, content_type = _request_body(args)
    payload = _invoke(args, body, content_type, args.accept)
    if args.out:
        Path(args.out).write_bytes(payload)
    else:
        sys.stdout.buffer.write(payload + (b"" if payload.endswith(b"\n") else b"\n"))
    return 0


def run_delete_endpoint(args: argparse.Namespace) -> int:
    if args.mode == "sagemaker":
        from .endpoints import delete_endpoint

        delete_endpoint(args.endpoint_name)
    else:
        from .local_endpoints import stop_local_endpoint

        stop_local_endpoint(args.endpoint_name)
    print(f"deleted endpoint {args.endpoint_name}")
    return 0


# --- compare / demo ---------------------------------------------------------------------------

def run_compare(args: argparse.Namespace) -> int:
    from .job_folders import parse_hp_arguments
    from .reports import markdown_table, write_comparison

    hyperparameters = parse_hp_arguments(args.hp)
    out_dir = Path(args.out)
    if args.mode == "sagemaker":
        from .sagemaker_mode import compare_on_sagemaker

        report = compare_on_sagemaker(args, hyperparameters)
    else:
        from .compare_local import compare_local

        with tempfile.TemporaryDirectory(prefix="review-nlp-compare-") as scratch:
            channels = _local_channels(args.channels, Path(scratch))
            report = compare_local(algorithm=args.algorithm, channels_dir=channels,
                                   out_dir=out_dir, hyperparameters=hyperparameters,
                                   job_name=default_job_name(args.algorithm))
    md_path, json_path = write_comparison(report, out_dir)
    print(markdown_table(report["rows"], report["columns"]))
    print(f"\nreport: {md_path} and {json_path}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo as demo

    demo(reviews=args.reviews, out_dir=Path(args.out), port=args.port)
    return 0

