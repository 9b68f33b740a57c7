"""Plain JSON values from what galforge computes (bottom floor).

:func:`json_safe` is the one conversion used wherever galforge writes numbers it computed into a
JSON file (``metrics.json``, a prepared set's ``manifest.json`` and ``meta.jsonl``): numpy scalars
and arrays become Python numbers and lists, non-finite floats become ``null``, paths and any
other object become their string.
"""

from __future__ import annotations

import math
from pathlib import PurePath

import numpy as np

__all__ = ["json_safe"]


def json_safe(obj):
    """``obj`` with every value JSON can hold: dict keys as strings, tuples and arrays as lists,
    numpy booleans/integers/floats as Python ones, NaN and ±inf as ``None``, ``Path`` and any
    other object as ``str(obj)``."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, PurePath):
        return str(obj)
    return str(obj)
