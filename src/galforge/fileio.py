"""Atomic file writes: every file galforge writes appears whole or not at all.

A crash (or a kill) in the middle of a write leaves the previous file in place, never a
truncated one: the bytes go to a uniquely named temporary file in the same folder (safe
with several threads or processes writing beside each other), are flushed to disk, and the
temporary file is renamed over the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, **kw) -> Path:
    """Write UTF-8 ``text`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), **kw)


def atomic_write_json(path: str | Path, obj: Any, *, sort_keys: bool = False, **kw) -> Path:
    """Write ``obj`` as indented JSON atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n", **kw)
