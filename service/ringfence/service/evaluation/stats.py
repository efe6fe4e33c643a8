"""Small, dependency-free statistics for the report: nearest-rank percentiles, ROC and PR
curves with their areas, and the adjusted Rand index (same definition as scikit-learn's
``adjusted_rand_score``)."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Hashable, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of values that may contain ``math.inf``;
    NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def roc_points(scored: Sequence[tuple[float, bool]]) -> list[tuple[float, float, float]]:
    """(FPR, TPR, threshold) for "enforce when score >= threshold", one point per distinct
    score from the highest down, starting at (0, 0). Needs both classes present."""
    positives = sum(1 for _, p in scored if p)
    negatives = len(scored) - positives
    if not positives or not negatives:
        return []
    points = [(0.0, 0.0, math.inf)]
    tp = fp = 0
    ordered = sorted(scored, key=lambda x: -x[0])
    for i, (score, positive) in enumerate(ordered):
        if positive:
            tp += 1
        else:
            fp += 1
        if i + 1 == len(ordered) or ordered[i + 1][0] != score:
            points.append((fp / negatives, tp / positives, score))
    return points


def auc(points: Sequence[tuple[float, float, float]]) -> float:
    """Area under an ROC curve (trapezoids)."""
    return sum((x1 - x0) * (y0 + y1) / 2
               for (x0, y0, _), (x1, y1, _) in itertools.pairwise(points))


def pr_points(scored: Sequence[tuple[float, bool]]) -> list[tuple[float, float, float]]:
    """(recall, precision, threshold) at each distinct score, highest threshold first."""
    positives = sum(1 for _, p in scored if p)
    if not positives:
        return []
    out: list[tuple[float, float, float]] = []
    tp = fp = 0
    ordered = sorted(scored, key=lambda x: -x[0])
    for i, (score, positive) in enumerate(ordered):
        if positive:
            tp += 1
        else:
            fp += 1
        if i + 1 == len(ordered) or ordered[i + 1][0] != score:
            out.append((tp / positives, tp / (tp + fp), score))
    return out


def average_precision(points: Sequence[tuple[float, float, float]]) -> float:
    """Σ (R_k − R_{k−1}) P_k over the PR points (scikit-learn's step definition)."""
    total, previous = 0.0, 0.0
    for recall, precision, _ in points:
        total += (recall - previous) * precision
        previous = recall
    return total


def recall_at_fpr(points: Sequence[tuple[float, float, float]], fpr: float) -> float:
    """The best TPR of any threshold whose FPR is at most ``fpr``."""
    return max((tpr for x, tpr, _ in points if x <= fpr), default=0.0)


def thin(points: Sequence[tuple[float, ...]], limit: int) -> list[tuple[float, ...]]:
    """At most ``limit`` points, evenly spaced, always keeping the first and the last."""
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def adjusted_rand_index(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Agreement of two partitions of the same items, corrected for chance: 1 identical,
    ~0 random, negative worse than random."""
    if len(truth) != len(predicted):
        raise ValueError("both labelings must cover the same items")
    n = len(truth)
    if n < 2:
        return 1.0
    joint = Counter(zip(truth, predicted, strict=True))
    index = sum(_pairs(c) for c in joint.values())
    rows = sum(_pairs(c) for c in Counter(truth).values())
    cols = sum(_pairs(c) for c in Counter(predicted).values())
    expected = rows * cols / _pairs(n)
    best = (rows + cols) / 2
    if best == expected:  # both all-in-one or both all-singletons: identical partitions
        return 1.0
    return (index - expected) / (best - expected)
