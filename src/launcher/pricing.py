"""Estimated on-demand prices of SageMaker training instances, for the comparison's cost column.

These numbers are estimates: on-demand SageMaker prices for us-east-1 in USD per
instance-hour, as the 2024-2025 price tables of several public repositories quote them from
https://aws.amazon.com/sagemaker/pricing/. Each value here is one that two or more of those
tables agree on. They were not read from the AWS page itself, prices change, and other regions
cost more or less, so check the pricing page before budgeting.
"""

from __future__ import annotations

import math

PRICES_AS_OF = "2025"
PRICE_REGION = "us-east-1"
PRICE_SOURCE = ("estimates: us-east-1 on-demand SageMaker training prices as public price tables "
                "quoted them in 2024-2025 from https://aws.amazon.com/sagemaker/pricing/")

# instance type -> USD per instance-hour
TRAINING_PRICES_USD_PER_HOUR: dict[str, float] = {
    # previous generation, as the 2018 reviews workshop used them
    "ml.m4.xlarge": 0.28,
    "ml.m4.2xlarge": 0.56,
    "ml.m4.4xlarge": 1.12,
    "ml.c4.xlarge": 0.279,
    "ml.c4.2xlarge": 0.557,
    # current CPU instances
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.c5.large": 0.102,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
    "ml.c5.9xlarge": 1.836,
    # GPU instances
    "ml.g4dn.xlarge": 0.736,
    "ml.g5.xlarge": 1.408,
    "ml.p3.2xlarge": 3.825,
    "ml.p3.8xlarge": 14.688,
}


def hourly_price(instance_type: str) -> float | None:
    """Return the estimated USD per instance-hour, or None for an instance type not listed."""
    return TRAINING_PRICES_USD_PER_HOUR.get(instance_type)


def estimate_training_cost(instance_type: str, instance_count: int,
                           billable_seconds: float | None) -> float | None:
    """Estimate a training job's cost in USD: price x instance count x billable hours.

    `billable_seconds` is DescribeTrainingJob's BillableTimeInSeconds, which is per instance
    and already reflects the managed-spot discount. Returns None when the instance type is not
    listed or the billable time is unknown.
    """
    price = hourly_price(instance_type)
    if price is None or billable_seconds is None:
        return None
    if instance_count < 1 or billable_seconds < 0 or math.isnan(billable_seconds):
        raise ValueError(
            f"instance_count={instance_count} must be at least 1 and "
            f"billable_seconds={billable_seconds} must be non-negative")
    return price * instance_count * billable_seconds / 3600.0
