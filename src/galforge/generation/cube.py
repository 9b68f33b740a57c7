"""``galforge generate --format fits-cube``: all the galaxies of a run in one FITS file.

The primary HDU is an ``N×C×H×W`` float32 cube (``NAXIS4`` = galaxies, ``NAXIS3`` = bands)
with the cards of one stamp (:func:`galforge.generation.writers.fits_header`: units, bands,
the WCS of one stamp, provenance); a binary table ``GALAXIES`` follows with one row per
galaxy: ``INDEX``, ``SEED`` and, for conditional generators, one column per condition.
``galforge.data.load_images`` reads the cube back as ``N`` images.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from galforge import fitsheader
from galforge.errors import ConfigError, DiskFullError
from galforge.fileio import is_disk_full, make_temp_file, publish, remove_temp, reserve_space

__all__ = ["CUBE_NAME", "FitsCubeWriter", "read_cube_table"]

#: File name of the stamp cube in the output folder.
CUBE_NAME = "galaxies.fits"
_BLOCK = 2880


class FitsCubeWriter:
    """Stream samples into one stamp-cube FITS file (module docstring).

    Pixels go to a temporary file in the same folder chunk by chunk, so ``N`` can exceed
    memory; the file appears under its final name only when :meth:`close` is called. Same
    interface as :class:`galforge.generation.writers.NpyWriter`.
    """

    def __init__(
        self,
        path,
        n: int,
        image_shape: Sequence[int],
        header,
        *,
        seed: int,
        condition_names: Sequence[str] = (),
        conditions: np.ndarray | None = None,
    ):
        from astropy.io import fits

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.n = int(n)
        c, h, w = (int(s) for s in image_shape)
        self.shape = (c, h, w)
        self.seed = int(seed)
        self.condition_names = tuple(str(s) for s in condition_names)
        self.conditions = conditions
        cube = fits.Header()
        cube["SIMPLE"] = (True, "conforms to FITS standard")
        cube["BITPIX"] = (-32, "array data type")
        cube["NAXIS"] = (4, "number of array dimensions")
        cube["NAXIS1"] = (w, "stamp width (pixels)")
        cube["NAXIS2"] = (h, "stamp height (pixels)")
        cube["NAXIS3"] = (c, "bands, in the order of BANDS")
        cube["NAXIS4"] = (self.n, "galaxies (rows of the GALAXIES table)")
        cube["EXTEND"] = (True, "the GALAXIES table follows")
        for card in header.cards:
            if card.keyword not in ("INDEX", "OBJECT", "COMMENT"):
                cube.append(card)
        cube["OBJECT"] = ("synthetic galaxies", "not real objects")
        for comment in header.get("COMMENT", []):
            if not str(comment).startswith("The third axis"):
                cube.add_comment(str(comment))
        cube.add_comment(
            "Axes: NAXIS1 x NAXIS2 pixels of one stamp, NAXIS3 bands (BANDS), "
            "NAXIS4 galaxies (one row each in the GALAXIES table)."
        )
        self._indices: list[int] = []
        head = cube.tostring().encode("ascii")
        self._end = len(head) + -(-self.n * int(np.prod(self.shape)) * 4 // _BLOCK) * _BLOCK
        fd, tmp = make_temp_file(self.path)
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        with self._disk_full():
            self._fh.write(head)
            self._fh.truncate(self._end)  # the padded cube, zeros until written
            self._fh.flush()
            reserve_space(self._tmp)  # a full disk now, not half-way through the galaxies
            self._fh.seek(len(head))

    @contextlib.contextmanager
    def _disk_full(self):
        """A full disk becomes :class:`DiskFullError` (one line), the partial file removed."""
        try:
            yield
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.abort()
            raise DiskFullError(self.path) from None

    def write(self, first_index: int, images: np.ndarray) -> None:
        images = np.asarray(images, dtype=np.float32)
        if len(self._indices) + len(images) > self.n:
            raise ConfigError(f"{self.path}: more than the {self.n} samples announced")
        if tuple(images.shape[1:]) != self.shape:
            raise ConfigError(
                f"{self.path}: images of shape {tuple(images.shape[1:])}, expected {self.shape}"
            )
        with self._disk_full():
            self._fh.write(np.ascontiguousarray(images, dtype=">f4").tobytes())
        self._indices.extend(range(int(first_index), int(first_index) + len(images)))

    def _table(self):
        from astropy.io import fits

        index = np.asarray(self._indices, dtype=np.int64)
        cols = [
            fits.Column(name="INDEX", format="K", array=index),
            fits.Column(
                name="SEED", format="K", array=np.full(len(index), self.seed, dtype=np.int64)
            ),
        ]
        if self.conditions is not None:
            values = np.asarray(self.conditions, dtype=np.float32)
            for k, name in enumerate(self.condition_names):
                cols.append(fits.Column(name=name, format="E", array=values[:, k]))
        table = fits.BinTableHDU.from_columns(cols, name="GALAXIES")
        table.header["TTYPE1"] = ("INDEX", "sample index for the seed")
        table.header["TTYPE2"] = ("SEED", "galforge generate seed")
        for k in range(3, len(cols) + 1):
            table.header[f"TTYPE{k}"] = (cols[k - 1].name, "condition given to the generator")
        fitsheader.date_cards(table.header)
        return table

    def close(self) -> tuple[Path, None]:
        """Finish the file (pad the cube, append the table): ``(path, None)``."""
        if len(self._indices) != self.n:
            raise ConfigError(f"{self.path}: {len(self._indices)} of {self.n} samples written")
        buffer = io.BytesIO()
        self._table().writeto(buffer)  # astropy puts an empty primary HDU (one block) first
        with self._disk_full():
            self._fh.seek(self._end)
            self._fh.write(buffer.getvalue()[_BLOCK:])
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        publish(self._tmp, self.path)
        return self.path, None

    def abort(self) -> None:
        """Drop the partial file."""
        if not self._fh.closed:
            try:
                self._fh.close()
            except OSError:  # the buffered bytes could not be written (a full disk): dropped
                pass
        remove_temp(self._tmp)


def read_cube_table(path) -> dict[str, np.ndarray]:
    """The ``GALAXIES`` table of a stamp cube, column by column."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        data = hdul["GALAXIES"].data
        return {name: np.asarray(data[name]) for name in data.columns.names}
