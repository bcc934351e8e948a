"""Amazon Comprehend's sentiment shape, derived from a predicted star distribution.

Comprehend's DetectSentiment returns `{"Sentiment": "POSITIVE" | "NEGATIVE" | "NEUTRAL" |
"MIXED", "SentimentScore": {"Positive", "Negative", "Neutral", "Mixed"}}` with scores that sum
to 1. With p the distribution over K ordered star classes:

    negative mass  n = P(stars below the middle)     (stars 1-2 of 5)
    positive mass  q = P(stars above the middle)     (stars 4-5 of 5)
    Neutral        = P(the middle star)              (star 3 of 5; 0 when K is even)
    Mixed          = 2 n q
    Positive       = q (1 - n) = q - n q
    Negative       = n (1 - q) = n - n q

Mixed is the probability that two independent draws from p land in opposite tails, so it is
high only when both tails carry mass (at most 0.5, at n = q = 0.5). The four scores sum to
n + q + Neutral = 1. `Sentiment` is the label with the highest score, the first in the order
POSITIVE, NEGATIVE, NEUTRAL, MIXED on ties.
"""

from __future__ import annotations

import numpy as np

SENTIMENT_LABELS = ("POSITIVE", "NEGATIVE", "NEUTRAL", "MIXED")
SCORE_NAMES = ("Positive", "Negative", "Neutral", "Mixed")


def sentiment_scores(probabilities: np.ndarray) -> np.ndarray:
    """Return (n, 4) Positive, Negative, Neutral, Mixed scores for (n, K) star probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    num_classes = probabilities.shape[1]
    half = num_classes // 2
    negative = probabilities[:, :half].sum(axis=1)  # (n,)
    positive = probabilities[:, num_classes - half:].sum(axis=1)  # (n,)
    neutral = probabilities[:, half] if num_classes % 2 else np.zeros_like(negative)
    both = negative * positive
    return np.stack([positive - both, negative - both, neutral, 2 * both], axis=1)


def comprehend_sentiment(probabilities: np.ndarray) -> list[dict]:
    """Return one Comprehend-shaped sentiment dict per row of (n, K) star probabilities."""
    scores = sentiment_scores(probabilities)
    results = []
    for row in scores:
        results.append({
            "Sentiment": SENTIMENT_LABELS[int(row.argmax())],
            "SentimentScore": {name: float(value) for name, value in zip(SCORE_NAMES, row)},
        })
    return results
