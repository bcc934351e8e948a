"""Uploads of channel folders and model archives to S3, keyed by job.

Single files go through `review_nlp.data.storage` (`upload_file`, `download_file`,
`download_prefix`, re-exported here).

Every upload lands under `<s3_prefix>/<job_name>/`, so two runs with different job names never
write to the same keys. Channel prefixes end in "/" because SageMaker's `S3Prefix` data type
matches by string prefix: `s3://bucket/run/train` would also take in `train-old/`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from botocore.client import BaseClient

from ..data.storage import download_file, download_prefix, upload_file  # noqa: F401  (re-exported)
from ..errors import UserError
from .aws import aws_client

logger = logging.getLogger(__name__)

CHANNELS_FOLDER = "channels"
MODEL_FOLDER = "model"
_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/key` into (bucket, key); the key may be empty."""
    if not uri.startswith("s3://"):
        raise UserError(f"s3_uri={uri!r} must start with s3://")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise UserError(f"s3_uri={uri!r} has no bucket name")
    return bucket, key


def join_s3_uri(base: str, *parts: str) -> str:
    """Join `base` and `parts` with single slashes; the result has no trailing slash."""
    pieces = [base.rstrip("/")] + [part.strip("/") for part in parts if part.strip("/")]
    return "/".join(pieces)


def job_prefix(s3_prefix: str, job_name: str) -> str:
    """Return `s3://bucket/prefix/<job_name>/`, the folder that contains one run's uploads."""
    parse_s3_uri(s3_prefix)
    return join_s3_uri(s3_prefix, job_name) + "/"


def upload_channels(channel_dir: str | os.PathLike, s3_prefix: str, job_name: str, *,
                    channels: list[str] | None = None, overwrite: bool = False,
                    client: BaseClient | None = None) -> dict[str, str]:
    """Upload a channel folder (as `launch.py prepare` writes it) for one training job.

    Each subfolder of `channel_dir` (`train/`, `validation/`, `test/`, `auxiliary/`) goes to
    `<s3_prefix>/<job_name>/channels/<channel>/`, and top-level files such as
    `manifest.json` go to `<s3_prefix>/<job_name>/channels/`. `channels` limits the upload to
    those subfolders. Empty subfolders are skipped with a warning, because a channel with no
    objects fails the job. Returns {channel: S3 URI ending in "/"}.

    Raises `UserError` when the job's folder in S3 already contains objects, unless `overwrite`.
    """
    root = Path(channel_dir)
    if not root.is_dir():
        raise UserError(f"channel folder {root} not found")
    client = client or aws_client("s3")
    destination = job_prefix(s3_prefix, job_name) + CHANNELS_FOLDER + "/"
    _check_empty(client, destination, overwrite)

    files_by_channel = {}
    for folder in _channel_folders(root, channels):
        files = _files_under(folder)
        if files:
            files_by_channel[folder] = files
        else:
            logger.warning("channel folder %s is empty; channel %s not uploaded",
                           folder, folder.name)
    if not files_by_channel:
        raise UserError(f"channel folder {root} contains no non-empty channel subfolders")

    channel_uris: dict[str, str] = {}
    for folder, files in files_by_channel.items():
        channel_uri = destination + folder.name + "/"
        for path in files:
            _upload(client, path, channel_uri + path.relative_to(folder).as_posix())
        channel_uris[folder.name] = channel_uri
        logger.info("uploaded channel %s: %d files to %s", folder.name, len(files), channel_uri)
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        _upload(client, path, destination + path.name)
    return channel_uris


def upload_model(model_archive: str | os.PathLike, s3_prefix: str, job_name: str, *,
                 overwrite: bool = False, client: BaseClient | None = None) -> str:
    """Upload a `model.tar.gz` to `<s3_prefix>/<job_name>/model/model.tar.gz` and return its URI.

    SageMaker hosting requires `ModelDataUrl` to name a `.tar.gz` object.
    """
    model_archive = Path(model_archive)
    if not model_archive.name.endswith(".tar.gz"):
        raise UserError(f"model archive {model_archive} must be a .tar.gz file")
    client = client or aws_client("s3")
    destination = job_prefix(s3_prefix, job_name) + MODEL_FOLDER + "/"
    _check_empty(client, destination, overwrite)
    return upload_file(model_archive, destination + "model.tar.gz", client=client)


def _channel_folders(root: Path, channels: list[str] | None) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if channels is not None:
        missing = sorted(set(channels) - {folder.name for folder in folders})
        if missing:
            raise UserError(f"channel folders {missing} not found in {root}")
        folders = [folder for folder in folders if folder.name in channels]
    for folder in folders:
        if not _CHANNEL_NAME.match(folder.name):
            raise UserError(
                f"channel folder name {folder.name!r} is not a valid SageMaker channel name "
                f"(letters, digits, '.', '-', '_'; at most 64 characters)")
    return folders


def _files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _upload(client: BaseClient, path: Path, s3_uri: str) -> None:
    bucket, key = parse_s3_uri(s3_uri)
    client.upload_file(str(path), bucket, key)


def _list_keys(client: BaseClient, bucket: str, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def _check_empty(client: BaseClient, s3_folder: str, overwrite: bool) -> None:
    if overwrite:
        return
    bucket, prefix = parse_s3_uri(s3_folder)
    response = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    if response.get("KeyCount", 0):
        raise UserError(
            f"{s3_folder} already contains objects; choose a new job name or allow overwriting")
