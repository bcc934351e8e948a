"""Channel and model uploads to S3 and downloads back, against a moto server on 127.0.0.1."""

from __future__ import annotations

import boto3
import pytest
from launcher_moto import (  # noqa: F401
    BUCKET,
    client_for,
    moto_endpoint,
    moto_server_url,
    shared_session,
)

from review_nlp.errors import UserError
from review_nlp.launcher import s3_uploads


@pytest.fixture
def s3(client_for):
    client = client_for("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def channel_dir(tmp_path):
    root = tmp_path / "prepared"
    (root / "train").mkdir(parents=True)
    (root / "train" / "part-00000.pbr").write_bytes(b"\x0a\x0b" * 10)
    (root / "train" / "part-00001.pbr").write_bytes(b"\x0c" * 7)
    (root / "validation").mkdir()
    (root / "validation" / "part-00000.pbr").write_bytes(b"v" * 5)
    (root / "auxiliary").mkdir()
    (root / "auxiliary" / "vocab.txt").write_text("great\ngift\ncard\n")
    (root / "test").mkdir()
    (root / "manifest.json").write_text('{"algorithm": "ntm"}')
    return root


def _keys(client, prefix=""):
    response = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in response.get("Contents", []))


def test_parse_s3_uri():
    assert s3_uploads.parse_s3_uri("s3://bucket/a/b.txt") == ("bucket", "a/b.txt")
    assert s3_uploads.parse_s3_uri("s3://bucket") == ("bucket", "")


@pytest.mark.parametrize("uri", ["bucket/key", "https://bucket/key", "s3:///key"])
def test_parse_s3_uri_rejects(uri):
    with pytest.raises(UserError):
        s3_uploads.parse_s3_uri(uri)


def test_job_prefix_joins_slashes():
    assert s3_uploads.job_prefix("s3://b/runs/", "job-1") == "s3://b/runs/job-1/"
    assert s3_uploads.job_prefix("s3://b", "job-1") == "s3://b/job-1/"


def test_upload_channels_layout(s3, channel_dir, caplog):
    uris = s3_uploads.upload_channels(channel_dir, f"s3://{BUCKET}/runs", "ntm-job-1", client=s3)

    base = f"s3://{BUCKET}/runs/ntm-job-1/channels/"
    assert uris == {"auxiliary": base + "auxiliary/", "train": base + "train/",
                    "validation": base + "validation/"}
    assert _keys(s3) == [
        "runs/ntm-job-1/channels/auxiliary/vocab.txt",
        "runs/ntm-job-1/channels/manifest.json",
        "runs/ntm-job-1/channels/train/part-00000.pbr",
        "runs/ntm-job-1/channels/train/part-00001.pbr",
        "runs/ntm-job-1/channels/validation/part-00000.pbr",
    ]
    assert "channel test not uploaded" in caplog.text
    body = s3.get_object(Bucket=BUCKET, Key="runs/ntm-job-1/channels/train/part-00001.pbr")
    assert body["Body"].read() == b"\x0c" * 7


def test_reruns_do_not_clobber(s3, channel_dir):
    s3_uploads.upload_channels(channel_dir, f"s3://{BUCKET}/runs", "job-a", client=s3)
    s3_uploads.upload_channels(channel_dir, f"s3://{BUCKET}/runs", "job-b", client=s3)

    assert len(_keys(s3, "runs/job-a/")) == 5
    assert len(_keys(s3, "runs/job-b/")) == 5


def test_same_job_name_rejected_unless_overwrite(s3, channel_dir):
    s3_uploads.upload_channels(channel_dir, f"s3://{BUCKET}/runs", "job-a", client=s3)

    with pytest.raises(UserError, match="already contains objects"):
        s3_uploads.upload_channels(channel_dir, f"s3://{BUCKET}/runs", "job-a", client=s3)
    s3_uploads.upload_channels(channel_dir, f"s3://{BUCKET}/runs", "job-a", overwrite=True,
                               client=s3)


def test_upload_selected_channels(s3, channel_dir):
    uris = s3_uploads.upload_channels(channel_dir, f"s3://{BUCKET}/runs", "job-a",
                                      channels=["train"], client=s3)

    assert list(uris) == ["train"]
    with pytest.raises(UserError, match="not found"):
        s3_uploads.upload_channels(channel_dir, f"s3://{BUCKET}/runs", "job-b",
                                   channels=["train", "evaluation"], client=s3)


def test_missing_channel_folder_raises(s3, tmp_path):
    with pytest.raises(UserError, match="not found"):
        s3_uploads.upload_channels(tmp_path / "absent", f"s3://{BUCKET}/runs", "job", client=s3)


def test_invalid_channel_name_raises(s3, tmp_path):
    (tmp_path / "bad name").mkdir()
    (tmp_path / "bad name" / "x").write_text("x")

    with pytest.raises(UserError, match="channel name"):
        s3_uploads.upload_channels(tmp_path, f"s3://{BUCKET}/runs", "job", client=s3)


def test_upload_model_and_download(s3, tmp_path):
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"\x1f\x8b fake archive")

    uri = s3_uploads.upload_model(archive, f"s3://{BUCKET}/runs", "job-a", client=s3)
    copy = s3_uploads.download_file(uri, tmp_path / "back" / "model.tar.gz", client=s3)

    assert uri == f"s3://{BUCKET}/runs/job-a/model/model.tar.gz"
    assert copy.read_bytes() == archive.read_bytes()


def test_upload_model_requires_tar_gz(s3, tmp_path):
    (tmp_path / "model.zip").write_bytes(b"x")

    with pytest.raises(UserError, match=".tar.gz"):
        s3_uploads.upload_model(tmp_path / "model.zip", f"s3://{BUCKET}/runs", "job", client=s3)


def test_download_prefix_round_trip(s3, channel_dir, tmp_path):
    s3_uploads.upload_channels(channel_dir, f"s3://{BUCKET}/runs", "job-a", client=s3)

    written = s3_uploads.download_prefix(f"s3://{BUCKET}/runs/job-a/channels", tmp_path / "copy",
                                         client=s3)

    assert len(written) == 5
    assert (tmp_path / "copy" / "auxiliary" / "vocab.txt").read_text() == "great\ngift\ncard\n"
    assert (tmp_path / "copy" / "manifest.json").is_file()


def test_download_prefix_rejects_escaping_keys(s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="runs/job/../../escape.txt", Body=b"x")

    with pytest.raises(UserError, match="leaves the download folder"):
        s3_uploads.download_prefix(f"s3://{BUCKET}/runs/job/", tmp_path / "copy", client=s3)


def test_default_client_reaches_moto(moto_endpoint, channel_dir):
    boto3.client("s3").create_bucket(Bucket=BUCKET)

    uris = s3_uploads.upload_channels(channel_dir, f"s3://{BUCKET}/runs", "job-a")

    assert "train" in uris


def test_only_empty_channels_uploads_nothing(s3, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "manifest.json").write_text("{}")

    with pytest.raises(UserError, match="no non-empty channel"):
        s3_uploads.upload_channels(tmp_path, f"s3://{BUCKET}/runs", "job", client=s3)

    assert _keys(s3) == []
