"""json_safe: what galforge computes becomes plain JSON, the same way in every file it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from galforge.jsonsafe import json_safe


def test_numpy_values_nonfinite_floats_and_paths_become_plain_json():
    value = {
        1: np.float32(0.5),
        "flag": np.bool_(True),
        "n": np.int64(7),
        "arr": np.array([[1.0, np.nan], [np.inf, 2.0]]),
        "t": (np.uint8(3), -math.inf),
        "path": Path("a") / "b.fits",
        "none": None,
        "s": "x",
        "other": complex(1, 2),
    }
    out = json_safe(value)
    assert out == {
        "1": 0.5,
        "flag": True,
        "n": 7,
        "arr": [[1.0, None], [None, 2.0]],
        "t": [3, None],
        "path": str(Path("a") / "b.fits"),
        "none": None,
        "s": "x",
        "other": "(1+2j)",
    }
    assert type(out["flag"]) is bool and type(out["n"]) is int
    json.dumps(out, allow_nan=False)  # strict JSON: no NaN/Infinity tokens
