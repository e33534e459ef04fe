"""Values over seeds: their mean and range, and paired differences' mean and t-interval.

``mean ± t((1 + level) / 2, n − 1) · s / sqrt(n)`` (``s``: the differences' sample
standard deviation), which assumes the differences are independent draws of one
normal distribution. One difference gives no interval.
"""

import math
import statistics
from typing import Optional, Sequence

LEVEL = 0.95  # the intervals' coverage


def mean_and_range(values: Sequence[float], fmt: str = ".3f", sep: str = "-") -> str:
    """``mean (min-max)`` of ``values``, each written with ``fmt``; one value alone."""
    mean = format(statistics.fmean(values), fmt)
    if len(values) == 1:
        return mean
    return f"{mean} ({min(values):{fmt}}{sep}{max(values):{fmt}})"


def t_quantile(probability: float, dof: int) -> float:
    """Student's t quantile (scipy's)."""
    from scipy.stats import t

    return float(t.ppf(probability, dof))


def t_interval(differences: Sequence[float], level: float = LEVEL) -> Optional[dict]:
    """``{"n", "mean", "low", "high"}`` of paired differences: the mean and its t-interval
    ``mean ± t((1 + level) / 2, n − 1) · s / sqrt(n)``; ``low``/``high`` None for one
    difference; None for none. Non-finite values are left out."""
    values = [float(v) for v in differences if v is not None and math.isfinite(v)]
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"n": 1, "mean": mean, "low": None, "high": None}
    half = t_quantile((1 + level) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"n": len(values), "mean": mean, "low": mean - half, "high": mean + half}
