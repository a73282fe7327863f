"""Numbers for the dashboard's JSON: rounded, NaN and missing as null (JSON has no NaN)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def num(value: Any, digits: int = 4) -> float | None:
    """A float rounded to ``digits`` decimals; None for None, NaN, pandas NA or infinities."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return round(number, digits)


def nums(values: Iterable[Any] | np.ndarray, digits: int = 4) -> list[float | None]:
    """``num`` over an array: one rounding pass in numpy, then NaN -> None."""
    array = np.round(np.asarray(values, dtype=np.float64), digits)
    return [None if not math.isfinite(x) else x for x in array.tolist()]
