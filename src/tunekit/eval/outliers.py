"""Outlier clips: those whose distance to the reference is unusually large for their set.

Rule: a clip is an outlier when its distance lies more than `Z` sample standard deviations (ddof = 1) above the
set's mean distance. Only the far side counts: a clip unusually close to the reference is not a problem to
listen for. In a set of n values no value can lie more than (n − 1)/√n sample standard deviations from the mean
(Shiffler 1988; the bound is reached by n − 1 equal values and one other), so a set needs `MIN_CLIPS` = 11 clips
before any clip can pass z > 3: smaller sets get no outlier list at all, rather than their largest few.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

Z = 3.0  # standard deviations above the mean distance


def max_z(n: int) -> float:
    """The largest z-score (sample standard deviation) any value can have in a set of n values: (n − 1)/√n."""
    return (n - 1) / math.sqrt(n) if n >= 2 else 0.0


def min_clips(z: float = Z) -> int:
    """The smallest set in which a value can lie more than `z` sample standard deviations above the mean."""
    n = 2
    while max_z(n) <= z:
        n += 1
    return n


MIN_CLIPS = min_clips()  # 11 for z = 3: (11 − 1)/√11 ≈ 3.015, (10 − 1)/√10 ≈ 2.846


def find_outliers(distances: Mapping[str, float], limit: int, *, z: float = Z) -> dict[str, Any]:
    """The outlier check of one set's per-clip distances, for metrics.json.

    `outliers`: up to `limit` clips with a z-score above `z`, furthest first (ties by id), each with its
    distance and z; `check`: the rule, the number of clips `n`, the `min_n` it needs and whether it `ran`
    (n ≥ min_n; equal distances then give no outlier).
    """
    finite = {k: float(v) for k, v in distances.items() if math.isfinite(v)}
    need = min_clips(z)
    check = {"rule": f"distance more than {z:g} sample standard deviations above the set's mean",
             "z": z, "n": len(finite), "min_n": need, "ran": False, "limit": max(0, limit)}
    if len(finite) < need or limit <= 0:  # too few clips to have outliers, or listing them is off (outliers=0)
        return {"outliers": [], "check": check}
    values = np.array(list(finite.values()), dtype=np.float64)
    mean, std = float(values.mean()), float(values.std(ddof=1))
    check["ran"] = True
    if not std > 0:
        return {"outliers": [], "check": check}
    scored = [(cid, d, (d - mean) / std) for cid, d in finite.items()]
    far = sorted((s for s in scored if s[2] > z), key=lambda s: (-s[1], s[0]))[: max(0, limit)]
    return {"outliers": [{"id": cid, "distance": d, "z": zz} for cid, d, zz in far], "check": check}
