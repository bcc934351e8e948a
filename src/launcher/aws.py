"""boto3 sessions and clients built from the usual AWS settings, with retries and quiet logging.

Settings come from where the AWS CLI reads them: `AWS_PROFILE`, `AWS_REGION` or
`AWS_DEFAULT_REGION` (or the profile's `region`), and `AWS_ENDPOINT_URL` or
`AWS_ENDPOINT_URL_<SERVICE>`, which botocore reads by itself (checked with botocore 1.44.8).
The tests aim `AWS_ENDPOINT_URL` at a local moto server, so every client built here reaches
that server only.
"""

from __future__ import annotations

import logging
import os
import re

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError, ProfileNotFound

from ..errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 10
ROLE_ENVIRONMENT_VARIABLE = "SAGEMAKER_ROLE_ARN"

# Error codes that mean "slow down", as botocore's standard retry mode classifies them.
THROTTLING_ERROR_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown",
})

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_NOISY_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3")


def quiet_aws_logging(level: int = logging.WARNING) -> None:
    """Raise the level of the boto3, botocore, s3transfer and urllib3 loggers to `level`.

    A logger whose level the application already set is left alone.
    """
    for name in _NOISY_LOGGERS:
        noisy = logging.getLogger(name)
        if noisy.level == logging.NOTSET:
            noisy.setLevel(level)


def client_config() -> Config:
    """Return the botocore config every client here uses: standard retries, 10 attempts in all.

    Standard mode retries throttling and transient errors with exponential backoff and jitter.
    `AWS_RETRY_MODE` and `AWS_MAX_ATTEMPTS` override the defaults, as they do for the AWS CLI;
    both count the first attempt, as botocore's `total_max_attempts` does.
    """
    mode = os.environ.get("AWS_RETRY_MODE", "standard")
    total_max_attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))
    return Config(retries={"mode": mode, "total_max_attempts": total_max_attempts})


def aws_session(*, region: str | None = None, profile: str | None = None) -> boto3.Session:
    """Create a boto3 session from explicit values or the usual AWS settings.

    The region is `region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION` or the profile's
    region; the profile is `profile`, else `AWS_PROFILE`. Raises `UserError` when no region
    is configured, because every SageMaker and Athena call needs one.
    """
    quiet_aws_logging()
    try:
        session = boto3.Session(profile_name=profile,
                                region_name=region or os.environ.get("AWS_REGION"))
    except ProfileNotFound as error:
        raise UserError(f"{error}; check AWS_PROFILE and ~/.aws/config") from error
    if not session.region_name:
        raise UserError(
            "no AWS region is configured; set AWS_DEFAULT_REGION (or AWS_REGION), "
            "or give the profile a region")
    return session


def aws_client(service: str, *, session: boto3.Session | None = None, region: str | None = None,
               profile: str | None = None, endpoint_url: str | None = None) -> BaseClient:
    """Create a client for `service` ("s3", "sagemaker", "sagemaker-runtime", "logs", "athena").

    Without `endpoint_url`, botocore picks the endpoint from `AWS_ENDPOINT_URL_<SERVICE>`,
    `AWS_ENDPOINT_URL` or the region.
    """
    session = session or aws_session(region=region, profile=profile)
    return session.client(service, endpoint_url=endpoint_url, config=client_config())


def is_throttling_error(error: BaseException) -> bool:
    """Return whether `error` is a `ClientError` whose code means the caller is throttled."""
    if not isinstance(error, ClientError):
        return False
    return error.response.get("Error", {}).get("Code") in THROTTLING_ERROR_CODES


def resolve_role_arn(role: str | None = None, *, session: boto3.Session | None = None,
                     sts_client: BaseClient | None = None) -> str:
    """Return the IAM role ARN that SageMaker jobs and models run as.

    `role` may be a full ARN or a role name; without it `SAGEMAKER_ROLE_ARN` is read. A bare
    name becomes `arn:<partition>:iam::<account>:role/<name>` with the account and partition
    of the caller's credentials (one STS GetCallerIdentity call).
    """
    role = role or os.environ.get(ROLE_ENVIRONMENT_VARIABLE)
    if not role:
        raise UserError(
            f"no SageMaker execution role given; pass a role ARN or name, or set "
            f"{ROLE_ENVIRONMENT_VARIABLE}")
    if _ROLE_ARN.match(role):
        return role
    if not _ROLE_NAME.match(role):
        raise UserError(
            f"role={role!r} must be an IAM role ARN (arn:aws:iam::<account>:role/<name>) "
            f"or a role name")

    sts_client = sts_client or aws_client("sts", session=session)
    caller_arn = sts_client.get_caller_identity()["Arn"]
    partition, account = caller_arn.split(":")[1], caller_arn.split(":")[4]
    return f"arn:{partition}:iam::{account}:role/{role}"
