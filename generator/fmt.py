"""How a number reads in a report, a Markdown table or a summary line: one rule for every writer."""

from __future__ import annotations

import math
import numbers
from typing import Any

MISSING = "–"  # what a table shows for no value


def number(x: Any, digits: int = 3, style: str = "f") -> str:
    """``x`` with ``digits`` decimals (style ``"f"``) or significant digits (``"g"``); ``–`` for
    None, NaN, infinity, a bool or anything that is not a real number."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
        return MISSING
    return f"{float(x):.{digits}{style}}"
