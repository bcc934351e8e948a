"""Sessions and clients from the usual AWS settings, against a moto server on 127.0.0.1."""

from __future__ import annotations

import logging

import pytest
from botocore.exceptions import ClientError
from launcher_moto import (  # noqa: F401
    ROLE_ARN,
    client_for,
    inject_throttling,
    moto_endpoint,
    moto_server_url,
    shared_session,
)

from review_nlp.errors import UserError
from review_nlp.launcher import aws


def test_client_uses_endpoint_url_setting(moto_endpoint):
    client = aws.aws_client("sts")

    assert client.meta.endpoint_url == moto_endpoint
    assert client.get_caller_identity()["Account"] == "123456789012"


def test_service_specific_endpoint_wins(moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)

    assert aws.aws_client("s3").meta.endpoint_url == moto_endpoint
    assert aws.aws_client("sts").meta.endpoint_url == "http://127.0.0.1:9"


def test_region_from_aws_region(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")

    assert aws.aws_session().region_name == "eu-west-1"
    assert aws.aws_session(region="us-west-2").region_name == "us-west-2"


def test_region_from_aws_default_region(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-2")

    assert aws.aws_client("sts").meta.region_name == "ap-northeast-2"


def test_missing_region_raises(monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))

    with pytest.raises(UserError, match="no AWS region"):
        aws.aws_session()


def test_profile_from_aws_profile(monkeypatch, tmp_path):
    config = tmp_path / "config"
    config.write_text("[profile reviews]\nregion = sa-east-1\n")
    credentials = tmp_path / "credentials"
    credentials.write_text("[reviews]\naws_access_key_id = a\naws_secret_access_key = b\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_PROFILE", "reviews")

    session = aws.aws_session()

    assert session.profile_name == "reviews"
    assert session.region_name == "sa-east-1"


def test_retry_config_defaults_and_overrides(monkeypatch):
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    assert aws.client_config().retries == {"mode": "standard", "total_max_attempts": 10}

    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    assert aws.client_config().retries == {"mode": "adaptive", "total_max_attempts": 3}


def test_throttling_is_retried(client_for):
    client = client_for("sagemaker")
    injected = inject_throttling(client, "ListTrainingJobs", times=2)

    response = client.list_training_jobs()

    assert len(injected) == 2
    assert response["ResponseMetadata"]["RetryAttempts"] == 2


def test_throttling_past_max_attempts_raises(client_for, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    client = client_for("sagemaker")
    injected = inject_throttling(client, "ListTrainingJobs", times=5)

    with pytest.raises(ClientError) as raised:
        client.list_training_jobs()

    assert len(injected) == 2
    assert aws.is_throttling_error(raised.value)


def test_is_throttling_error_rejects_other_errors():
    error = ClientError({"Error": {"Code": "ValidationException", "Message": "bad"}}, "Op")

    assert not aws.is_throttling_error(error)
    assert not aws.is_throttling_error(ValueError("x"))


def test_quiet_logging_respects_set_levels():
    botocore_logger = logging.getLogger("botocore")
    urllib3_logger = logging.getLogger("urllib3")
    saved = botocore_logger.level, urllib3_logger.level
    try:
        botocore_logger.setLevel(logging.NOTSET)
        urllib3_logger.setLevel(logging.DEBUG)

        aws.quiet_aws_logging()

        assert botocore_logger.level == logging.WARNING
        assert urllib3_logger.level == logging.DEBUG
    finally:
        botocore_logger.setLevel(saved[0])
        urllib3_logger.setLevel(saved[1])


def test_role_arn_passes_unchanged():
    assert aws.resolve_role_arn(ROLE_ARN) == ROLE_ARN


def test_role_from_environment(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_ROLE_ARN", ROLE_ARN)

    assert aws.resolve_role_arn() == ROLE_ARN


def test_role_name_becomes_arn(moto_endpoint):
    assert aws.resolve_role_arn("SageMakerRole") == "arn:aws:iam::123456789012:role/SageMakerRole"


def test_missing_role_raises(monkeypatch):
    monkeypatch.delenv("SAGEMAKER_ROLE_ARN", raising=False)

    with pytest.raises(UserError, match="SAGEMAKER_ROLE_ARN"):
        aws.resolve_role_arn()


def test_malformed_role_raises():
    with pytest.raises(UserError, match="role="):
        aws.resolve_role_arn("arn:aws:iam::12:role/x y")


def test_unknown_profile_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")

    with pytest.raises(UserError, match="no-such-profile"):
        aws.aws_session()
