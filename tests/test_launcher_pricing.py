"""Estimated training costs from the us-east-1 price table."""

from __future__ import annotations

import pytest

from review_nlp.launcher import pricing


def test_cost_is_price_times_instances_times_hours():
    # 2 x ml.c5.xlarge at 0.204 USD/hour for 30 billable minutes each
    assert pricing.estimate_training_cost("ml.c5.xlarge", 2, 1800) == pytest.approx(0.204)


def test_unknown_instance_or_time_gives_none():
    assert pricing.estimate_training_cost("ml.x99.huge", 1, 60) is None
    assert pricing.estimate_training_cost("ml.m5.xlarge", 1, None) is None


@pytest.mark.parametrize("count, seconds", [(0, 60), (1, -1), (1, float("nan"))])
def test_invalid_inputs_raise(count, seconds):
    with pytest.raises(ValueError):
        pricing.estimate_training_cost("ml.m5.xlarge", count, seconds)


def test_table_is_labelled_as_estimates():
    assert pricing.PRICE_REGION == "us-east-1"
    assert pricing.PRICES_AS_OF
    assert "estimates" in pricing.PRICE_SOURCE
    for name, price in pricing.TRAINING_PRICES_USD_PER_HOUR.items():
        assert name.startswith("ml."), name
        assert price > 0, name


def test_workshop_instances_are_priced():
    # the instance types the reviews workshop trained and hosted on
    for instance_type in ("ml.c4.xlarge", "ml.m4.xlarge"):
        assert pricing.hourly_price(instance_type) is not None
