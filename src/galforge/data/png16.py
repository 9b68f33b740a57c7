"""16-bit PNG files, decoded with every bit (Pillow reduces 16-bit colour PNGs to 8 bits).

The decoding is pypng's (a maintained, pure-Python PNG codec: every row filter, interlacing,
every 16-bit colour type); this module adds galforge's errors.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from galforge.errors import DataError

__all__ = ["decode_png16", "png_header"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_header(path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG IHDR chunk, or None when not a PNG."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != _SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def decode_png16(path) -> np.ndarray:
    """Decode a 16-bit-per-sample PNG (grey, grey+alpha, RGB, RGBA) to uint16 ``H×W×S``.

    Raises :class:`DataError` naming the file for anything that is not a readable 16-bit PNG.
    """
    import png

    path = Path(path)
    try:
        width, height, rows, info = png.Reader(filename=str(path)).read()
        if info["bitdepth"] != 16:
            raise DataError(
                f"{path}: decode_png16 needs a 16-bit PNG, this one has {info['bitdepth']} bits"
            )
        samples = int(info["planes"])
        out = np.empty((height, width * samples), dtype=np.uint16)
        for y, row in enumerate(rows):
            out[y] = row
    except png.FormatError as exc:
        raise DataError(f"{path}: not a readable PNG ({exc}); re-export the file") from exc
    except (png.ChunkError, png.ProtocolError, zlib.error, EOFError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or truncated PNG ({exc}); re-export the file") from exc
    return out.reshape(height, width, samples)
